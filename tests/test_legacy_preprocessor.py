"""qmtik.legacy.preprocessor: the defines a header leaves in force, through the real
preprocessor (bounded) and through the reader used without a compiler (issue 12)."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from legacy_helpers import EXAMPLE, MNIST_HEADER, header, one_line
from qmtik import legacy as c
from qmtik.c_check import find_compiler
from qmtik.errors import ConfigError
from qmtik.legacy import preprocessor

BIG_MODEL = MNIST_HEADER.replace(
    "#define QMTIK_H 256\n", "#define QMTIK_H 32\n#ifdef QMTIK_BIG_MODEL\n#define QMTIK_H 1024\n#endif\n"
)
needs_cc = pytest.mark.skipif(find_compiler("c") is None, reason="needs a C compiler")


@pytest.fixture(params=["compiler", "fallback"])
def reader(request, monkeypatch):
    """Run a test through the real preprocessor and through the reader used without a compiler."""
    if request.param == "compiler" and find_compiler("c") is None:
        pytest.skip("needs a C compiler")
    if request.param == "fallback":
        monkeypatch.setattr(preprocessor, "find_compiler", lambda language="c": None)
    return request.param


def test_an_ifdef_branch_not_taken_is_not_read(tmp_path, reader):
    """The define under #ifdef QMTIK_BIG_MODEL (not defined) was read: 1024 where C builds 32."""
    assert c.read_header(header(tmp_path, BIG_MODEL)).hidden == 32
    assert c.read_header(header(tmp_path, "#define QMTIK_BIG_MODEL\n" + BIG_MODEL)).hidden == 1024


@pytest.mark.parametrize(
    "text, hidden",
    [
        ("#ifndef QMTIK_CONFIG_H\n#define QMTIK_CONFIG_H\n{}#endif\n", 256),  # an include guard
        ("{}#undef QMTIK_H\n#define QMTIK_H 64\n", 64),
        ("{}#ifdef QMTIK_H\n#undef QMTIK_H\n#define QMTIK_H 48\n#else\n#define QMTIK_H 8\n#endif\n", 48),
    ],
)
def test_undef_else_and_include_guards_are_read_alike_by_both_readers(tmp_path, reader, text, hidden):
    h = c.read_header(header(tmp_path, text.format(MNIST_HEADER)))
    assert h.hidden == hidden


@needs_cc
@pytest.mark.parametrize(
    "text, hidden",
    [
        ("#if 0\n#define QMTIK_H 1024\n#elif defined(__STDC__) && QMTIK_L == 2\n#define QMTIK_H 96\n#endif\n", 96),
        ("#if QMTIK_L > 5\n#define QMTIK_H 1024\n#else\n#define QMTIK_H 40\n#endif\n", 40),
    ],
)
def test_if_expressions_are_evaluated_by_the_preprocessor_as_c_does(tmp_path, text, hidden):
    base = MNIST_HEADER.replace("#define QMTIK_H 256\n", "")
    path = header(tmp_path, base + text)
    assert c.read_header(path).hidden == hidden
    program = tmp_path / "show.c"  # the C build itself, as an independent oracle
    program.write_text('#include <stdio.h>\n#include "qmtik_config.h"\nint main(void) { printf("%d", QMTIK_H); }\n')
    subprocess.run([find_compiler("c"), str(program), "-o", str(tmp_path / "show")], check=True)
    assert subprocess.run([str(tmp_path / "show")], capture_output=True, text=True, check=True).stdout == str(hidden)


@pytest.mark.parametrize(
    "text, words",
    [
        ("#if QMTIK_L > 1\n#define QMTIK_H 8\n#endif\n", "line 17: #if cannot be evaluated without a C compiler"),
        ("#ifdef __STDC__\n#define QMTIK_H 8\n#endif\n", "line 17: #ifdef __STDC__: cannot be evaluated without a C"),
        ("#ifdef A\n#elif B\n#endif\n", "line 18: #elif cannot be evaluated without a C compiler"),
        ("#ifdef A\n", "#if without #endif"),
    ],
)
def test_without_a_compiler_a_conditional_that_cannot_be_evaluated_is_one_line(tmp_path, monkeypatch, text, words):
    monkeypatch.setattr(preprocessor, "find_compiler", lambda language="c": None)
    with pytest.raises(ConfigError) as info:
        c.read_header(header(tmp_path, MNIST_HEADER + text))
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        '#include "/dev/zero"',
        "#include <stdio.h>",
        '%:include "x.h"',
        '#/* a\n */ include "/dev/zero"',
        '#inc\\\nlude "/dev/zero"',
        "#include_next <a.h>",
        '#embed "/dev/zero"',
        '#pragma GCC dependency "/dev/zero"',
    ],
)
def test_a_directive_that_reads_another_file_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys, line):
    """#include "/dev/zero" made gcc ask for 2 GB; nothing is run for such a header."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preprocessor.subprocess, "run", lambda *a, **k: pytest.fail("the preprocessor ran"))
    header(tmp_path, "#define QMTIK_I 784\n" + line + "\n")
    message = one_line(capsys, ["config", "from-header", "qmtik_config.h"], 2)
    assert "qmtik_config.h, line 2: #" in message and "is refused: config from-header reads one file" in message


@needs_cc
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_the_preprocessor_runs_under_a_memory_limit(tmp_path):
    """Were the pre-scan bypassed, gcc's 2 GB request for /dev/zero fails under the 512 MB limit."""
    with pytest.raises(ConfigError, match="the C preprocessor refused it: .*memory"):
        preprocessor.preprocessed_defines("h.h", b'#include "/dev/zero"\n', find_compiler("c"))


@needs_cc
def test_preprocessor_errors_are_one_line_naming_the_header_and_line(tmp_path):
    path = header(tmp_path, MNIST_HEADER + "#ifndef QMTIK_BIG_MODEL\n#error set QMTIK_BIG_MODEL\n#endif\n")
    with pytest.raises(ConfigError, match=r"qmtik_config.h: the C preprocessor refused it: line 18: #error set QMTIK"):
        c.read_header(path)


def test_a_header_larger_than_the_cap_is_refused_unread(tmp_path):
    path = header(tmp_path, MNIST_HEADER + "//" + "x" * preprocessor.MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        c.read_header(path)


def test_the_c_librarys_example_header_is_read_as_the_c_library_builds_it(reader):
    h = c.read_header(EXAMPLE / "qmtik_config.h")
    assert h.widths == (784, 256, 256, 256, 10) and (h.w_scale, h.a_scale) == (0.05, 0.5)
    assert (h.activation, h.output, h.cost, h.optimizer) == ("leaky_relu", "softmax", "cross_entropy", "adam")
    assert "QMTIK_BATCH_SIZE" not in h.numbers and h.numbers["QMTIK_EPOCHS"] == 8


# --- linear time (issue 15) --------------------------------------------------------------------


@pytest.mark.parametrize("quote", ['"', "'"])
def test_an_unterminated_literal_of_escaped_quotes_is_scanned_once(quote):
    """The comment-and-literal regex retried every escaped quote to the line's end: 20,000 of
    them took 6 s, 200,000 would take ten minutes. The line comes back as it was (an
    unterminated literal is ordinary text), and the comment after the next line is still one."""
    line = quote + ("\\" + quote) * 200_000
    lines = preprocessor.logical_lines(line + "\n#define QMTIK_H 3 /* three */\n")
    assert lines == [(1, line), (2, "#define QMTIK_H 3  "), (3, "")]


def test_a_header_of_200000_escaped_quotes_is_read_by_both_readers(tmp_path):
    path = header(tmp_path, MNIST_HEADER + '"' + '\\"' * 200_000 + "\n")
    assert c.read_header(path).hidden == 256
    assert preprocessor.fallback_defines(path, path.read_text())["QMTIK_H"] == (2, "256")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=['"', "'", "/", "*", "\\", "\n", "a", " "], max_size=40))
def test_the_linear_scanner_finds_what_the_regex_finds(text):
    found = [(m.start(), m.end()) for m in preprocessor.COMMENT_OR_LITERAL.finditer(text)]
    assert list(preprocessor.comments_and_literals(text)) == found
