"""Checkpoints: exact save/load, no pickle, atomic writes, and damaged or foreign files refused."""
import json

import numpy as np
import pytest

import qmtik
from qmtik import CheckpointError, Config
from qmtik import checkpoint as ckpt
from qmtik.optimizers import make_optimizer
from qmtik.training import parameters

TINY = Config.from_dict({"network": {"hidden": [8]}, "training": {"epochs": 2}})


@pytest.fixture(scope="module")
def net(digits):
    (x, y), _ = digits
    return qmtik.Network(TINY).fit(x, y)


@pytest.fixture
def saved(net, tmp_path):
    path = tmp_path / "net.ckpt.npz"
    net.save(path)
    return path


def arrays_of(path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def rewrite(path, arrays: dict):
    path.unlink()
    np.savez(path, **arrays)


def refused(path) -> str:
    with pytest.raises(CheckpointError) as info:
        qmtik.Network.load(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message
    return message


# --- round trip --------------------------------------------------------------------------------

def test_load_gives_bit_identical_outputs(net, saved, digits):
    _, (x, _) = digits
    loaded = qmtik.Network.load(saved)
    assert loaded.config == net.config
    assert loaded.input_range_ == net.input_range_
    assert loaded.quantized_ is True and net.quantized_ is True
    assert loaded.history_ == json.loads(json.dumps(net.history_))
    np.testing.assert_array_equal(loaded.decision_function(x), net.decision_function(x))
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    np.testing.assert_array_equal(loaded.predict_proba(x), net.predict_proba(x))
    for a, b in zip(loaded.integer_layers(), net.integer_layers()):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)


def test_save_of_a_loaded_network_writes_the_same_arrays(saved, tmp_path):
    again = tmp_path / "again.ckpt.npz"
    qmtik.Network.load(saved).save(again)
    first, second = arrays_of(saved), arrays_of(again)
    assert sorted(first) == sorted(second)
    for key in first:
        assert first[key].dtype == second[key].dtype, key
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_the_file_loads_without_pickle(saved):
    arrays = arrays_of(saved)
    assert str(arrays["format"]) == "qmtik-checkpoint" and int(arrays["version"]) == 1
    assert Config.from_dict(json.loads(str(arrays["config"]))) == TINY
    assert arrays["model.0.weight"].shape == (8, 64) and arrays["model.1.weight"].shape == (10, 8)
    assert all(a.dtype != object for a in arrays.values())


# --- damaged and foreign files -----------------------------------------------------------------

def test_a_missing_checkpoint_is_refused(tmp_path):
    assert "not found" in refused(tmp_path / "nope.ckpt.npz")


@pytest.mark.parametrize("blob", [np.random.default_rng(0).bytes(3000), b"", b"PK\x03\x04" + bytes(500)],
                         ids=["random", "empty", "zip-magic"])
def test_garbage_is_refused(tmp_path, blob):
    path = tmp_path / "bad.ckpt.npz"
    path.write_bytes(blob)
    refused(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_a_truncated_checkpoint_is_refused(saved, keep):
    blob = saved.read_bytes()
    saved.write_bytes(blob[: int(len(blob) * keep)])
    refused(saved)


def test_a_corrupted_member_is_refused(saved):
    blob = bytearray(saved.read_bytes())
    middle = len(blob) // 3
    blob[middle:middle + 40] = bytes(b ^ 0xFF for b in blob[middle:middle + 40])
    saved.write_bytes(bytes(blob))
    refused(saved)


def test_a_newer_version_asks_for_an_upgrade(saved):
    arrays = arrays_of(saved)
    arrays["version"] = np.array(99)
    rewrite(saved, arrays)
    message = refused(saved)
    assert "version 99" in message and "upgrade" in message


def test_a_version_that_is_not_a_number_is_refused(saved):
    arrays = arrays_of(saved)
    arrays["version"] = np.array("one")
    rewrite(saved, arrays)
    refused(saved)


def test_another_format_is_refused(saved):
    arrays = arrays_of(saved)
    arrays["format"] = np.array("something-else")
    rewrite(saved, arrays)
    assert "something-else" in refused(saved)


def test_a_data_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((2, 64)), y=np.zeros(2))
    assert "'format'" in refused(path)


def test_a_wrong_weight_shape_is_refused_naming_the_key(saved):
    arrays = arrays_of(saved)
    arrays["model.1.weight"] = arrays["model.1.weight"][:, :7]
    rewrite(saved, arrays)
    message = refused(saved)
    assert "model.1.weight" in message and "(10, 7)" in message and "(10, 8)" in message


def test_integer_weights_are_refused(saved):
    arrays = arrays_of(saved)
    arrays["model.0.bias"] = arrays["model.0.bias"].astype(np.int32)
    rewrite(saved, arrays)
    assert "model.0.bias" in refused(saved)


@pytest.mark.parametrize("key, bad", [("model.0.weight", np.nan), ("model.1.bias", np.inf)])
def test_non_finite_weights_are_refused(saved, key, bad):
    arrays = arrays_of(saved)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[3] = bad
    rewrite(saved, arrays)
    message = refused(saved)
    assert key in message and "NaN" in message


@pytest.mark.parametrize("key", ["model.1.bias", "model.0.observed", "config", "history", "version"])
def test_a_missing_key_is_refused_naming_it(saved, key):
    arrays = arrays_of(saved)
    del arrays[key]
    rewrite(saved, arrays)
    assert repr(key) in refused(saved)


def test_an_invalid_config_inside_is_refused(saved):
    arrays = arrays_of(saved)
    config = json.loads(str(arrays["config"]))
    config["network"]["hidden"] = [0]
    arrays["config"] = np.array(json.dumps(config))
    rewrite(saved, arrays)
    assert "network.hidden" in refused(saved)


def test_a_bad_input_range_is_refused(saved):
    arrays = arrays_of(saved)
    arrays["input_range"] = np.array([16.0, 0.0])
    rewrite(saved, arrays)
    assert "input_range" in refused(saved)


def test_load_reads_the_resume_state(net, tmp_path):
    path = tmp_path / "r.ckpt.npz"
    params, decay = parameters(net.layers_)
    optimizer = make_optimizer(net.config.training, params, decay)
    optimizer.steps = 7
    optimizer.state["mean"][3][...] = 0.25
    history = {**net.history_, "epochs": net.history_["epochs"][:1], "best_epoch": 1}
    ckpt.save(path, net.config, net.input_range_, net.layers_, True, history,
              resume={"epoch": 1, "layers": net.layers_, "optimizer": optimizer.state_arrays()})
    state = ckpt.load(path)
    assert state["resume"]["epoch"] == 1
    assert int(state["resume"]["optimizer"]["steps"]) == 7
    assert (state["resume"]["optimizer"]["mean.3"] == 0.25).all()
    for a, b in zip(state["resume"]["layers"], net.layers_):
        np.testing.assert_array_equal(a.weight, b.weight)


# --- every field is checked before use ---------------------------------------------------------

@pytest.fixture
def interrupted(net, tmp_path):
    """A checkpoint of a run stopped after epoch 1 of 2, with its resume state."""
    path = tmp_path / "run.ckpt.npz"
    params, decay = parameters(net.layers_)
    optimizer = make_optimizer(net.config.training, params, decay)
    history = {"epochs": net.history_["epochs"][:1], "best_epoch": 1, "first_loss": 2.3}
    ckpt.save(path, net.config, net.input_range_, net.layers_, True, history,
              resume={"epoch": 1, "layers": net.layers_, "optimizer": optimizer.state_arrays()})
    assert ckpt.load(path)["resume"]["epoch"] == 1
    return path


@pytest.mark.parametrize("key,value,fragment", [
    ("history", np.array("[]"), "not a record of epochs"),
    ("history", np.array(json.dumps({"epochs": [{"epoch": 1}], "best_epoch": 99, "first_loss": 1.0})),
     "best_epoch 99"),
    ("resume.epoch", np.array(-5), "resume.epoch -5"),
    ("resume.epoch", np.array(2), "resume.epoch 2"),
    ("optimizer.steps", np.array("x"), "optimizer.steps"),
    ("input_range", np.array(["a", "b"]), "input_range"),
    ("quantized", np.array([True, False]), "quantized"),
    ("quantized", np.array("no"), "quantized"),
    ("version", np.array(-3), "version -3"),
    ("model.0.observed", np.array([np.nan, np.nan]), "NaN"),
    ("model.0.observed", np.array([5.0, -5.0]), "not [low, high]"),
])
def test_a_damaged_field_is_refused_naming_it(interrupted, key, value, fragment):
    arrays = arrays_of(interrupted)
    arrays[key] = value
    rewrite(interrupted, arrays)
    assert fragment in refused(interrupted)
