"""Activations, output processing and costs: stability at extreme scores, hand goldens, and every
gradient against central finite differences in float64, with a checker that is shown to fail."""

import itertools
import math

import numpy as np
import pytest

from qmtik.functions import (
    COSTS,
    OUTPUTS,
    TASKS,
    activation,
    activation_derivative,
    combination_problem,
    cost,
    log_softmax,
    process_output,
    sigmoid,
    softmax,
)

VALID_PAIRS = [
    ("linear", "mse"),
    ("softmax", "cross_entropy"),
    ("softmax", "mse"),
    ("sigmoid", "binary_cross_entropy"),
    ("sigmoid", "mse"),
]
TOLERANCE = 1e-6


def finite_difference_error(f, x, grad, h=1e-6):
    """Largest difference between grad and central differences of the scalar f at x, relative to
    the larger of the two gradients."""
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        keep = x[idx]
        x[idx] = keep + h
        up = f(x)
        x[idx] = keep - h
        down = f(x)
        x[idx] = keep
        numeric[idx] = (up - down) / (2 * h)
    scale = max(np.abs(numeric).max(), np.abs(grad).max(), 1e-12)
    return np.abs(numeric - grad).max() / scale


def gradient_ok(f, x, grad, h=1e-6):
    return finite_difference_error(f, x, grad, h) < TOLERANCE


def problem(output, cost_kind, rng, n=5, k=4):
    scores = rng.normal(0, 2, (n, k))
    if cost_kind == "cross_entropy":
        targets = np.eye(k)[rng.integers(0, k, n)]
    elif output in ("sigmoid", "softmax"):
        targets = rng.uniform(0, 1, (n, k))
    else:
        targets = rng.normal(0, 1, (n, k))
    return scores, targets


# --- stability and goldens --------------------------------------------------------------------------


def test_softmax_rows_sum_to_one_without_overflow():
    scores = np.array([[1000.0, 1000.0, 999.0], [-1000.0, 0.0, 1000.0], [1.0, 2.0, 3.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = softmax(scores)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    e = math.exp(-1)
    np.testing.assert_allclose(p[0], [1 / (2 + e), 1 / (2 + e), e / (2 + e)], rtol=1e-15)
    np.testing.assert_array_equal(p[1], [0.0, math.exp(-1000), 1.0])
    total = 1 + math.exp(1) + math.exp(2)
    np.testing.assert_allclose(p[2], [1 / total, math.exp(1) / total, math.exp(2) / total], rtol=1e-15)


def test_log_softmax_equals_log_of_softmax_where_finite():
    rng = np.random.default_rng(0)
    scores = np.vstack([rng.normal(0, 3, (6, 5)), [[0.0, -800.0, 5.0, 1000.0, 999.0]]])
    ls = log_softmax(scores)
    with np.errstate(divide="ignore"):
        logs = np.log(softmax(scores))
    finite = np.isfinite(logs)
    assert not finite.all()  # exp(-1800) underflows: log(softmax) is -inf there
    np.testing.assert_allclose(ls[finite], logs[finite], rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(ls))
    # the underflowed entry: -1800 - log(1 + e^-1 + ...)
    np.testing.assert_allclose(
        ls[-1, 1], -1800 - math.log1p(math.exp(-1) + math.exp(-995) + math.exp(-1000)), rtol=1e-15
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_stable_at_extremes(dtype):
    z = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = sigmoid(z)
    assert s.dtype == dtype
    assert s[0] == 0.0 and s[-1] == 1.0 and s[2] == 0.5
    np.testing.assert_allclose(s[1], math.exp(-50) / (1 + math.exp(-50)), rtol=1e-6)
    np.testing.assert_allclose(s[3], 1 / (1 + math.exp(-50)), rtol=1e-6)


def test_activation_values():
    z = np.array([-2.0, -0.5, 0.0, 1.5])
    np.testing.assert_array_equal(activation("relu", z), [0.0, 0.0, 0.0, 1.5])
    np.testing.assert_array_equal(activation("leaky_relu", z, 0.1), [-0.2, -0.05, 0.0, 1.5])
    np.testing.assert_array_equal(activation("linear", z), z)
    np.testing.assert_allclose(activation("tanh", z), [math.tanh(v) for v in z], rtol=1e-15)
    np.testing.assert_allclose(activation("sigmoid", z), [1 / (1 + math.exp(-v)) for v in z], rtol=1e-15)
    with pytest.raises(ValueError):
        activation("swish", z)
    with pytest.raises(ValueError):
        activation_derivative("swish", z)
    with pytest.raises(ValueError):
        process_output("relu", z[None])


def test_cost_goldens():
    # mse, linear: ((1 - 0)^2 + (2 - 0)^2) / 2 = 2.5; gradient 2 (y - t) / 2 = [1, 2]
    loss, grad = cost("mse", "linear", np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    assert loss == 2.5
    np.testing.assert_array_equal(grad, [[1.0, 2.0]])
    # cross entropy of equal scores over two classes: log 2; gradient (softmax - t) / n
    loss, grad = cost("cross_entropy", "softmax", np.zeros((2, 2)), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert abs(loss - math.log(2)) < 1e-15
    np.testing.assert_array_equal(grad, [[-0.25, 0.25], [0.25, -0.25]])
    # logistic loss at score 0 is log 2 for either target; at +-1000 with the wrong target it is 1000
    loss, grad = cost("binary_cross_entropy", "sigmoid", np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]))
    assert abs(loss - math.log(2)) < 1e-15
    np.testing.assert_array_equal(grad, [[-0.25, 0.25]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = cost("binary_cross_entropy", "sigmoid", np.array([[1000.0, -1000.0]]), np.array([[0.0, 1.0]]))
    assert loss == 1000.0
    np.testing.assert_array_equal(grad, [[0.5, -0.5]])
    # cross entropy with a score of 1000 stays finite
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, _ = cost("cross_entropy", "softmax", np.array([[1000.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert loss == 1000.0
    with pytest.raises(ValueError):
        cost("hinge", "linear", np.zeros((1, 2)), np.zeros((1, 2)))


# --- gradients against finite differences -------------------------------------------------------------


@pytest.mark.parametrize("output,cost_kind", VALID_PAIRS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cost_gradient_matches_finite_differences(output, cost_kind, seed):
    scores, targets = problem(output, cost_kind, np.random.default_rng(seed))
    loss, grad = cost(cost_kind, output, scores, targets)
    assert grad.shape == scores.shape and grad.dtype == np.float64
    assert np.abs(grad).max() > 1e-4  # a zero gradient would pass only against a zero
    error = finite_difference_error(lambda s: cost(cost_kind, output, s, targets)[0], scores, grad)
    assert error < TOLERANCE, error


@pytest.mark.parametrize("output,cost_kind", VALID_PAIRS)
def test_gradient_checker_detects_a_scaled_gradient(output, cost_kind):
    scores, targets = problem(output, cost_kind, np.random.default_rng(5))
    _, grad = cost(cost_kind, output, scores, targets)
    f = lambda s: cost(cost_kind, output, s, targets)[0]  # noqa: E731
    assert gradient_ok(f, scores, grad)
    assert not gradient_ok(f, scores, grad * 1.01)
    wrong = grad.copy()
    wrong[2, 1] += 1e-3 * np.abs(grad).max()  # one entry off by a thousandth
    assert not gradient_ok(f, scores, wrong)


def test_gradient_checker_detects_a_wrong_output_backward():
    # the mse gradient of a linear output, used where the output is a sigmoid
    scores, targets = problem("sigmoid", "mse", np.random.default_rng(6))
    _, wrong = cost("mse", "linear", sigmoid(scores), targets)
    f = lambda s: cost("mse", "sigmoid", s, targets)[0]  # noqa: E731
    assert not gradient_ok(f, scores, wrong)
    # and the softmax mse gradient without its Jacobian
    scores, targets = problem("softmax", "mse", np.random.default_rng(7))
    _, wrong = cost("mse", "linear", softmax(scores), targets)
    f = lambda s: cost("mse", "softmax", s, targets)[0]  # noqa: E731
    assert not gradient_ok(f, scores, wrong)


def test_gradient_checker_fails_with_a_coarse_step():
    scores, targets = problem("sigmoid", "mse", np.random.default_rng(8))
    _, grad = cost("mse", "sigmoid", scores, targets)
    f = lambda s: cost("mse", "sigmoid", s, targets)[0]  # noqa: E731
    assert gradient_ok(f, scores, grad, h=1e-6)
    assert not gradient_ok(f, scores, grad, h=1.0)


@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "sigmoid", "tanh", "linear"])
def test_activation_derivative_matches_finite_differences(kind):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 200)
    z = z[np.abs(z) > 1e-3]  # away from the kinks at 0
    h = 1e-6
    numeric = (activation(kind, z + h, 0.1) - activation(kind, z - h, 0.1)) / (2 * h)
    derivative = activation_derivative(kind, z, 0.1)
    assert derivative.dtype == z.dtype
    np.testing.assert_allclose(derivative, numeric, rtol=1e-6, atol=1e-9)
    # the checker on the same data notices the wrong slope of leaky relu
    if kind == "leaky_relu":
        assert not np.allclose(activation_derivative(kind, z, 0.01), numeric, rtol=1e-6, atol=1e-9)


def test_activation_derivative_goldens():
    z = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(activation_derivative("relu", z), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(activation_derivative("leaky_relu", z, 0.25), [0.25, 1.0, 1.0])
    np.testing.assert_array_equal(activation_derivative("linear", z), [1.0, 1.0, 1.0])
    assert activation_derivative("sigmoid", z)[1] == 0.25
    assert activation_derivative("tanh", z)[1] == 1.0
    assert activation_derivative("sigmoid", z).dtype == np.float32


# --- combinations -----------------------------------------------------------------------------------

# every valid (task, output, cost, outputs) with outputs in {1, 3}, listed by hand
VALID = {
    ("classification", "sigmoid", "mse", 1),
    ("classification", "sigmoid", "binary_cross_entropy", 1),
    ("classification", "linear", "mse", 3),
    ("classification", "softmax", "cross_entropy", 3),
    ("classification", "softmax", "mse", 3),
    ("classification", "sigmoid", "mse", 3),
    ("classification", "sigmoid", "binary_cross_entropy", 3),
    ("regression", "linear", "mse", 1),
    ("regression", "sigmoid", "mse", 1),
    ("regression", "sigmoid", "binary_cross_entropy", 1),
    ("regression", "linear", "mse", 3),
    ("regression", "sigmoid", "mse", 3),
    ("regression", "sigmoid", "binary_cross_entropy", 3),
}


def test_combination_problem_every_combination():
    combos = list(itertools.product(TASKS, OUTPUTS, COSTS, (1, 3)))
    assert len(combos) == 36
    for combo in combos:
        reason = combination_problem(*combo)
        if combo in VALID:
            assert reason is None, combo
        else:
            assert isinstance(reason, str) and len(reason) > 20, combo


@pytest.mark.parametrize(
    "combo,words",
    [
        (("classification", "linear", "cross_entropy", 3), ["cross_entropy", "softmax"]),
        (("classification", "softmax", "binary_cross_entropy", 3), ["binary_cross_entropy", "sigmoid"]),
        (("classification", "softmax", "mse", 1), ["single output"]),
        (("regression", "softmax", "mse", 3), ["regression"]),
        (("classification", "linear", "mse", 1), ["single-output classifier", "sigmoid"]),
    ],
)
def test_combination_problem_reasons_name_the_problem(combo, words):
    reason = combination_problem(*combo)
    for word in words:
        assert word in reason
