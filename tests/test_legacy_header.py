"""qmtik.legacy.header: a qmtik_config.h read as the C build reads it: literals, switches,
the lines and defines its errors name, and the scales it refuses."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legacy_helpers import MNIST_HEADER, header, one_line, random_layers, small_header
from qmtik import legacy as c
from qmtik.c_check import find_compiler
from qmtik.errors import ConfigError

# --- the header --------------------------------------------------------------------------------


def test_flag_style_header_gives_topology_with_l_hidden_to_hidden_layers(tmp_path):
    h = c.read_header(header(tmp_path, MNIST_HEADER))
    assert h.widths == (784, 256, 256, 256, 10)
    assert (h.activation, h.output, h.cost, h.optimizer) == ("leaky_relu", "softmax", "cross_entropy", "adam")
    assert (h.w_scale, h.a_scale) == (0.02, 0.25)
    assert h.ignored == ("QMTIK_TRAIN_DEBUG",)
    assert c.config_from_header(tmp_path / "qmtik_config.h").network.hidden == (256, 256, 256)


def test_value_style_switches_comments_casts_and_parentheses(tmp_path):
    text = """/* a config
    #define QMTIK_I 1 (inside a comment: not read) */
    #define QMTIK_RELU 1
    #define QMTIK_ACTIVATION QMTIK_TANH      // the value names the choice
    #define QMTIK_OUTPUT (QMTIK_SIGMOID)
    #define QMTIK_COST CROSS_ENTROPY
    #  define QMTIK_I (64)
    #define QMTIK_H ((int)32) /* hidden */
    #define QMTIK_L 1
    #define QMTIK_O 1
    #define QMTIK_W_SCALE ((float)0.01f)
    #define QMTIK_A_SCALE 1e-1
    #define QMTIK_MOMENTUM 0.8f
    #define QMTIK_EPS 1e-3
    #define SOMETHING_ELSE 42
    #define QMTIK_MAX(a, b) ((a) > (b) ? (a) : (b))
    """
    h = c.read_header(header(tmp_path, text))
    assert h.widths == (64, 32, 32, 1)
    assert (h.activation, h.output, h.cost, h.optimizer) == ("tanh", "sigmoid", "cross_entropy", "sgd")
    assert (h.w_scale, h.a_scale) == (0.01, 0.1)
    config = c.config_from_header(tmp_path / "qmtik_config.h")
    assert (config.network.cost, config.training.optimizer, config.training.momentum) == (
        "binary_cross_entropy",
        "sgd",
        0.8,
    )


def test_missing_define_is_a_config_error_naming_header_and_define(tmp_path):
    path = header(tmp_path, MNIST_HEADER.replace("#define QMTIK_W_SCALE 0.02f\n", ""))
    with pytest.raises(ConfigError, match=r"qmtik_config.h: QMTIK_W_SCALE is not defined"):
        c.read_header(path)
    path = header(tmp_path, MNIST_HEADER.replace("#define QMTIK_SOFT_MAX_PP\n", ""))
    with pytest.raises(ConfigError, match="the output .* is not defined"):
        c.read_header(path)


@pytest.mark.parametrize("line, value", [(3, "two"), (9, "0.02.5f"), (3, "0"), (8, "-0.25f")])
def test_bad_value_names_the_line_and_define(tmp_path, line, value):
    lines = MNIST_HEADER.splitlines()
    name = lines[line - 1].split()[1]
    lines[line - 1] = f"#define {name} {value}"
    with pytest.raises(ConfigError, match=rf"qmtik_config.h, line {line}: {name} '{value}' is not"):
        c.read_header(header(tmp_path, "\n".join(lines)))


def test_two_choices_for_one_switch_and_an_unknown_choice_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="more than one activation"):
        c.read_header(header(tmp_path, MNIST_HEADER + "#define QMTIK_RELU_ACTV\n"))
    with pytest.raises(ConfigError, match="line 17: QMTIK_ACTIVATION 'QMTIK_SWISH' is not one of"):
        c.read_header(header(tmp_path, MNIST_HEADER + "#define QMTIK_ACTIVATION QMTIK_SWISH\n"))


# --- issue 10: numbers beyond Python's limits, nesting, octal ----------------------------------

DEEP = 100_000


def with_inputs(tmp_path, value: str):
    return header(tmp_path, MNIST_HEADER.replace("#define QMTIK_I 784", f"#define QMTIK_I {value}"))


@pytest.mark.parametrize("value", ["1" * 5000, "-" + "1" * 5000, "(" * DEEP + "784", "08"])
def test_an_integer_python_cannot_read_is_a_one_line_error_at_its_line(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        c.read_header(with_inputs(tmp_path, value))
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert "qmtik_config.h, line 1: QMTIK_I" in message and "is not a positive integer" in message


def test_a_hexadecimal_integer_too_long_to_print_is_refused_by_the_limits(tmp_path):
    path = with_inputs(tmp_path, "0x" + "f" * 5000)
    with pytest.raises(ConfigError) as info:
        c.config_from_header(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert "needs more than 10^6023 parameters" in message and "QMTIK_MAX_PARAMETERS" in message, message


def test_parentheses_nested_100000_deep_are_read_in_linear_time(tmp_path):
    import time

    start = time.perf_counter()
    assert c.read_header(with_inputs(tmp_path, "(" * DEEP + "(int)784u" + ")" * DEEP)).inputs == 784
    assert c.read_header(with_inputs(tmp_path, "(int)" * DEEP + "784")).inputs == 784
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("value, inputs", [("01420", 784), ("0x310", 784), ("( (int) (784u) )", 784), ("0", None)])
def test_octal_hexadecimal_and_wrapped_literals_are_read_as_c_reads_them(tmp_path, value, inputs):
    if inputs is None:
        with pytest.raises(ConfigError, match="QMTIK_I '0' is not a positive integer"):
            c.read_header(with_inputs(tmp_path, value))
    else:
        assert c.read_header(with_inputs(tmp_path, value)).inputs == inputs


@pytest.mark.parametrize(
    "command",
    [
        ["config", "from-header", "qmtik_config.h"],
        ["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt"],
    ],
)
def test_header_commands_exit_2_with_one_line_for_a_5000_digit_integer(tmp_path, monkeypatch, capsys, command):
    from qmtik.cli import main

    monkeypatch.chdir(tmp_path)
    with_inputs(tmp_path, "1" * 5000)
    (tmp_path / "model.bin").write_bytes(bytes(100))
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qmtik: error: C header qmtik_config.h, line 1: QMTIK_I"), err[:300]


@pytest.mark.parametrize("scale", ["1e-50f", "1e39", "1e-40f"])
def test_scales_that_float32_cannot_hold_are_refused_at_their_line(tmp_path, scale):
    path = small_header(tmp_path)
    path.write_text(path.read_text().replace("#define QMTIK_W_SCALE 0.05f", f"#define QMTIK_W_SCALE {scale}"))
    with pytest.raises(ConfigError) as info:
        c.read_header(path)
    assert "line 5: QMTIK_W_SCALE" in str(info.value) and "float32" in str(info.value)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "w, a, expected",
    [
        ("3e38f", "0.125f", "line 5: QMTIK_W_SCALE '3e38f' must lie from 1.18e-38"),
        ("0.05f", "3e38f", "line 6: QMTIK_A_SCALE '3e38f' must lie from 1.18e-38"),
        (
            "1e36f",
            "1e10f",
            "QMTIK_W_SCALE 1e+36 and QMTIK_A_SCALE 1e+10 overflow float32 in the C library's arithmetic",
        ),
        (
            "1e34f",
            "1e-30f",
            "QMTIK_W_SCALE 1e+34 and QMTIK_A_SCALE 1e-30 overflow float32 in the C library's arithmetic",
        ),
    ],
)
@pytest.mark.parametrize("command", ["config", "import"])
def test_scales_whose_use_overflows_are_one_line_without_numpy_warnings(
    tmp_path, monkeypatch, capsys, w, a, expected, command
):
    monkeypatch.chdir(tmp_path)
    small_header(tmp_path, w=w, a=a)
    path = tmp_path / "qmtik_config.h"
    path.write_text(path.read_text().replace(f"{w!r}f", w).replace(f"{a!r}f", a))
    c.write_c_model(tmp_path / "model.bin", random_layers((5, 3, 3, 4)))
    argv = (
        ["config", "from-header", "qmtik_config.h"]
        if command == "config"
        else ["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt"]
    )
    assert expected in one_line(capsys, argv, 2)


# --- bounded: sizes checked before anything is built, numbers read in linear time (issue 15) ----


@pytest.mark.parametrize(
    "value",
    [
        "1" * 50_000 + "x",  # 20,000 digits and an x took 17.8 s, 50,000 over 60 s: the float regex backtracked
        "1" * 25_000 + "." + "1" * 25_000 + "x",
        "1" * 50_000 + "e+",
        "(" * 25_000 + "1" * 50_000 + "x" + ")" * 25_000,
    ],
)
def test_a_50000_digit_scale_that_is_no_number_is_refused_at_its_line(tmp_path, value):
    path = small_header(tmp_path)
    path.write_text(path.read_text().replace("#define QMTIK_W_SCALE 0.05f", f"#define QMTIK_W_SCALE {value}"))
    with pytest.raises(ConfigError) as info:
        c.read_header(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert "line 5: QMTIK_W_SCALE '1111" in message or "line 5: QMTIK_W_SCALE '((((" in message, message
    assert "is not a normal, finite float32 > 0" in message


def test_50000_digits_of_a_valid_scale_are_read_in_full(tmp_path):
    path = small_header(tmp_path)
    scale = "0." + "0" * 49_990 + "1" + "e49990f"  # 1e-49991 * 1e49990 = 0.1
    path.write_text(path.read_text().replace("#define QMTIK_W_SCALE 0.05f", f"#define QMTIK_W_SCALE {scale}"))
    assert c.read_header(path).w_scale == pytest.approx(0.1)


@pytest.mark.parametrize("command", ["config", "import"])
def test_qmtik_l_of_a_billion_is_refused_by_depth_before_any_list_is_built(tmp_path, monkeypatch, capsys, command):
    """QMTIK_L 1000000000 built a 10^9-element list of widths in both commands."""
    monkeypatch.chdir(tmp_path)
    small_header(tmp_path, layers=1_000_000_000)
    c.write_c_model(tmp_path / "model.bin", random_layers((5, 3, 3, 4)))
    argv = (
        ["config", "from-header", "qmtik_config.h"]
        if command == "config"
        else ["import-c-model", "model.bin", "--header", "qmtik_config.h", "-o", "m.qmt"]
    )
    message = one_line(capsys, argv, 2)
    assert "needs 1,000,000,002 layers, the limit is 255, the most the .qmt format holds" in message, message
    assert not (tmp_path / "m.qmt").exists()


def test_a_header_over_the_parameter_limit_names_the_variable_that_raises_it(tmp_path, monkeypatch):
    path = small_header(tmp_path, i=4096, h=4096, layers=1, o=10)  # 4096 * 4096 * 2 + ... > 2^22
    with pytest.raises(ConfigError) as info:
        c.read_header(path)
    assert str(info.value).endswith(
        "the network: needs 33,603,594 parameters, the limit is 4,194,304; raise it with QMTIK_MAX_PARAMETERS"
    )
    monkeypatch.setenv("QMTIK_MAX_PARAMETERS", "40_000_000")
    assert c.read_header(path).widths == (4096, 4096, 4096, 10)
    monkeypatch.setenv("QMTIK_MAX_LAYERS", "2")
    with pytest.raises(ConfigError, match="needs 3 layers, the limit is 2, set by QMTIK_MAX_LAYERS"):
        c.read_header(path)


# hostile edits of a valid header: the reader gives a CHeader or one line of ConfigError
TOKENS = ["(", ")", "(int)", "#", "#define QMTIK_L ", "#if 1\n", "#endif\n", "#undef QMTIK_H\n", "/*", "*/", "//"]
TOKENS += ['"', "'", "\\", "\\\n", "\n", " ", "0x", "e", ".", "f", "1", "9" * 30, "-", "QMTIK_", "_PP", "\x00", "é"]


@st.composite
def mutated_header(draw):
    text = MNIST_HEADER
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.lists(st.sampled_from(TOKENS), max_size=4).map("".join)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
    return text


@pytest.mark.parametrize("use_compiler", [False, True])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_header())
def test_a_mutated_header_gives_a_header_or_one_line(tmp_path, monkeypatch, use_compiler, text):
    if use_compiler and find_compiler("c") is None:
        pytest.skip("needs a C compiler")
    monkeypatch.setattr(
        "qmtik.legacy.header.header_defines", lambda path: c.header_defines(path, use_compiler=use_compiler)
    )
    path = tmp_path / "mutant.h"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    try:
        read = c.read_header(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"C header {path}") and len(str(exc)) < 400, str(exc)
        return
    assert isinstance(read, c.CHeader) and len(read.widths) == read.hh_layers + 3 <= 256
