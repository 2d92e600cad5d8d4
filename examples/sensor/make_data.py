"""Write the sensor example's data: a cheap temperature/humidity sensor against a reference.

Each row is what the firmware reads (the sensor's raw temperature and humidity, and the
microcontroller's own die temperature, which heats the sensor when the board is busy) and,
last, the true air temperature a reference thermometer measured beside it. The sensor has a
gain and offset error, a curvature, a humidity cross-sensitivity and self-heating; the network
learns to undo them. Deterministic (fixed seed): running it again writes the same files.

    python3 make_data.py      # sensor_train.csv, sensor_test.csv, rows.csv
"""
from pathlib import Path

import numpy as np

HEADER = "t_raw,rh_raw,t_board"


def simulate(n: int, rng) -> np.ndarray:
    t_true = rng.uniform(-10.0, 50.0, n)                   # air temperature, degrees C
    rh_true = rng.uniform(10.0, 90.0, n)                   # relative humidity, %
    heat = rng.uniform(0.0, 15.0, n)                       # how much warmer the busy board runs
    t_board = t_true + heat + rng.normal(0.0, 0.3, n)      # the MCU's die temperature sensor
    t_raw = (0.8 + 1.03 * t_true + 0.004 * (t_true - 25.0) ** 2   # offset, gain, curvature
             + 0.015 * (rh_true - 50.0)                            # humidity cross-sensitivity
             + 0.3 * heat                                          # self-heating from the board
             + rng.normal(0.0, 0.1, n))
    rh_raw = rh_true * (1.0 - 0.005 * (t_raw - 25.0)) + 2.0 + rng.normal(0.0, 1.0, n)
    return np.column_stack([t_raw, rh_raw, t_board, t_true])


def write(path: Path, table: np.ndarray, header: str) -> None:
    lines = [header] + [",".join(f"{v:.2f}" for v in row) for row in table]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    here = Path(__file__).resolve().parent
    rng = np.random.default_rng(2024)
    train, test = simulate(2000, rng), simulate(500, rng)
    write(here / "sensor_train.csv", train, HEADER + ",t_true")
    write(here / "sensor_test.csv", test, HEADER + ",t_true")
    write(here / "rows.csv", test[:4, :3], HEADER)         # a few readings to predict (and main.c's)
    print("wrote sensor_train.csv (2000 rows), sensor_test.csv (500 rows), rows.csv (4 rows)")


if __name__ == "__main__":
    main()
