"""The codebase stays ruff- and mypy-clean, the core never imports Qt, and only 3D loads VTK."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "app", "tests", "bench"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    """Every function in app/ typed (disallow_untyped_defs) and every call checked against it; the
    settings are pyproject.toml's [tool.mypy]."""
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", os.devnull], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


VTK_MODULES = {"mpr.py"}  # app/imaging/mpr.py: VTK reslicing (no Qt) for the 3D window


def test_core_is_qt_free() -> None:
    offenders = []
    for path in (ROOT / "app").rglob("*.py"):
        if "ui" in path.relative_to(ROOT / "app").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith(("PySide6", "shiboken6")) for n in names) or (
                    any(n.startswith("vtk") for n in names) and path.name not in VTK_MODULES):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_2d_viewer_loads_without_vtk() -> None:
    # VTK is for 3D only: the reading window starts (and renders offscreen) without loading it.
    probe = "import sys, app.ui.main_window; print(sorted(m for m in sys.modules if m.startswith('vtk')))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
