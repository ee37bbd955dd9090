"""House rules a machine can check: the layers' import contract, no Qt in the engine, files
short enough to read, lint clean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_qt():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "clp2p").rglob("*.py")
        if _imports(p) & {"PySide6", "qasync", "PyQt5", "PyQt6", "shiboken6"}
    ]
    assert offenders == []


def test_studio_reaches_tensors_only_through_the_engine():
    studio = ROOT / "clp2p_studio"
    offenders = [
        str(p.relative_to(ROOT))
        for p in studio.rglob("*.py")
        if _imports(p) & {"torch", "diffusers", "transformers"}
    ]
    assert offenders == []


def test_ruff_is_clean():
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_import_contracts_hold():
    """The layer contract of pyproject.toml ([tool.importlinter]; docs/architecture.md)."""
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_import_contract_catches_a_wrong_way_import(tmp_path):
    """The contract is not vacuous: a model module importing the engine breaks it."""
    import shutil

    copy = tmp_path / "repo"
    for name in ("clp2p", "clp2p_studio"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "clp2p" / "model" / "params.py"
    bad.write_text(bad.read_text() + "\nfrom clp2p.engine import engine  # noqa\n")
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, '.'); from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        capture_output=True,
        text=True,
        cwd=copy,
    )
    assert run.returncode != 0
    assert "clp2p.model is not allowed to import clp2p.engine" in run.stdout


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _product_modules():
    for package in ("clp2p", "clp2p_studio"):
        yield from sorted((ROOT / package).rglob("*.py"))


def test_modules_are_short_enough_to_read():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _product_modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_functions_fit_on_a_screen():
    long = {}
    for path in _product_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert long == {}
