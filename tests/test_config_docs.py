"""config_docs.py: the starter config and the config reference page, generated from config.py."""

from pathlib import Path

from qmtik import Config
from qmtik.config import DIGITS_STARTER, tomllib
from qmtik.config_docs import reference_markdown, starter_toml

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_the_starter_toml_is_the_defaults():
    assert Config.from_dict(tomllib.loads(starter_toml())) == Config()


def test_the_starter_toml_with_changes_applies_and_marks_them():
    text = starter_toml(DIGITS_STARTER)
    config = Config.from_dict(tomllib.loads(text))
    assert config.training.epochs == 30 and config.training.batch_size == 32
    assert config.training.learning_rate == 0.003
    assert config.network == Config().network
    assert "[default 10]" in text and "[default 128]" in text


def test_docs_config_md_is_the_generated_reference():
    assert DOCS.is_file(), "generate it: PYTHONPATH=src python -m qmtik.config_docs > docs/config.md"
    assert DOCS.read_text(encoding="utf-8") == reference_markdown()


def test_the_reference_lists_every_key():
    text = reference_markdown()
    for section, values in Config().to_dict().items():
        keys = [section] if not isinstance(values, dict) else [f"{section}.{k}" for k in values]
        for key in keys:
            assert f"| `{key}` |" in text


def test_toml_value_writes_literals_toml_reads_back():
    from qmtik.config_docs import toml_value

    values = {"b": True, "f": False, "i": -3, "x": 0.05, "s": 'a "quoted" \\ name', "l": [1, 2.5, "c"], "t": (3, 4)}
    text = "\n".join(f"{k} = {toml_value(v)}" for k, v in values.items())
    assert tomllib.loads(text) == {**values, "t": [3, 4]}
    assert toml_value(True) == "true"  # not Python's True, which TOML refuses
