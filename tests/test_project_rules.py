"""House rules a machine can check: no Qt in the engine, lint clean."""

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
