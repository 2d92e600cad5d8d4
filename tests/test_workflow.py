"""workflow.py: each command's steps as library functions, called from Python without the command line."""

import json
import os
import threading

import numpy as np
import pytest

import qmtik
from qmtik import workflow
from qmtik.c_check import find_compiler
from qmtik.errors import CheckpointError, DataError, ModelFormatError, UsageError
from qmtik.paths import history_path, qmt_path
from qmtik.qmtfile import encode


def same(a, b) -> bool:
    """Two integer models are the same when their .qmt bytes are."""
    return encode(a) == encode(b)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny training run on the bundled digits: (folder, its TrainingRun)."""
    folder = tmp_path_factory.mktemp("run")
    workflow.write_starter(folder / "net.toml")
    config = qmtik.load_config(folder / "net.toml", {"network.hidden": [8], "training.epochs": 1})
    ckpt = folder / "net.ckpt.npz"
    done = workflow.train(config, ckpt, history=history_path(ckpt), qmt=qmt_path(ckpt))
    return folder, done


def test_the_starter_config_loads_as_the_defaults_on_digits(tmp_path):
    workflow.write_starter(tmp_path / "q.toml")
    config = qmtik.load_config(tmp_path / "q.toml")
    assert config.data.dataset == "digits" and config.network == qmtik.Config().network


def test_train_writes_checkpoint_history_and_model_in_order_and_tests(run):
    folder, done = run
    assert done.written == [folder / "net.ckpt.npz", folder / "net.history.json", folder / "net.qmt"]
    assert json.loads((folder / "net.history.json").read_text())["best_epoch"] == done.network.history_["best_epoch"]
    _, (x, y) = qmtik.load_dataset("digits")
    assert done.test == done.network.evaluate(x, y) and done.test["samples"] == len(x)
    np.testing.assert_array_equal(qmtik.load_model(folder / "net.qmt").predict(x), done.network.predict(x))


def test_train_refuses_bad_test_data_before_training(tmp_path):
    x, y = qmtik.load_digits()
    np.savez(tmp_path / "tr.npz", x=x[:40], y=y[:40])
    np.savez(tmp_path / "te.npz", x=x[:10, :5], y=y[:10])  # 5 inputs, not 64
    workflow.write_starter(tmp_path / "net.toml")
    overrides = {"data.dataset": "", "data.train": "tr.npz", "data.test": "te.npz", "training.epochs": 1}
    config = qmtik.load_config(tmp_path / "net.toml", overrides)
    with pytest.raises(qmtik.QmtikError, match="test inputs"):
        workflow.train(config, tmp_path / "net.ckpt.npz")
    assert not (tmp_path / "net.ckpt.npz").exists()


def test_either_file_is_told_by_its_content_not_its_name(run, tmp_path):
    folder, _ = run
    (tmp_path / "model.ckpt.npz").write_bytes((folder / "net.qmt").read_bytes())
    assert isinstance(workflow.load_any(tmp_path / "model.ckpt.npz"), qmtik.QuantizedModel)
    assert isinstance(workflow.load_any(folder / "net.ckpt.npz"), qmtik.Network)
    (tmp_path / "bad.qmt").write_bytes(b"not a model")
    with pytest.raises(ModelFormatError):
        workflow.load_any(tmp_path / "bad.qmt")


def through_fifo(path, blob: bytes, call):
    """call(path) on a new FIFO at path while a writer thread writes blob into it once: what call
    returns or raises. Fails, rather than hangs, when call opens the FIFO a second time."""
    os.mkfifo(path)

    def write():
        try:
            with open(path, "wb") as f:
                f.write(blob)
        except OSError:  # the reader closed early
            pass

    out = {}

    def read():
        try:
            out["value"] = call(path)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    writer, reader = threading.Thread(target=write, daemon=True), threading.Thread(target=read, daemon=True)
    writer.start(), reader.start()
    reader.join(60)
    if reader.is_alive():  # blocked opening the FIFO again, the first bytes used up: free it, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail(f"{call.__name__} opened the FIFO a second time; it got {out}")
    writer.join(10)
    if writer.is_alive():  # the reader never opened it
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    return out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system (os.mkfifo)")
def test_either_file_is_read_once_from_a_fifo(run, tmp_path):
    """load_any probed a FIFO's first 8 bytes, then opened it again for the reader: the model's
    first bytes were gone (or the second open waited for a writer that had finished)."""
    folder, _ = run
    blob = (folder / "net.qmt").read_bytes()
    out = through_fifo(tmp_path / "model.pipe", blob, workflow.load_any)  # told by content, not name
    assert "error" not in out, out
    assert encode(out["value"]) == blob
    out = through_fifo(tmp_path / "net.ckpt.npz", (folder / "net.ckpt.npz").read_bytes(), workflow.load_any)
    assert isinstance(out.get("error"), CheckpointError), out
    assert (
        str(out["error"])
        == f"checkpoint {tmp_path / 'net.ckpt.npz'}: a FIFO or pipe; a checkpoint is read from a regular file"
    )
    out = through_fifo(tmp_path / "short.qmt", blob[:20], workflow.load_any)
    assert isinstance(out.get("error"), ModelFormatError), out


def test_a_qmt_is_no_training_checkpoint(run):
    folder, _ = run
    with pytest.raises(UsageError, match=r"net\.qmt is an integer model \(\.qmt\); this command needs a training"):
        workflow.load_network(folder / "net.qmt")
    assert isinstance(workflow.load_network(folder / "net.ckpt.npz"), qmtik.Network)


def test_both_kinds_answer_the_same_questions(run):
    folder, done = run
    net, model = done.network, qmtik.load_model(folder / "net.qmt")
    x, _ = qmtik.load_digits()
    for either in (net, model):
        assert (workflow.inputs_of(either), workflow.outputs_of(either)) == (64, 10)
        assert workflow.task_of(either) == "classification"
        assert workflow.class_names_of_model(either) is None
        np.testing.assert_array_equal(workflow.classes_of(either, x[:50]), model.predict_index(x[:50]))
    assert same(workflow.load_integer_model(folder / "net.ckpt.npz"), net.quantize())
    assert same(workflow.load_integer_model(folder / "net.qmt"), model)


def test_load_inputs_checks_the_width_and_names_the_data(run, tmp_path):
    folder, _ = run
    model = qmtik.load_model(folder / "net.qmt")
    x, y = workflow.load_inputs("digits:test", model)
    assert x.shape == (359, 64) and len(y) == 359
    np.savez(tmp_path / "narrow.npz", x=np.zeros((3, 5)), y=np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match="narrow.npz"):
        workflow.load_inputs(str(tmp_path / "narrow.npz"), model)


def test_quantize_checkpoint_saves_what_quantize_makes(run, tmp_path):
    folder, done = run
    model = workflow.quantize_checkpoint(folder / "net.ckpt.npz", tmp_path / "m.qmt")
    assert same(model, done.network.quantize())
    assert (tmp_path / "m.qmt").read_bytes() == (folder / "net.qmt").read_bytes()


def test_describe_file_gives_a_qmt_its_size(run):
    folder, done = run
    model, text = workflow.describe_file(folder / "net.qmt")
    assert text == model.info((folder / "net.qmt").stat().st_size)
    model, text = workflow.describe_file(folder / "net.ckpt.npz")
    assert same(model, done.network.quantize()) and text == model.info()


def test_write_header_returns_its_size(run, tmp_path):
    folder, _ = run
    model = qmtik.load_model(folder / "net.qmt")
    size = workflow.write_header(model, tmp_path / "net.h", "net")
    assert size == (tmp_path / "net.h").stat().st_size
    assert "net_predict" in (tmp_path / "net.h").read_text()


def test_without_a_compiler_the_needs_are_the_model_s_and_nothing_is_checked(run, monkeypatch):
    folder, _ = run
    model = qmtik.load_model(folder / "net.qmt")
    monkeypatch.setattr("qmtik.workflow.code_size", lambda model, prefix: None)
    monkeypatch.setattr("qmtik.workflow.find_compiler", lambda: None)
    needs = qmtik.integer_model.memory_needs(model)
    assert workflow.header_needs(model, "net") == {
        "compiled": False,
        "constants": needs["constants"],
        "scratch": needs["scratch"],
    }
    assert workflow.check_header(model, np.zeros((2, 64)), "net") is None


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler on this machine")
def test_the_compiled_header_agrees_and_its_needs_are_measured(run):
    folder, _ = run
    model = qmtik.load_model(folder / "net.qmt")
    x, _ = qmtik.load_digits()
    result = workflow.check_header(model, x[:20], "net")
    assert result["samples"] == 20 and result["mismatched_samples"] == 0
    needs = workflow.header_needs(model, "net")
    assert needs["compiled"] and needs["code"] > 0 and needs["constants"] >= 64 * 8 + 8 * 10


def test_evaluate_on_data_or_on_the_checkpoint_s_test_data(run):
    folder, done = run
    _, (x, y) = qmtik.load_dataset("digits")
    e = workflow.evaluate(folder / "net.qmt", "digits:test")
    assert e.task == "classification" and e.figures == qmtik.load_model(folder / "net.qmt").evaluate(x, y)
    e = workflow.evaluate(folder / "net.ckpt.npz")
    assert e.figures == done.test and len(e.x) == len(x)
    with pytest.raises(UsageError, match="is an integer model and carries no data"):
        workflow.evaluate(folder / "net.qmt")


def test_evaluate_refuses_a_checkpoint_whose_config_names_no_test_data(tmp_path):
    x, y = qmtik.load_digits()
    np.savez(tmp_path / "tr.npz", x=x[:60], y=y[:60])
    workflow.write_starter(tmp_path / "net.toml")
    overrides = {"data.dataset": "", "data.train": "tr.npz", "training.epochs": 1, "network.hidden": [4]}
    config = qmtik.load_config(tmp_path / "net.toml", overrides)
    workflow.train(config, tmp_path / "net.ckpt.npz")
    with pytest.raises(UsageError, match="the checkpoint's config names no test data"):
        workflow.evaluate(tmp_path / "net.ckpt.npz")


def test_predict_file_and_its_two_written_forms(run, tmp_path):
    folder, _ = run
    x, _ = qmtik.load_digits()
    np.savetxt(tmp_path / "in.csv", x[:4], delimiter=",", fmt="%g")
    predictions = workflow.predict_file(folder / "net.qmt", tmp_path / "in.csv")
    np.testing.assert_array_equal(predictions, qmtik.load_model(folder / "net.qmt").predict(x[:4]))
    workflow.write_predictions(tmp_path / "p.npy", predictions)
    workflow.write_predictions(tmp_path / "p.txt", predictions)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), predictions)
    assert (tmp_path / "p.txt").read_text() == "".join(f"{p}\n" for p in predictions.tolist())


def test_prediction_lines_write_classes_and_value_rows():
    assert workflow.prediction_lines(np.array([3, 1])) == "3\n1\n"
    assert workflow.prediction_lines(np.array(["cat", "dog"])) == "cat\ndog\n"
    assert workflow.prediction_lines(np.array([[0.5, 1 / 3], [2.0, -1e-9]])) == "0.5,0.3333333\n2,-1e-09\n"


def test_c_agreement_counts_equal_classes_and_both_accuracies():
    class Model:  # an integer model's two methods c_agreement uses
        def quantize_inputs(self, x):
            return np.asarray(x)

        def predict_index(self, x):
            return np.array([0, 1, 2, 3])

    class CModel:
        def predict(self, codes):
            return np.array([0, 1, 2, 0])

    assert workflow.c_agreement(CModel(), Model(), np.zeros((4, 1)), [0, 1, 1, 3]) == {
        "samples": 4,
        "equal": 3,
        "c_accuracy": 0.5,
        "accuracy": 0.75,
    }


def test_convert_c_model_converts_and_compares_only_when_asked(tmp_path):
    from qmtik import legacy

    (tmp_path / "h.h").write_text(
        "#define QMTIK_I 64\n#define QMTIK_H 16\n#define QMTIK_L 1\n#define QMTIK_O 10\n"
        "#define QMTIK_W_SCALE 0.05f\n#define QMTIK_A_SCALE 0.5f\n#define QMTIK_RELU_ACTV\n"
        "#define QMTIK_SOFT_MAX_PP\n#define QMTIK_CROSS_ENTROPY_COST\n"
    )
    rng = np.random.default_rng(3)
    layers = [
        (rng.integers(-128, 128, (o, i)).astype(np.int8), rng.integers(-20, 20, o).astype(np.int8))
        for i, o in ((64, 16), (16, 16), (16, 10))
    ]
    legacy.write_c_model(tmp_path / "m.bin", layers)
    converted = workflow.convert_c_model(tmp_path / "m.bin", tmp_path / "h.h")
    assert converted.widths == (64, 16, 16, 10) and converted.agreement is None
    assert converted.model.widths == (64, 16, 16, 10)
    x, y = qmtik.load_dataset("digits")[1]
    np.savez(tmp_path / "t.npz", x=(x * 255 / 16).round().astype(np.uint8), y=y)
    checked = workflow.convert_c_model(tmp_path / "m.bin", tmp_path / "h.h", str(tmp_path / "t.npz"))
    assert checked.agreement["samples"] == 359 and checked.agreement["equal"] >= 0.9 * 359
    assert not list(tmp_path.glob("*.qmt"))  # nothing written
