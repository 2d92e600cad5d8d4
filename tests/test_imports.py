"""The package's imports follow its pipeline: read from the source (every import, those inside
functions too), no cycle, and no module imports a stage above its own.

The stages, lowest first; a module may import its own stage and the stages before it. The
same table is docs/architecture.md's rule, so a change to one is a change to both.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qmtik"

FROM_ELSEWHERE = {"onnx_graph", "onnx_layers", "onnx_import", "calibrate", "compare", "export_onnx"}  # ONNX in, out
STAGES = [  # (stage, its modules), lowest first
    ("base", {"errors", "version", "parsing", "output_files", "progress", "paths"}),
    ("arithmetic", {"quantization", "functions", "spatial", "conv_ops", "fused", "fused_windows", "_fused"}),
    ("spec", {"intref", "intref_windows", "backends"}),  # a package's modules are on its stage
    ("prediction", {"validate", "head", "limits"}),
    (
        "integer model",
        {"integer_model", "qmtfile_windows", "qmtfile_layout", "qmtfile_reader", "qmtfile", "export_c", "c_check"}
        | {"targets", "cross", "emulate"}
        | {"selftest", "selftest_emulate"},
    ),
    (
        "configuration",
        {"data_formats", "config_values", "config_layers", "config_sections", "config", "config_docs"}
        | {"config_deploy", "config_tune"},
    ),
    ("data", {"download", "data"}),
    (
        "training",
        {"batch_norm", "layers", "conv_step", "window_layers", "passes", "optimizers", "checkpoint", "training"}
        | {"network"},
    ),
    (
        "extras",
        {"plots", "demo", "legacy", "workflow", "budget"}  # legacy: the qmtik.h carry-over
        | {"tune_space", "tune", "tune_front"}
        | FROM_ELSEWHERE,
    ),
    ("public surface", {"__init__"}),
    ("command line", {"cli", "__main__"}),
]
# Training reaches the integer model only through these names: Network.quantize() makes a
# QuantizedModel, and a checkpoint tells itself from a .qmt file by the file's magic.
TRAINING_MAY_USE = {("integer_model", "QuantizedModel"), ("qmtfile", "MAGIC")}


def module_name(path: Path) -> str:
    """'backends.numpy' for src/qmtik/backends/numpy.py, 'backends' for its __init__.py."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set:
    """{(module, name)} of every qmtik import in the file, at any depth (name None for a whole module).

    `from . import x` names module x when x is a module, else the package itself."""
    package = list(path.relative_to(PACKAGE).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("qmtik")):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                base += node.module.split(".") if node.module else []
            else:
                base = node.module.split(".")[1:]
            for alias in node.names:
                submodule = ".".join(base + [alias.name])
                if known(submodule):
                    found.add((submodule, None))
                else:
                    found.add((".".join(base) or "__init__", alias.name))
        elif isinstance(node, ast.Import):
            found |= {
                (".".join(a.name.split(".")[1:]) or "__init__", None)
                for a in node.names
                if a.name.split(".")[0] == "qmtik"
            }
    return found


def known(name: str) -> bool:
    """A module of the package: a .py file, a package, or the C source of a compiled module."""
    path = PACKAGE / name.replace(".", "/")
    return any(p.is_file() for p in (path.with_suffix(".py"), path / "__init__.py", path.with_suffix(".c")))


def graph() -> dict:
    """{module: {(imported module, name)}} over the whole package (a compiled module imports nothing)."""
    compiled = {module_name(p): set() for p in sorted(PACKAGE.rglob("*.c"))}
    return compiled | {
        module_name(p): {(m, n) for m, n in imports_of(p) if m != module_name(p)} for p in sorted(PACKAGE.rglob("*.py"))
    }


def stage_of(module: str) -> int:
    for number, (_, modules) in enumerate(STAGES):
        if module in modules or module.split(".")[0] in modules:
            return number
    raise AssertionError(f"{module}: on no stage of STAGES")


def cycles(edges: dict) -> list:
    """Every module that reaches itself, with one path that shows it."""
    found = []
    for start in sorted(edges):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for target in sorted({m for m, _ in edges.get(node, ())}):
                if target == start:
                    found.append(" -> ".join(path + [start]))
                    stack = []
                    break
                if target not in seen:
                    seen.add(target)
                    stack.append((target, path + [target]))
    return found


def upward(edges: dict) -> list:
    """Imports of a later stage, and training's imports of the integer model beyond TRAINING_MAY_USE."""
    bad = []
    training, model = (
        next(i for i, (s, _) in enumerate(STAGES) if s == name) for name in ("training", "integer model")
    )
    for module, imported in sorted(edges.items()):
        for target, name in sorted(imported, key=str):
            if stage_of(target) > stage_of(module):
                bad.append(f"{module} ({STAGES[stage_of(module)][0]}) imports {target} ({STAGES[stage_of(target)][0]})")
            elif stage_of(module) == training and stage_of(target) == model and (target, name) not in TRAINING_MAY_USE:
                bad.append(f"{module} (training) imports {target}.{name} (integer model)")
    return bad


def test_every_module_is_on_a_stage():
    for module in graph():
        stage_of(module)


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_module_imports_a_later_stage():
    assert upward(graph()) == []


def test_the_shipped_model_reads_neither_config_nor_data_nor_training():
    """What ships (the spec, its backends, the integer model, its file and C) imports nothing of
    configuration, data loading or training, nor anything that does."""
    edges = graph()
    shipped = {
        "intref",
        "backends",
        "integer_model",
        "qmtfile",
        "qmtfile_layout",
        "qmtfile_reader",
        "qmtfile_windows",
        "export_c",
        "c_check",
        "selftest",
    }
    reached, todo = set(), list(shipped)
    while todo:
        for target, _ in edges[todo.pop()]:
            if target not in reached:
                reached.add(target)
                todo.append(target)
    forbidden = {
        "config",
        "data_formats",
        "data",
        "download",
        "layers",
        "training",
        "network",
        "optimizers",
        "checkpoint",
    }
    assert reached & forbidden == set()


def test_the_checks_can_fail():
    """A cycle, an upward import and a training import of a model internal are each caught."""
    assert cycles({"a": {("b", None)}, "b": {("c", "x")}, "c": {("a", None)}}) == [
        "a -> b -> c -> a",
        "b -> c -> a -> b",
        "c -> a -> b -> c",
    ]
    assert upward({"integer_model": {("data", "check_inputs")}}) == [
        "integer_model (integer model) imports data (data)"
    ]
    assert upward({"layers": {("integer_model", "integer_scores")}}) == [
        "layers (training) imports integer_model.integer_scores (integer model)"
    ]
    assert upward({"network": {("integer_model", "QuantizedModel")}}) == []


def test_lazy_imports_are_read():
    """An import inside a function counts as much as one at the top."""
    assert ("download", "find_dataset") in imports_of(PACKAGE / "data.py") or ("download", None) in {
        (m, None) for m, _ in imports_of(PACKAGE / "data.py")
    }
