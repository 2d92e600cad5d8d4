"""The scikit-learn style API: fit, predict, predict_proba, score, evaluate, save and load."""

import numpy as np
import pytest

import qmtik
from qmtik import Config, NetworkConfig, TrainingConfig


@pytest.fixture(scope="module")
def net(digits):
    (x, y), _ = digits
    config = Config(training=TrainingConfig(epochs=6, batch_size=32, learning_rate=0.003))
    return qmtik.Network(config).fit(x, y)


def test_fit_returns_the_network_and_learns(net, digits):
    _, (x, y) = digits
    assert isinstance(net, qmtik.Network)
    assert net.score(x, y) > 0.85


def test_predict_gives_classes_of_the_int8_scores(net, digits):
    _, (x, y) = digits
    scores = net.decision_function(x)
    last = net.integer_layers()[-1]
    codes = scores / last.output_scale + last.output_offset
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)  # on the int8 grid
    assert codes.min() >= -128 and codes.max() <= 127
    predicted = net.predict(x)
    np.testing.assert_array_equal(predicted, scores.argmax(axis=1))
    assert net.score(x, y) == (predicted == y).mean()


def test_predict_proba_is_the_softmax_of_the_scores(net, digits):
    _, (x, _) = digits
    proba = net.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), net.predict(x))


def test_evaluate_reports_accuracy_and_loss(net, digits):
    _, (x, y) = digits
    result = net.evaluate(x, y)
    assert result["samples"] == len(x) and result["int8"] is True
    assert result["accuracy"] == net.score(x, y)
    assert 0 < result["loss"] < 1


def test_unfitted_network_says_so():
    with pytest.raises(qmtik.NotFittedError, match="not trained"):
        qmtik.Network().predict(np.zeros((1, 64)))


def test_bad_inputs_are_refused_with_the_problem(net):
    with pytest.raises(qmtik.DataError, match="63 features.*64 inputs"):
        net.predict(np.zeros((2, 63)))
    with pytest.raises(qmtik.DataError, match="NaN"):
        net.predict(np.full((2, 64), np.nan))
    with pytest.raises(qmtik.DataError, match="out of range"):
        qmtik.Network(Config(training=TrainingConfig(epochs=1))).fit(np.zeros((4, 64)), [0, 1, 2, 10])


def test_a_fixed_input_range_is_kept(digits):
    (x, y), _ = digits
    config = Config(training=TrainingConfig(epochs=1)).replace("data.input_range", [0, 16])
    net = qmtik.Network(config).fit(x, y)
    assert net.input_range_ == (0.0, 16.0)
    np.testing.assert_array_equal(net.input_codes([[16] * 64])[0], 127)
    np.testing.assert_array_equal(net.input_codes([[0] * 64])[0], -128)


def test_validation_data_replaces_the_split(digits):
    (x, y), (xt, yt) = digits
    net = qmtik.Network(Config(training=TrainingConfig(epochs=2))).fit(x, y, validation_data=(xt, yt))
    best = net.history_["epochs"][net.history_["best_epoch"] - 1]
    assert best["val_metric"] == net.score(xt, yt)


def test_binary_classification_with_one_sigmoid_output():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    config = Config(
        network=NetworkConfig(inputs=2, hidden=[8], outputs=1, output="sigmoid", cost="binary_cross_entropy"),
        training=TrainingConfig(epochs=30, batch_size=32, learning_rate=0.02),
    )
    net = qmtik.Network(config).fit(x, y)
    assert set(np.unique(net.predict(x))) <= {0, 1}
    assert net.score(x, y) > 0.95
    proba = net.predict_proba(x)
    assert proba.shape == (600, 1)
    np.testing.assert_array_equal(net.predict(x), (proba[:, 0] >= 0.5).astype(int))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_regression_fits_a_smooth_function(activation):
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(2000, 1))
    y = np.sin(x[:, 0])
    config = Config(
        task="regression",
        network=NetworkConfig(inputs=1, hidden=[32, 32], outputs=1, activation=activation, output="linear", cost="mse"),
        training=TrainingConfig(epochs=30, batch_size=32, learning_rate=0.005),
    )
    net = qmtik.Network(config).fit(x, y)
    predicted = net.predict(x)
    assert predicted.shape == (2000,) and predicted.dtype.kind == "f"
    assert net.score(x, y) > 0.95  # R^2 on the int8 arithmetic
    result = net.evaluate(x, y)
    assert result["mse"] == pytest.approx(((predicted - y) ** 2).mean(), rel=1e-5)


def test_save_and_load_give_identical_predictions(net, digits, tmp_path):
    _, (x, _) = digits
    path = tmp_path / "digits.ckpt.npz"
    net.save(path)
    loaded = qmtik.Network.load(path)
    np.testing.assert_array_equal(loaded.decision_function(x), net.decision_function(x))
    assert loaded.config == net.config
    assert loaded.history_ == net.history_


def test_inputs_whose_range_float32_cannot_hold_are_refused():
    x = np.array([[0.0], [1e-44]] * 8)
    with pytest.raises(qmtik.DataError, match="float32"):
        qmtik.Network(
            Config(network=NetworkConfig(inputs=1, hidden=[2], outputs=2), training=TrainingConfig(epochs=1))
        ).fit(x, [0, 1] * 8)


# --- issue 10: a float network too large to compute with is one error, no warnings -------------


@pytest.fixture(scope="module")
def float_net(digits):
    (x, y), _ = digits
    config = Config(network=NetworkConfig(hidden=(6,)), training=TrainingConfig(epochs=1, float_epochs=1))
    return qmtik.Network(config).fit(x, y)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("method", ["decision_function", "predict_proba", "predict", "evaluate", "score"])
def test_weights_at_the_float32_limit_are_one_error_not_warnings(float_net, digits, tmp_path, method):
    """A checkpoint may hold float weights up to 3.4e38; computing with them overflows float32,
    which used to give numpy warnings and inf or NaN scores."""
    _, (x, y) = digits
    path = tmp_path / "huge.ckpt.npz"
    float_net.save(path)
    net = qmtik.Network.load(path)
    net.layers_[0].weight[...] = 3e38
    args = (x, y) if method in ("evaluate", "score") else (x,)
    with pytest.raises(qmtik.TrainingError, match="^network: its float32 arithmetic fails on these inputs"):
        getattr(net, method)(*args)
    assert float_net.score(x, y) > 0.1  # the network as trained computes


def test_a_checkpoint_that_takes_one_write_is_refused_before_training(digits, tmp_path, monkeypatch):
    """fit writes its checkpoint after every epoch: into a FIFO or /dev/stdout they would follow
    one another (and a FIFO blocks once its reader has gone)."""
    import os

    from qmtik.output_files import OutputError

    (x, y), _ = digits
    os.mkfifo(tmp_path / "pipe")
    trained = []
    monkeypatch.setattr(qmtik.network, "train", lambda *a, **k: trained.append(1))
    for path in (tmp_path / "pipe", "/dev/stdout"):
        with pytest.raises(OutputError, match=f"^output {path}: a checkpoint is written after every epoch"):
            qmtik.Network(Config()).fit(x, y, checkpoint=path)
    assert trained == []
