"""The floors of the code base, held by reading its source: which folder may import which, no
private Amaranth API, one cycle model, no long functions.

Floors, bottom up: the contract (``ternpe/*.py``: plain Python and numpy), then ``model/``
(PyTorch, never Amaranth) and ``hw/`` (Amaranth, never torch), then ``flow/`` (tools, simulators,
boards), then the CLI (``ternpe/cli/``). A floor imports only from floors below it."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = {"contract": ROOT / "ternpe", "model": ROOT / "model", "hw": ROOT / "hw", "flow": ROOT / "flow",
           "cli": ROOT / "ternpe" / "cli"}
#: what each floor may import (ternpe.<package> names; "contract" is ternpe's own modules)
ALLOWED = {"contract": {"contract"}, "model": {"contract", "model"}, "hw": {"contract", "hw"},
           "flow": {"contract", "hw", "flow", "model"}, "cli": {"contract", "model", "hw", "flow", "cli"}}
FORBIDDEN_MODULES = {"contract": {"torch", "amaranth"}, "model": {"amaranth"}, "hw": {"torch"},
                     "flow": {"torch"}, "cli": set()}


def _files(floor):
    d = FOLDERS[floor]
    files = sorted(d.glob("*.py")) if floor == "contract" else sorted(d.rglob("*.py"))
    return [f for f in files if floor == "cli" or FOLDERS["cli"] not in f.parents]


def _floor_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ternpe":
        return None
    if len(parts) == 1:
        return "contract"
    return {"model": "model", "hw": "hw", "flow": "flow", "cli": "cli", "gateware_tests": "tests"}.get(parts[1],
                                                                                                    "contract")


def _imports(path: pathlib.Path, floor: str):
    """``(line, module)`` of every import in ``path``, relative imports resolved."""
    package = {"contract": "ternpe", "model": "ternpe.model", "hw": "ternpe.hw", "flow": "ternpe.flow",
               "cli": "ternpe.cli"}[floor]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.lineno, node.module


@pytest.mark.parametrize("floor", list(FOLDERS))
def test_each_floor_imports_only_from_below(floor):
    bad = []
    for f in _files(floor):
        for line, mod in _imports(f, floor):
            top = _floor_of(mod)
            if top is not None and top not in ALLOWED[floor]:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
            if mod.split(".")[0] in FORBIDDEN_MODULES[floor]:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def _functions():
    for floor in FOLDERS:
        for f in _files(floor):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f, node


def test_no_function_is_longer_than_100_lines():
    long = [f"{f.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for f, n in _functions() if n.end_lineno - n.lineno + 1 > 100]
    assert not long, "\n".join(long)


def test_one_cycle_model():
    where = [f"{f.relative_to(ROOT)}:{n.lineno}" for f, n in _functions() if n.name == "cycle_model"]
    assert len(where) == 1 and where[0].startswith("ternpe/cycles.py:"), where


@pytest.mark.parametrize("text", ["_MustUse__silence", "_lhs_signals", "SimpleNamespace", "gateware_tests"])
def test_no_private_api_fake_objects_or_test_imports_at_run_time(text):
    found = [f"{f.relative_to(ROOT)}" for floor in FOLDERS for f in _files(floor) if text in f.read_text()]
    assert not found, f"{text} in {found}"
