"""The documentation cannot drift: the tutorial's numbers are doctests, every config key a page
names exists, every TOML block is a valid config, every relative link leads to a file."""

import dataclasses
import doctest
import re
from pathlib import Path

import pytest

from qmtik.config import SECTIONS, Config, tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIAL = DOCS / "tutorial.md"
MIGRATION = DOCS / "migration.md"
OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def pages():
    """Every markdown page: docs/*.md and the README."""
    return sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]


# --- the tutorial's worked example -------------------------------------------------------------


def run_doctests(text: str, name: str) -> doctest.TestResults:
    """Run the >>> examples of a markdown text, as doctest.testfile does, without printing."""
    test = doctest.DocTestParser().get_doctest(text, {}, name, name, 0)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    runner.run(test, out=lambda _: None)
    return runner.summarize(verbose=False)


def test_tutorial_examples_run_and_agree():
    failed, attempted = doctest.testfile(
        str(TUTORIAL), module_relative=False, optionflags=OPTIONS, encoding="utf-8", report=False
    )
    assert failed == 0
    assert attempted >= 40, "the worked example lost its >>> lines"


def test_tutorial_check_can_fail():
    """A wrong number in the page is caught: the check is not vacuous."""
    text = TUTORIAL.read_text(encoding="utf-8")
    assert "[13689]" in text
    failed, _ = run_doctests(text.replace("[13689]", "[13690]"), "tutorial (altered)")
    assert failed >= 1


# --- config keys named in the docs -------------------------------------------------------------

KEY_SPAN = re.compile(r"`([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)(?:\s*=[^`\n]*)?`")
FILE_SUFFIXES = {"toml", "csv", "bin", "qmt", "h", "c", "md", "py", "npz", "npy", "gz", "json", "idx", "png"}
MODULES = {"qmtik", "np", "numpy", "q", "intref"}


def named_keys(text: str) -> set:
    """Every `section.key` (or `section.key = value`) in backticks, leaving out file names and
    Python names such as `qmtik.load_model`."""
    return {
        f"{section}.{key}"
        for section, key in KEY_SPAN.findall(text)
        if key not in FILE_SUFFIXES and section not in MODULES
    }


def unknown_keys(keys) -> list:
    """The keys that are not fields of qmtik's Config sections."""
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}
    return sorted(k for k in keys if k.split(".")[1] not in fields.get(k.split(".")[0], ()))


def test_migration_names_only_real_config_keys():
    keys = named_keys(MIGRATION.read_text(encoding="utf-8"))
    assert len(keys) >= 20, f"the migration page should map the C library's defines to keys, found {sorted(keys)}"
    assert unknown_keys(keys) == []


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_page_names_only_real_config_keys(page):
    assert unknown_keys(named_keys(page.read_text(encoding="utf-8"))) == []


def test_key_check_can_fail():
    keys = named_keys("set `network.hiden = [8]` and `train.epochs`, not `net.toml` or `qmtik.load_model`")
    assert keys == {"network.hiden", "train.epochs"}
    assert unknown_keys(keys) == ["network.hiden", "train.epochs"]


TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_toml_blocks_are_valid_configs(page):
    for block in TOML_BLOCK.findall(page.read_text(encoding="utf-8")):
        Config.from_dict(tomllib.loads(block))  # raises ConfigError naming a bad key or value


def test_migration_config_is_the_c_librarys_mnist_example(monkeypatch):
    """The page's config is exactly what `config from-header` makes of the C library's own
    examples/mnist_784/qmtik_config.h (a copy in tests/data): no scale or define of its own."""
    from qmtik.legacy import header_toml

    (block,) = TOML_BLOCK.findall(MIGRATION.read_text(encoding="utf-8"))
    monkeypatch.chdir(ROOT / "tests" / "data" / "qmtik-h-example")
    assert block == header_toml("qmtik_config.h")
    config = Config.from_dict(tomllib.loads(block))
    assert config.network.widths == (784, 256, 256, 256, 10)  # I=784, H=256, L=2, O=10
    assert config.quantization.weight_scale == 0.05 and config.quantization.activation_scale == 0.5
    assert "BATCH_SIZE" not in block and config.data.input_range == (0.0, 255.0)


# --- relative links ----------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)


def relative_links(text: str) -> list:
    """The link targets of a markdown text that are paths (no scheme, not only an #anchor),
    without their #fragment; code blocks and code spans are left out."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = LINK.findall(text) + REFERENCE.findall(text)
    paths = [t.split("#")[0] for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]
    return [p for p in paths if p]


def broken_links(page: Path, text: str | None = None) -> list:
    text = page.read_text(encoding="utf-8") if text is None else text
    return [t for t in relative_links(text) if not (page.parent / t).exists()]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_relative_links_lead_to_files(page):
    assert broken_links(page) == []


def test_link_check_finds_links_and_can_fail():
    readme = ROOT / "README.md"
    assert "docs/quantization.md" in relative_links(readme.read_text(encoding="utf-8"))
    assert "c-api.md" in relative_links(MIGRATION.read_text(encoding="utf-8"))
    text = (
        "[a](missing.md) [b](https://example.org/x.md) [c](#top) `[d](nope.md)` "
        "[e](../README.md#results)\n[f]: gone/file.md\n```\n[g](nope2.md)\n```\n"
    )
    assert broken_links(DOCS / "x.md", text) == ["missing.md", "gone/file.md"]


# --- the module map ----------------------------------------------------------------------------

ARCHITECTURE = DOCS / "architecture.md"
PACKAGE = ROOT / "src" / "qmtik"


def named_modules(text: str) -> set:
    """The package paths a page names in backticks: `integer_model.py`, `backends/`, `templates/*.h.in`."""
    return set(re.findall(r"`((?:[a-z_0-9]+/)*(?:[a-z_0-9]+\.py|[a-z_0-9]+/)(?:\*\.h\.in)?)`", text))


def missing_modules(text: str) -> list:
    """The names of named_modules(text) (tests aside) that match no file or folder in the package."""
    return sorted(
        name
        for name in named_modules(text)
        if not name.startswith("tests/") and not any(PACKAGE.rglob(name.rstrip("/")))
    )


def test_the_module_map_names_only_modules_that_exist():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert len(named_modules(text)) >= 20, "the module map lost its modules"
    assert missing_modules(text) == []


def test_the_module_map_check_can_fail():
    assert missing_modules("`intref.py`, `backends/`, `gone.py`, `nowhere/`") == ["gone.py", "nowhere/"]


def test_every_module_is_on_the_map():
    named = {Path(name).name for name in named_modules(ARCHITECTURE.read_text(encoding="utf-8"))}
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules - named == set()
