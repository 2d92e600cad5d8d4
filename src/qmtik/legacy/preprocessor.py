"""The #defines a C header leaves in force, as the C library's build sees them.

A qmtik.h config header may choose its sizes under `#ifdef`/`#if`/`#else`, or `#undef` a
define, so reading every `#define` line in turn can take a value the C build never sees.
`header_defines` asks the real C preprocessor when there is a compiler (`cc -dD -E`), bounded:
one file only (`#include` and the directives that read other files refused before it runs), no
system includes, no system-specific macros (`-undef`: the standard ones such as `__STDC__`
stay), a time limit, a memory limit and an input size limit. Without a compiler, a small reader
evaluates `#ifdef`/`#ifndef`/`#else`/`#endif`/`#undef` on ordinary names and refuses, in one
line, every conditional it cannot evaluate exactly (`#if`, `#elif`, a reserved name).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

from ..c_check import find_compiler
from ..errors import ConfigError

MAX_BYTES = 1 << 20  # a config header is a few hundred bytes; 1 MiB leaves room for comments
TIMEOUT = 10  # seconds the preprocessor may take
MEMORY = 512 << 20  # bytes of address space it may map (gcc asks 2 GB for #include "/dev/zero")
FLAGS = ["-dD", "-E", "-undef", "-nostdinc", "-std=gnu99", "-x", "c", "-"]  # gnu99: no trigraphs
ALLOWED = {
    "define",
    "undef",
    "if",
    "ifdef",
    "ifndef",
    "elif",
    "elifdef",
    "elifndef",
    "else",
    "endif",
    "error",
    "warning",
    "line",
    "",
}
LINEMARKER = re.compile(r'#\s+(\d+)\s+"(.*)"')
DEFINE = re.compile(r"#define\s+([A-Za-z_]\w*)(\()?(.*)$")
UNDEF = re.compile(r"#undef\s+([A-Za-z_]\w*)")
COMMENT_OR_LITERAL = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?(?:\*/|\Z)', re.DOTALL)
DIRECTIVE = re.compile(r"[ \t\f\v]*(?:#|%:)[ \t\f\v]*([A-Za-z_]\w*)?(.*)$")  # %: is the # digraph


def header_defines(path, use_compiler: bool = True) -> dict:
    """{name: (line number, value text)} of the object-like macros the header defines and leaves
    defined; the real preprocessor when a C compiler is found (and use_compiler), else the
    fallback reader. Any failure is one ConfigError line naming the header."""
    data = read_bytes(path)
    text = data.decode("utf-8", errors="replace")
    refuse_other_files(path, text)
    cc = find_compiler("c") if use_compiler else None
    return preprocessed_defines(path, data, cc) if cc else fallback_defines(path, text)


def read_bytes(path) -> bytes:
    """The header's bytes, at most MAX_BYTES (a device or a huge file is refused, not read whole)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"C header {path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"C header {path}: larger than {MAX_BYTES >> 20} MiB; a config header is a few defines")
    return data


def logical_lines(text: str) -> list:
    """(first physical line number, text) of each line after the preprocessor's first phases:
    backslash-newline joined (a backslash followed by blanks too, as gcc allows), then each
    comment replaced by a space; a comment spanning lines joins them, as it does for the
    preprocessor, and the lines it swallowed come back empty after it (numbers stay)."""
    starts, lines, current, start = [], [], "", 1
    for number, line in enumerate(text.split("\n"), 1):
        spliced = re.match(r"(.*)\\[ \t\f\v\r]*$", line, re.DOTALL)
        current += spliced.group(1) if spliced else line
        if not spliced:
            starts.append(start)
            lines.append(current)
            start, current = number + 1, ""
    if current:
        starts.append(start)
        lines.append(current)
    joined, pieces, owed, pos = "\n".join(lines), [], 0, 0
    for start, end in [*comments_and_literals(joined), (len(joined), None)]:
        gap = joined[pos:start]
        if owed and "\n" in gap:
            cut = gap.index("\n")
            gap, owed = gap[:cut] + "\n" * owed + gap[cut:], 0
        pieces.append(gap)
        if end is not None:
            token = joined[start:end]
            pieces.append(" " if token[0] == "/" else token)
            owed += token.count("\n") if token[0] == "/" else 0
            pos = end
    return list(zip(starts, "".join(pieces).split("\n")))


def comments_and_literals(text: str):
    """(start, end) of each comment, string and character literal of the text, in order: what
    COMMENT_OR_LITERAL.finditer finds, in linear time. The regular expression retries every
    quote of an unterminated literal, each time to the end of its line (`"\\"\\"\\"...`: the
    square of the line's length); here a literal's end, once found from a position inside it,
    is remembered for that position, so each character is scanned at most once per quote."""
    ends = {'"': {}, "'": {}}  # quote: {position inside a literal: its end, or -1 unterminated}
    pos = 0
    while True:
        m = _OPENER.search(text, pos)
        if not m:
            return
        start, char = m.start(), m.group()
        if char == "/":
            follow = text[start + 1 : start + 2]
            if follow == "/":
                stop = text.find("\n", start)
                end = len(text) if stop < 0 else stop
            elif follow == "*":
                stop = text.find("*/", start + 2)
                end = len(text) if stop < 0 else stop + 2
            else:
                pos = start + 1
                continue
        else:
            end = _literal_end(text, start, char, ends[char])
            if end < 0:  # unterminated: the quote is an ordinary character
                pos = start + 1
                continue
        yield start, end
        pos = end


_OPENER = re.compile(r"[\"'/]")


def _literal_end(text: str, start: int, quote: str, known: dict) -> int:
    """The end (after the closing quote) of the literal opened by the quote at start, or -1
    when it ends at a line's end or the text's first: '\\' takes the next character, whatever
    it is. known holds the answers for positions scanned before, and gets this scan's."""
    path, j, size = [], start + 1, len(text)
    while True:
        if j in known:
            end = known[j]
            break
        path.append(j)
        char = text[j] if j < size else "\n"
        if char == quote:
            end = j + 1
            break
        if char == "\n" or (char == "\\" and j + 1 >= size):
            end = -1
            break
        j += 2 if char == "\\" else 1
    for p in path:
        known[p] = end
    return end


def directives(text: str) -> list:
    """(line number, directive name, rest) of every preprocessing directive of the text."""
    found = []
    for number, line in logical_lines(text):
        m = DIRECTIVE.match(line)
        if m:
            found.append((number, m.group(1) or "", m.group(2)))
    return found


def refuse_other_files(path, text: str) -> None:
    """Refuse, before any preprocessor runs, a directive that would read another file
    (#include, #include_next, #import, #embed, a #pragma other than once) or is unknown:
    `config from-header` reads the one header it is given."""
    for number, name, rest in directives(text):
        if name in ALLOWED or (name == "pragma" and rest.split() == ["once"]):
            continue
        raise ConfigError(
            f"C header {path}, line {number}: #{name[:40]} is refused: config from-header reads one "
            "file, with #define, #undef and conditionals only"
        )


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    """Cap the preprocessor's address space (preexec_fn: in the child, before exec)."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    except (ImportError, ValueError, OSError):
        pass  # no such limit on this system: the timeout holds


def preprocessed_defines(path, data: bytes, cc: str) -> dict:
    """The defines in force after `cc -dD -E` over the header's bytes (on stdin, in an empty
    folder, without system includes or system-specific macros), with their lines from the
    preprocessor's line markers."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            run = subprocess.run(
                [cc, *FLAGS],
                input=data,
                capture_output=True,
                cwd=folder,
                timeout=TIMEOUT,
                check=False,
                preexec_fn=_limit_memory if sys.platform != "win32" else None,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(f"C header {path}: the C preprocessor took more than {TIMEOUT} s") from None
        except OSError as exc:
            raise ConfigError(f"C header {path}: the C preprocessor {cc} did not run ({exc.strerror or exc})") from None
    if run.returncode != 0:
        said = [line.strip() for line in run.stderr.decode(errors="replace").splitlines() if line.strip()]
        first = ([line for line in said if "error" in line] or said or [f"exit status {run.returncode}"])[0]
        first = re.sub(r"^<stdin>:(\d+):(\d+:)?\s*(fatal )?error:\s*", r"line \1: ", first.strip())
        raise ConfigError(f"C header {path}: the C preprocessor refused it: {first[:200]}")
    return defines_from_output(run.stdout.decode("utf-8", errors="replace"))


def defines_from_output(output: str) -> dict:
    """{name: (line, value)} from `-dD -E` output: defines and undefs in order, the header's
    own only (the line markers name "<stdin>"), line numbers counted from the markers."""
    out, file, line = {}, "", 0
    for text in output.split("\n"):
        marker = LINEMARKER.match(text)
        if marker:
            file, line = marker.group(2), int(marker.group(1))
            continue
        if file == "<stdin>":
            define, undef = DEFINE.match(text), UNDEF.match(text)
            if define and not define.group(2):
                out[define.group(1)] = (line, define.group(3).strip())
            elif define or undef:
                out.pop((define or undef).group(1), None)
        line += 1
    return out


def fallback_defines(path, text: str) -> dict:
    """The defines in force, read without a preprocessor: #define, #undef, and #ifdef/#ifndef/
    #else/#endif on names the header itself defines or not (exact: nothing else defines them
    here); #if, #elif and tests of reserved names (__STDC__ ...) are refused, not guessed."""
    out, active = {}, [True]  # active: whether each open conditional's branch is taken
    for number, name, rest in directives(text):
        where = f"C header {path}, line {number}: #{name[:40]}"
        if name in ("ifdef", "ifndef"):
            tested = rest.split()[0] if rest.split() else ""
            if re.fullmatch(r"__\w*|_[A-Z]\w*", tested) or not re.fullmatch(r"[A-Za-z_]\w*", tested):
                raise ConfigError(
                    f"{where} {tested}: cannot be evaluated without a C compiler (none found: "
                    "set CC, or install gcc or clang)"
                )
            active.append(active[-1] and ((tested in out) == (name == "ifdef")))
        elif name == "else" and len(active) > 1:
            active[-1] = active[-2] and not active[-1]
        elif name == "endif" and len(active) > 1:
            active.pop()
        elif name in ("if", "elif", "elifdef", "elifndef", "else", "endif"):
            raise ConfigError(
                f"{where} cannot be evaluated without a C compiler (none found: set CC, or install gcc or clang)"
                if name not in ("else", "endif")
                else f"{where} without #if"
            )
        elif not active[-1]:
            continue
        elif name == "undef":
            out.pop(rest.split()[0] if rest.split() else "", None)
        elif name == "define":
            m = re.match(r"\s+([A-Za-z_]\w*)(\()?(.*)$", rest)
            if m:
                out[m.group(1)] = (number, m.group(3).strip()) if not m.group(2) else None
        elif name in ("error",):
            raise ConfigError(f"{where}{rest[:200]}")
    if len(active) > 1:
        raise ConfigError(f"C header {path}: #if without #endif")
    return {k: v for k, v in out.items() if v is not None}
