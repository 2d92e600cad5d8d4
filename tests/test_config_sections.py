"""config_sections.py: its module docstring says what SECTIONS holds."""

import re

from qmtik import config_sections

WORDS = {4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def sections_said(doc: str) -> tuple:
    """(the number word of the docstring's first line, the [section]s it names in order)."""
    count = re.match(r"\s*The (\w+) sections of a config", doc)
    return (count.group(1) if count else None), re.findall(r"\[(\w+)\]", doc)


def test_the_docstring_names_every_section_in_order_and_counts_them():
    word, named = sections_said(config_sections.__doc__)
    assert named == list(config_sections.SECTIONS)
    assert word == WORDS[len(config_sections.SECTIONS)]


def test_the_docstring_check_can_fail():
    """What the docstring said before [deploy] and [tune]: four sections, and a fifth."""
    word, named = sections_said(
        "The four sections of a config ([network], [quantization], [training], [data]); [limits]."
    )
    assert word != WORDS[len(config_sections.SECTIONS)] and named != list(config_sections.SECTIONS)
