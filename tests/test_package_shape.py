"""The package keeps a shape a reader can hold: modules of about 400 lines at most.

Sizes are counted after `ruff format`. A module over the budget may not grow: its ceiling is its
size when the budget came in, and the ceiling comes down as it is split (cli.py into commands,
config.py's doc generators out, c_library.py into legacy/). A new module over the budget fails at once.
"""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qmtik"
BUDGET = 400
CEILINGS = {  # modules over the budget today: they may shrink, never grow
}


def lines_of(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def over_budget(package: Path = PACKAGE) -> dict:
    """{relative path: lines} of the modules whose size exceeds their allowance."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        allowed = CEILINGS.get(name, BUDGET)
        if lines_of(path) > allowed:
            out[name] = lines_of(path)
    return out


def test_every_module_keeps_to_its_budget():
    assert over_budget() == {}


def test_the_ceilings_name_only_modules_still_over_budget():
    """A module back under the budget leaves the list, so the budget holds it from then on."""
    for name in CEILINGS:
        path = PACKAGE / name
        assert not path.exists() or lines_of(path) > BUDGET, f"{name} is within budget: drop its ceiling"


def test_the_budget_check_can_fail(tmp_path):
    (tmp_path / "big.py").write_text("x = 1\n" * (BUDGET + 1))
    (tmp_path / "small.py").write_text("x = 1\n")
    assert over_budget(tmp_path) == {"big.py": BUDGET + 1}
