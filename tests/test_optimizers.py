"""Optimizers step by step against the textbook formulas written out in Python floats, weight
decay on weights only, state round trips, and the learning-rate schedule."""

import math

import numpy as np
import pytest

import qmtik
from qmtik.optimizers import OPTIMIZERS, learning_rate, make_optimizer

G1 = [0.5, -2.0, 0.0]  # gradients of a 3-element parameter at step 1
G2 = [-1.0, 4.0, 0.25]  # and at step 2
P0 = [1.0, -3.0, 2.0]


def config(**kw):
    return qmtik.TrainingConfig(**kw)


def run(cfg, grads, p0=P0, lr=None, decay=(True,)):
    p = np.array(p0, dtype=np.float64)
    opt = make_optimizer(cfg, [p], list(decay))
    for g in grads:
        opt.step([np.array(g, dtype=np.float64)], cfg.learning_rate if lr is None else lr)
    return p, opt


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=1e-15)


# --- one optimizer at a time ----------------------------------------------------------------------


def test_sgd_plain():
    p, _ = run(config(optimizer="sgd", momentum=0.0, learning_rate=0.1), [G1])
    # p - lr g: 1 - 0.05, -3 + 0.2, 2 - 0
    close(p, [0.95, -2.8, 2.0])


def test_sgd_momentum_two_steps():
    lr, mu = 0.1, 0.9
    p, _ = run(config(optimizer="sgd", momentum=mu, learning_rate=lr), [G1, G2])
    expected = []
    for p0, g1, g2 in zip(P0, G1, G2):
        v = g1  # v1 = mu * 0 + g1
        x = p0 - lr * v
        v = mu * v + g2  # v2 = mu v1 + g2
        expected.append(x - lr * v)
    close(p, expected)
    # element 0 by hand: v1 = 0.5, x = 0.95; v2 = 0.45 - 1 = -0.55, x = 0.95 + 0.055 = 1.005
    assert abs(p[0] - 1.005) < 1e-15


def test_sgd_nesterov_two_steps():
    lr, mu = 0.1, 0.9
    p, _ = run(config(optimizer="sgd", momentum=mu, nesterov=True, learning_rate=lr), [G1, G2])
    expected = []
    for p0, g1, g2 in zip(P0, G1, G2):
        v = g1
        x = p0 - lr * (g1 + mu * v)  # step with g + mu v
        v = mu * v + g2
        expected.append(x - lr * (g2 + mu * v))
    close(p, expected)
    # element 0: v1 = 0.5, x = 1 - 0.1 * 0.95 = 0.905; v2 = -0.55, x = 0.905 - 0.1 * (-1 - 0.495) = 1.0545
    assert abs(p[0] - 1.0545) < 1e-15
    plain, _ = run(config(optimizer="sgd", momentum=mu, learning_rate=lr), [G1, G2])
    assert not np.allclose(plain, p)


def test_adam_two_steps_with_bias_correction():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, opt = run(config(optimizer="adam", learning_rate=lr, beta1=b1, beta2=b2, eps=eps), [G1, G2])
    assert opt.steps == 2
    expected = []
    for p0, g1, g2 in zip(P0, G1, G2):
        x, m, v = p0, 0.0, 0.0
        for t, g in ((1, g1), (2, g2)):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            # the corrections folded into the step size, eps added to sqrt(v) (not sqrt(v_hat))
            step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            x = x - step * m / (math.sqrt(v) + eps)
        expected.append(x)
    close(p, expected)


def test_adam_first_step_is_about_lr_sign():
    # m1 = 0.1 g, v1 = 0.001 g^2, step = lr sqrt(0.001) / 0.1: update = lr g / (|g| + eps / sqrt(0.001))
    lr = 0.01
    p, _ = run(config(optimizer="adam", learning_rate=lr), [G1])
    eps = 1e-8 / math.sqrt(0.001)
    close(p, [1.0 - lr * 0.5 / (0.5 + eps), -3.0 + lr * 2.0 / (2.0 + eps), 2.0])


def test_adamw_decoupled_decay():
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    p, _ = run(config(optimizer="adamw", learning_rate=lr, weight_decay=wd), [G1, G2])
    expected = []
    for p0, g1, g2 in zip(P0, G1, G2):
        x, m, v = p0, 0.0, 0.0
        for t, g in ((1, g1), (2, g2)):
            x = x - lr * wd * x  # decay the weight, not the gradient
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            x = x - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + eps)
        expected.append(x)
    close(p, expected)
    # element 2 has a zero gradient at step 1: only the decay moves it, 2 * (1 - 0.001)
    p1, _ = run(config(optimizer="adamw", learning_rate=lr, weight_decay=wd), [G1])
    assert abs(p1[2] - 2.0 * (1 - lr * wd)) < 1e-15


def test_adam_l2_decay_enters_the_gradient():
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    p, _ = run(config(optimizer="adam", learning_rate=lr, weight_decay=wd), [G1, G2])
    expected = []
    for p0, g1, g2 in zip(P0, G1, G2):
        x, m, v = p0, 0.0, 0.0
        for t, g in ((1, g1), (2, g2)):
            g = g + wd * x
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            x = x - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + eps)
        expected.append(x)
    close(p, expected)
    adamw, _ = run(config(optimizer="adamw", learning_rate=lr, weight_decay=wd), [G1, G2])
    assert not np.allclose(adamw, p)


def test_rmsprop_two_steps():
    lr, rho, eps = 0.01, 0.99, 1e-8
    p, _ = run(config(optimizer="rmsprop", learning_rate=lr, rho=rho, eps=eps), [G1, G2])
    expected = []
    for p0, g1, g2 in zip(P0, G1, G2):
        x, s = p0, 0.0
        for g in (g1, g2):
            s = rho * s + (1 - rho) * g * g
            x = x - lr * g / (math.sqrt(s) + eps)
        expected.append(x)
    close(p, expected)
    # element 0 after one step: s = 0.0025, sqrt = 0.05, x = 1 - 0.01 * 0.5 / 0.05 = 0.9 (to eps)
    p1, _ = run(config(optimizer="rmsprop", learning_rate=lr), [G1])
    assert abs(p1[0] - (1 - 0.01 * 0.5 / (0.05 + 1e-8))) < 1e-15


def test_sgd_weight_decay_is_l2():
    lr, wd = 0.1, 0.5
    p, _ = run(config(optimizer="sgd", momentum=0.0, learning_rate=lr, weight_decay=wd), [G1])
    close(p, [p0 - lr * (g + wd * p0) for p0, g in zip(P0, G1)])  # 1 - 0.1 (0.5 + 0.5) = 0.9
    assert abs(p[0] - 0.9) < 1e-15


def test_float32_parameters_stay_float32():
    for name in OPTIMIZERS:
        p = np.array(P0, dtype=np.float32)
        opt = make_optimizer(config(optimizer=name), [p], [True])
        opt.step([np.array(G1, dtype=np.float32)], 0.01)
        assert p.dtype == np.float32
        assert not np.array_equal(p, np.array(P0, dtype=np.float32))


# --- weight decay: weights only ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_weight_decay_applies_to_weights_not_biases(name):
    cfg = config(optimizer=name, learning_rate=0.01, weight_decay=0.1, **({"momentum": 0.0} if name == "sgd" else {}))
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    b = np.array([1.0, -2.0])
    opt = make_optimizer(cfg, [w, b], [True, False])
    zero = [np.zeros_like(w), np.zeros_like(b)]
    opt.step(zero, 0.01)
    np.testing.assert_array_equal(b, [1.0, -2.0])  # no gradient, no decay: unchanged
    assert np.all(np.abs(w) < np.abs(np.array([[1.0, -2.0], [0.5, 3.0]])))  # shrunk toward 0
    if name in ("sgd", "adamw"):
        # sgd: w - lr wd w; adamw: the same decoupled factor, and a zero Adam step
        close(w, np.array([[1.0, -2.0], [0.5, 3.0]]) * (1 - 0.01 * 0.1))
    # without decay flags nothing moves
    w2 = np.array([[1.0, -2.0], [0.5, 3.0]])
    make_optimizer(cfg, [w2], [False]).step([np.zeros_like(w2)], 0.01)
    np.testing.assert_array_equal(w2, [[1.0, -2.0], [0.5, 3.0]])


# --- state round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,extra",
    [
        ("sgd", {"momentum": 0.9}),
        ("sgd", {"momentum": 0.9, "nesterov": True}),
        ("rmsprop", {}),
        ("adam", {}),
        ("adamw", {"weight_decay": 0.01}),
    ],
)
def test_state_round_trip_continues_identically(name, extra):
    cfg = config(optimizer=name, learning_rate=0.05, **extra)
    rng = np.random.default_rng(4)
    grads = [[rng.normal(size=(3, 2)), rng.normal(size=2)] for _ in range(6)]
    a = [rng.normal(size=(3, 2)), rng.normal(size=2)]
    opt_a = make_optimizer(cfg, a, [True, False])
    for g in grads[:3]:
        opt_a.step(g, 0.05)
    saved = {k: np.array(v, copy=True) for k, v in opt_a.state_arrays().items()}
    assert int(saved["steps"]) == 3
    assert set(saved) == {"steps"} | {f"{s}.{i}" for s in type(opt_a).slots for i in range(2)}
    b = [x.copy() for x in a]
    fresh = [x.copy() for x in a]
    opt_b = make_optimizer(cfg, b, [True, False])
    opt_b.load_state_arrays(saved)
    opt_fresh = make_optimizer(cfg, fresh, [True, False])
    for g in grads[3:]:
        opt_a.step(g, 0.05)
        opt_b.step(g, 0.05)
        opt_fresh.step(g, 0.05)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, z) for x, z in zip(a, fresh))  # the state mattered
    assert opt_b.steps == 6


# --- each optimizer minimises a quadratic --------------------------------------------------------------


@pytest.mark.parametrize(
    "name,extra,lr",
    [
        ("sgd", {"momentum": 0.0}, 0.1),
        ("sgd", {"momentum": 0.9}, 0.05),
        ("sgd", {"momentum": 0.9, "nesterov": True}, 0.05),
        ("rmsprop", {}, 0.05),
        ("adam", {}, 0.1),
        ("adamw", {}, 0.1),
    ],
)
def test_minimises_a_quadratic(name, extra, lr):
    # f(p) = 1/2 sum a (p - c)^2, minimum at c
    a = np.array([1.0, 4.0, 0.5])
    c = np.array([2.0, -1.0, 0.5])
    p = np.array([-3.0, 3.0, 4.0])
    cfg = config(optimizer=name, learning_rate=lr, **extra)
    opt = make_optimizer(cfg, [p], [True])
    start = 0.5 * np.sum(a * (p - c) ** 2)
    steps = 500
    for step in range(steps):
        opt.step([a * (p - c)], lr * (1 - step / steps))  # decaying lr lets adam settle
    assert 0.5 * np.sum(a * (p - c) ** 2) < 1e-8 * start
    assert np.abs(p - c).max() < 1e-3


# --- learning-rate schedule ---------------------------------------------------------------------------


def test_warmup_is_linear_and_reaches_the_peak():
    cfg = config(learning_rate=0.4, warmup_epochs=2, epochs=10, schedule="constant")
    rates = [learning_rate(cfg, s, 5) for s in range(12)]
    # 10 warm-up steps: 0.04, 0.08, ..., 0.4, then constant
    close(rates, [0.04 * (k + 1) for k in range(10)] + [0.4, 0.4])
    assert rates[9] == 0.4
    assert np.allclose(np.diff(rates[:10]), 0.04, rtol=1e-12)


def test_fractional_warmup_rounds_to_steps():
    cfg = config(learning_rate=0.3, warmup_epochs=0.5, epochs=3, schedule="constant")
    # round(0.5 * 6) = 3 warm-up steps
    close([learning_rate(cfg, s, 6) for s in range(5)], [0.1, 0.2, 0.3, 0.3, 0.3])


def test_constant_schedule():
    cfg = config(learning_rate=0.02, schedule="constant", epochs=4)
    assert {learning_rate(cfg, s, 7) for s in range(28)} == {0.02}


def test_step_schedule_drops_by_gamma_every_step_size_epochs():
    cfg = config(learning_rate=1.0, schedule="step", step_size=2, gamma=0.5, epochs=7)
    spe = 3
    rates = [learning_rate(cfg, s, spe) for s in range(7 * spe)]
    # epochs 0-1: 1, epochs 2-3: 0.5, epochs 4-5: 0.25, epoch 6: 0.125
    assert rates == [1.0] * 6 + [0.5] * 6 + [0.25] * 6 + [0.125] * 3


def test_cosine_starts_at_peak_and_ends_at_min():
    cfg = config(learning_rate=0.1, min_learning_rate=0.001, schedule="cosine", epochs=5)
    spe = 4
    total = 5 * spe
    rates = [learning_rate(cfg, s, spe) for s in range(total + 1)]
    assert rates[0] == 0.1
    assert abs(rates[total] - 0.001) < 1e-17  # t = 1: cos(pi) = -1
    assert abs(rates[total // 2] - (0.001 + 0.099 * 0.5)) < 1e-15  # halfway: the mean
    assert all(x > y for x, y in zip(rates, rates[1:]))  # strictly decreasing
    assert rates[total - 1] - 0.001 < 0.099 * 0.01  # the last step is near the end value
    close(rates, [0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total + 1)])


def test_cosine_after_warmup():
    cfg = config(learning_rate=0.1, min_learning_rate=0.0, schedule="cosine", epochs=5, warmup_epochs=1)
    spe = 4
    rates = [learning_rate(cfg, s, spe) for s in range(21)]
    close(rates[:4], [0.025, 0.05, 0.075, 0.1])
    assert rates[4] == 0.1  # cosine starts at the peak after warm-up
    close(rates[4:], [0.05 * (1 + math.cos(math.pi * k / 16)) for k in range(17)])
    assert abs(rates[20]) < 1e-17


# --- issue 10: what checkpoint.load may assume of the state ------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_second_moments_a_checkpoint_checks_are_the_ones_that_stay_non_negative(name):
    """checkpoint.load refuses a negative value in the slots an optimizer lists as nonnegative
    (a hostile 'square' made sqrt NaN); those slots are its squared-gradient averages, and
    no update ever makes them negative."""
    cls = OPTIMIZERS[name]
    assert set(cls.nonnegative) == {s for s in cls.slots if s == "square"}
    rng = np.random.default_rng(9)
    p = rng.normal(size=(4, 3)).astype(np.float32)
    opt = make_optimizer(config(optimizer=name, weight_decay=0.1), [p], [True])
    for _ in range(20):
        opt.step([rng.normal(scale=100.0, size=p.shape).astype(np.float32)], 0.01)
    for slot in cls.nonnegative:
        assert (opt.state[slot][0] >= 0).all()
    assert opt.steps == int(opt.state_arrays()["steps"]) == 20
