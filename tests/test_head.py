"""The prediction head (head.py): one rule for what scores mean, shared by Network and
QuantizedModel; and one enumeration of each kind, so that no list can drift from another."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import qmtik
from qmtik import config, download, functions, head, optimizers, qmtfile

PACKAGE = Path(qmtik.__file__).parent


# --- classes -----------------------------------------------------------------------------------


def test_ties_go_to_the_first_index():
    scores = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [-1.0, -5.0, -1.0], [0.0, 0.0, 7.0]])
    np.testing.assert_array_equal(head.classes(scores), [1, 0, 0, 2])
    codes = np.array([[-128, 127, 127, -3]], dtype=np.int64)
    np.testing.assert_array_equal(head.classes(codes), [1])


def test_a_single_output_is_thresholded_at_zero_or_the_given_threshold():
    scores = np.array([[-0.1], [0.0], [-0.0], [0.1], [-1e-300]])
    out = head.classes(scores)
    np.testing.assert_array_equal(out, [0, 1, 1, 1, 0])
    assert out.dtype == np.int64
    codes = np.array([[-6], [-5], [-4], [127], [-128]], dtype=np.int8)  # output zero point -5
    np.testing.assert_array_equal(head.classes(codes, -5), [0, 1, 1, 1, 0])


def test_class_count_and_names():
    assert [head.class_count(n) for n in (1, 2, 10)] == [2, 2, 10]
    np.testing.assert_array_equal(head.named(np.array([1, 0, 1]), np.array(["no", "yes"])), ["yes", "no", "yes"])
    np.testing.assert_array_equal(head.named(np.array([1, 0]), None), [1, 0])


def test_values_score_and_figures_by_hand():
    scores = np.array([[0.0], [2.0], [4.0]])
    targets = np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_array_equal(head.values("linear", scores), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(head.probabilities("sigmoid", np.array([[0.0]])), [[0.5]])
    np.testing.assert_array_equal(head.probabilities("softmax", np.array([[1.0, 1.0]])), [[0.5, 0.5]])
    # R^2 = 1 - (1 + 0 + 1) / (1 + 0 + 1) = 0
    assert head.score("regression", "linear", scores, targets) == 0.0
    assert head.figures("regression", "linear", "mse", scores, targets) == {
        "loss": 2 / 3,
        "cost": "mse",
        "samples": 3,
        "mse": 2 / 3,
        "mae": 2 / 3,
    }
    one_hot = np.eye(3)[[2, 0, 0]]
    assert head.score("classification", "softmax", np.array([[0, 1, 5], [3, 3, 0], [0, 1, 0.5]]), one_hot) == 2 / 3
    assert [
        head.natural_cost(t, o)
        for t, o in [("classification", "softmax"), ("classification", "sigmoid"), ("regression", "sigmoid")]
    ] == ["cross_entropy", "binary_cross_entropy", "mse"]


# --- one head for both APIs ----------------------------------------------------------------------


def test_network_and_its_model_decide_classes_by_the_same_rule(trained_digits):
    """The int8 network and its integer model give the same class names and score."""
    net, (x, y) = trained_digits
    model = net.quantize()
    np.testing.assert_array_equal(net.predict(x), model.predict(x))
    assert net.score(x, y) == model.score(x, y)
    np.testing.assert_array_equal(
        model.predict_index(x), head.classes(model.scores(model.quantize_inputs(x)), model.layers[-1].output_offset)
    )


@pytest.fixture(scope="module")
def trained_digits():
    (x, y), (x_test, y_test) = qmtik.load_dataset("digits")
    cfg = qmtik.Config(network=qmtik.NetworkConfig(hidden=[16]), training=qmtik.TrainingConfig(epochs=2))
    names = [f"digit {d}" for d in range(10)]
    return qmtik.Network(cfg).fit(x[:600], y[:600], class_names=names), (x_test, y_test)


def test_no_module_decides_classes_or_counts_them_by_itself():
    """`max(outputs, 2)` and `.argmax(axis=1)` on scores are the head's alone (data_formats.py reads
    one-hot rows, legacy/arithmetic.py is the C library's own arithmetic, both outside the rule)."""
    allowed = {"head.py", "data_formats.py", "legacy/arithmetic.py"}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() in allowed:
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"max\([\w.]*outputs, 2\)", text), path.name
        assert ".argmax(axis=1)" not in text, path.name


# --- one enumeration of each kind ----------------------------------------------------------------


def tuples_of_strings(path: Path) -> list:
    """Every literal tuple or list of two or more strings at a module's top level."""
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List)):
            items = node.value.elts
            if len(items) >= 2 and all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
                found.append(tuple(i.value for i in items))
    return found


@pytest.mark.parametrize(
    "kinds", [functions.TASKS, functions.OUTPUTS, functions.COSTS, config.OPTIMIZERS, config.NAMED_DATASETS]
)
def test_each_enumeration_is_written_once(kinds):
    places = [path.name for path in sorted(PACKAGE.rglob("*.py")) if kinds in tuples_of_strings(path)]
    assert len(places) == 1, places


def test_the_enumerations_agree():
    """The optimizer registry is the config's list; every downloadable set is a named one; the
    .qmt file's codes are the indices in TASKS and OUTPUTS (the format's order, never changed)."""
    assert sorted(optimizers.OPTIMIZERS) == sorted(config.OPTIMIZERS)
    assert set(download.DATASETS) <= set(config.NAMED_DATASETS)
    assert (qmtfile.TASKS, qmtfile.OUTPUTS) == (("classification", "regression"), ("linear", "softmax", "sigmoid"))
