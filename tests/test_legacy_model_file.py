"""qmtik.legacy.model_file: the C library's stored model files, read, written and imported
as .qmt files; one rule for `config from-header` and `import-c-model`."""

import numpy as np
import pytest

from legacy_helpers import one_line, random_layers, small_header
from qmtik import legacy as c
from qmtik.errors import ConfigError, ModelFormatError

# --- the model file ----------------------------------------------------------------------------


def test_model_file_layout_and_length(tmp_path):
    path = small_header(tmp_path, i=5, h=3, layers=2, o=4)
    layers = random_layers((5, 3, 3, 3, 4))
    c.write_c_model(tmp_path / "model", layers)
    assert (tmp_path / "model").stat().st_size == 3 * 6 + 2 * 3 * 4 + 4 * 4 == c.c_model_size(c.read_header(path))
    model = c.load_c_model(tmp_path / "model", path)
    for (w, b), (w2, b2) in zip(layers, model.layers):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    (tmp_path / "short").write_bytes((tmp_path / "model").read_bytes()[:-1])
    with pytest.raises(ModelFormatError, match=r"C model file .*short: 57 bytes, expected 58 for 5-3-3-3-4"):
        c.load_c_model(tmp_path / "short", path)
    with pytest.raises(ModelFormatError, match="missing: not found$"):
        c.load_c_model(tmp_path / "missing", path)


# --- one rule for config from-header and import-c-model; scales the C arithmetic overflows with -------


@pytest.mark.parametrize(
    "out, cost, words",
    [
        ("SOFT_MAX", "MSE", "QMTIK_O 1, softmax output, mse cost: softmax over a single output is always 1"),
        ("LINEAR", "MSE", "QMTIK_O 1, linear output, mse cost: a single-output classifier needs output = 'sigmoid'"),
    ],
)
def test_a_single_output_header_is_refused_alike_by_config_and_import(tmp_path, monkeypatch, capsys, out, cost, words):
    """QMTIK_O 1 with softmax: config from-header refused it, import-c-model took it, and the
    imported model then disagreed with the C library on 156 of 1,000 inputs."""
    monkeypatch.chdir(tmp_path)
    path = small_header(tmp_path, out=out, o=1)
    c.write_c_model(tmp_path / "model.bin", random_layers((5, 3, 3, 1)))
    messages = set()
    for call in (
        lambda: c.read_header(path),
        lambda: c.config_from_header(path),
        lambda: c.load_c_model(tmp_path / "model.bin", path),
        lambda: c.import_c_model(tmp_path / "model.bin", path, tmp_path / "m.qmt"),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        messages.add(str(info.value))
    assert len(messages) == 1 and messages.pop().startswith(f"C header {path}: {words}")
    assert words in one_line(capsys, ["config", "from-header", "qmtik_config.h"], 2)
    assert words in one_line(capsys, ["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt"], 2)
    assert not (tmp_path / "m.qmt").exists()


def test_a_single_sigmoid_output_is_accepted_by_both(tmp_path):
    path = small_header(tmp_path, out="SIGMOID", o=1)
    c.write_c_model(tmp_path / "model.bin", random_layers((5, 3, 3, 1)))
    assert c.config_from_header(path).network.outputs == 1
    assert c.import_c_model(tmp_path / "model.bin", path, tmp_path / "m.qmt").outputs == 1
