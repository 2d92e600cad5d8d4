"""Every exception qmtik raises on purpose is a QmtikError defined in errors.py and exported by
the package, so that a caller can catch each one by a name the package shows."""

import ast
import inspect
from pathlib import Path

import qmtik
from qmtik import errors

PACKAGE = Path(qmtik.__file__).parent


def error_classes_outside(family: set, package: Path = PACKAGE) -> list:
    """'module.py: Name' for every class outside errors.py whose base is one of family (read
    from the source, so a module that is never imported counts too)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "errors.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", None) for b in node.bases}
                if bases & family:
                    found.append(f"{path.relative_to(package).as_posix()}: {node.name}")
    return found


def family() -> set:
    return {name for name, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.QmtikError)}


def test_every_qmtik_error_is_defined_in_errors_py():
    assert error_classes_outside(family()) == []


def test_every_qmtik_error_is_exported():
    for name in family():
        assert name in qmtik.__all__ and getattr(qmtik, name) is getattr(errors, name), name


def test_the_check_can_fail(tmp_path):
    (tmp_path / "errors.py").write_text("class QmtikError(Exception): pass\n")
    (tmp_path / "other.py").write_text(
        "from .errors import QmtikError\nclass LateError(QmtikError, ValueError): pass\n"
    )
    assert error_classes_outside({"QmtikError"}, tmp_path) == ["other.py: LateError"]


def test_the_errors_the_issue_named_are_among_them():
    """ExportError, CompilerError and OutputError once lived beside their code, unexported."""
    assert {"ExportError", "CompilerError", "OutputError", "NotFittedError", "UsageError", "CheckFailed"} <= family()
    assert issubclass(qmtik.OutputError, OSError) and issubclass(qmtik.NotFittedError, AttributeError)
