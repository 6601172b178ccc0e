"""Lint, format and type checks are part of the test suite, so `make test` (and CI) enforce them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

BIN = Path(sys.executable).parent


def _run(*command: str) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"


def test_ruff_lint() -> None:
    _run(str(BIN / "ruff"), "check", "--no-cache", ".")


def test_ruff_format() -> None:
    _run(str(BIN / "ruff"), "format", "--check", "--no-cache", ".")


@pytest.mark.slow
def test_mypy_strict() -> None:
    _run(str(BIN / "mypy"), "--no-incremental")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_model_code_never_imports_the_web_framework() -> None:
    for path in (ROOT / "backend" / "classifier").rglob("*.py"):
        assert not _imports(path) & {"fastapi", "starlette", "uvicorn"}, path


def test_frontend_client_code_never_imports_streamlit() -> None:
    ui_files = {"app.py", "__main__.py", "monitoring_page.py"}  # the Streamlit scripts (st.navigation's pages)
    checked = 0
    for path in (ROOT / "frontend").rglob("*.py"):
        if path.name not in ui_files and "pages" not in path.parts:
            assert "streamlit" not in _imports(path), path
            checked += 1
    assert checked >= 2


def test_no_print_in_service_code() -> None:
    for folder in ("backend", "frontend", "common"):
        for path in (ROOT / folder).rglob("*.py"):
            calls = [
                node
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
            ]
            assert not calls, f"print() in {path}"
