"""Write the gestures example's data: windows of a wrist-worn 3-axis accelerometer, six gestures.

The accelerometer reads 25 samples a second on three axes, in its 8-bit mode at +-2 g: one
count is 1/64 g and a reading saturates at -128 or 127, as a cheap MEMS part does (the high
byte of its output registers). A window is 48 samples (1.92 s); a CSV row is that window in
row-major order, x0,y0,z0,x1,y1,z1,...,x47,y47,z47 (144 counts), then the class, 0 to 5:

    0 idle    the hand at rest: gravity, a faint tremor, noise
    1 shake   a vigorous shake along one direction, 3 to 6 Hz, often saturating
    2 circle  the hand draws circles: a centripetal pull turning at 0.7 to 1.6 Hz
    3 tap     one or two finger taps on the device: short spikes, mostly on the z axis
    4 wave    a wave goodbye: the wrist rocks 25 to 50 degrees at 1.2 to 2.5 Hz
    5 flip    the wrist turns over once: gravity moves to the opposite side, at any moment

Every window also gets what a real recording has: its own resting pose (tilted up to 35
degrees), the sensor's zero-g offset (up to 0.06 g per axis) and gain error (3%), a slow
drift (up to 0.04 g over the window), a slow sway of the arm, white noise (0.01 to 0.025 g)
and a random speed, amplitude and phase for the gesture itself. Deterministic (fixed seed):
running it again writes the same files.

    python3 make_data.py      # gestures_train.csv, gestures_test.csv, windows.csv
"""

from pathlib import Path

import numpy as np

RATE = 25.0  # samples a second
LENGTH = 48  # samples a window: 1.92 s
COUNTS_PER_G = 64.0  # 8-bit output at +-2 g
CLASSES = ("idle", "shake", "circle", "tap", "wave", "flip")
T = np.arange(LENGTH) / RATE  # each sample's time in the window, s


def rotation(axis, angle) -> np.ndarray:
    """The 3x3 rotation by angle (radians) about a unit axis (Rodrigues' formula)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def resting_pose(rng) -> np.ndarray:
    """A random orientation within 35 degrees of flat (screen up), turned any way about z."""
    tilt = rotation(np.array([*rng.normal(size=2), 0.0]), np.radians(rng.uniform(0, 35)))
    return tilt @ rotation(np.array([0.0, 0.0, 1.0]), rng.uniform(0, 2 * np.pi))


def horizontal(rng) -> np.ndarray:
    """A random unit direction in the device's x-y plane, a little out of it."""
    v = np.array([*rng.normal(size=2), rng.normal(0, 0.3)])
    return v / np.linalg.norm(v)


def level(rng, pose) -> np.ndarray:
    """A random level direction (perpendicular to gravity), in the device's frame."""
    a = rng.uniform(0, 2 * np.pi)
    return pose.T @ np.array([np.cos(a), np.sin(a), 0.0])


def gravity(poses) -> np.ndarray:
    """Gravity as the device reads it (in g) under one pose per sample, (LENGTH, 3)."""
    return np.einsum("tij,j->ti", np.transpose(poses, (0, 2, 1)), np.array([0.0, 0.0, 1.0]))


def idle(rng, pose):
    """Gravity only; the tremor and the arm's sway come with every window (recorded)."""
    return gravity(np.repeat(pose[None], LENGTH, axis=0))


def shake(rng, pose):
    """Back and forth along one direction: a sine with a harmonic, amplitude 0.8 to 2.2 g."""
    f, a = rng.uniform(3.0, 6.0), rng.uniform(0.8, 2.2)
    phase = 2 * np.pi * f * T + rng.uniform(0, 2 * np.pi)
    motion = a * (np.sin(phase) + rng.uniform(0, 0.35) * np.sin(2 * phase + rng.uniform(0, 6.3)))
    return idle(rng, pose) + motion[:, None] * horizontal(rng)[None]


def circle(rng, pose):
    """Circles in a plane: two sines a quarter turn apart, either way round, 0.3 to 0.9 g."""
    f, a = rng.uniform(0.7, 1.6), rng.uniform(0.3, 0.9)
    phase = 2 * np.pi * f * T + rng.uniform(0, 2 * np.pi)
    u = horizontal(rng)
    v = np.cross(np.array([0.0, 0.0, 1.0]), u) * rng.choice([-1, 1])
    v = rotation(u, rng.uniform(-0.5, 0.5)) @ v  # the plane is not quite level
    return idle(rng, pose) + a * (np.cos(phase)[:, None] * u + np.sin(phase)[:, None] * v)


def tap(rng, pose):
    """One or two taps: a spike of 0.7 to 1.8 g that rings down within a few samples."""
    signal = idle(rng, pose)
    for start in rng.choice(np.arange(2, LENGTH - 6), size=rng.integers(1, 3), replace=False):
        a, lag = rng.uniform(0.7, 1.8), np.arange(LENGTH - start)
        ring = a * np.exp(-lag / rng.uniform(0.6, 1.4)) * np.cos(np.pi * lag)  # rings: +,-,+,...
        direction = np.array([rng.normal(0, 0.25), rng.normal(0, 0.25), -1.0])  # into the screen
        signal[start:] += ring[:, None] * direction[None]
    return signal


def wave(rng, pose):
    """The wrist rocks about the forearm: gravity swings, plus the hand's own sideways pull."""
    f, angle = rng.uniform(1.2, 2.5), np.radians(rng.uniform(25, 50))
    phase = 2 * np.pi * f * T + rng.uniform(0, 2 * np.pi)
    axis = level(rng, pose)  # the forearm
    poses = np.stack([pose @ rotation(axis, angle * np.sin(p)) for p in phase])
    sideways = np.cross(axis, pose.T @ np.array([0.0, 0.0, 1.0]))
    pull = rng.uniform(0.1, 0.4) * np.sin(phase)[:, None] * sideways[None]
    return gravity(poses) + pull


def flip(rng, pose):
    """A turn of 150 to 190 degrees about a level axis, over 0.3 to 0.8 s, at any moment."""
    middle, duration = rng.uniform(0.25, 1.67), rng.uniform(0.3, 0.8)
    turned = np.clip((T - middle) / duration + 0.5, 0, 1)
    turned = turned * turned * (3 - 2 * turned)  # smooth start and stop
    axis, angle = level(rng, pose), np.radians(rng.uniform(150, 190))
    poses = np.stack([pose @ rotation(axis, angle * s) for s in turned])
    jolt = rng.uniform(0.1, 0.4) * np.sin(np.pi * turned)[:, None] * horizontal(rng)[None]
    return gravity(poses) + jolt


GESTURES = (idle, shake, circle, tap, wave, flip)


def recording(signal, rng) -> np.ndarray:
    """What the sensor makes of the true acceleration (g): sway, tremor, drift, offset, gain,
    noise, then 8-bit counts, saturating."""
    sway = rng.uniform(0, 0.05) * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * T[:, None] + rng.uniform(0, 6.3, 3))
    tremor = rng.uniform(0, 0.02) * np.sin(2 * np.pi * rng.uniform(8, 12) * T[:, None] + rng.uniform(0, 6.3, 3))
    drift = rng.uniform(-0.04, 0.04, 3) * T[:, None] / T[-1]
    offset, gain = rng.uniform(-0.06, 0.06, 3), rng.normal(1.0, 0.03, 3)
    noise = rng.normal(0, rng.uniform(0.01, 0.025), (LENGTH, 3))
    g = (signal + sway + tremor + drift) * gain + offset + noise
    return np.clip(np.round(g * COUNTS_PER_G), -128, 127).astype(np.int64)


def windows(per_class: int, rng) -> np.ndarray:
    """per_class windows of each gesture, shuffled: rows of 144 counts and the class."""
    rows = [
        np.append(recording(gesture(rng, resting_pose(rng)), rng).reshape(-1), label)
        for label, gesture in enumerate(GESTURES)
        for _ in range(per_class)
    ]
    return np.array(rows)[rng.permutation(len(rows))]


def write(path: Path, table: np.ndarray, with_class: bool = True) -> None:
    """A CSV with a header row (x0,y0,z0,...,class) and one window a row."""
    header = [f"{axis}{i}" for i in range(LENGTH) for axis in "xyz"] + ["class"] * with_class
    lines = [",".join(header)] + [",".join(map(str, row)) for row in table]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    here = Path(__file__).resolve().parent
    rng = np.random.default_rng(2026)
    train, test = windows(100, rng), windows(50, rng)
    write(here / "gestures_train.csv", train)
    write(here / "gestures_test.csv", test)
    firsts = [np.flatnonzero(test[:, -1] == label)[0] for label in range(len(CLASSES))]
    write(here / "windows.csv", test[firsts, :-1], with_class=False)  # a test window of each class: main.c's
    print(f"wrote gestures_train.csv ({len(train)} windows), gestures_test.csv ({len(test)}), windows.csv (6)")


if __name__ == "__main__":
    main()
