"""The package's layout: what importing a layer loads, and the size of its modules and functions.

The layers contract itself (imports point one way, no cycles) is import-linter's, run in CI
(`lint-imports`, the contracts in pyproject.toml)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aevb"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def loaded_after(statement: str) -> set[str]:
    """The aevb modules a fresh interpreter holds after running ``statement``."""
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('aevb')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_data_layer_loads_no_model_and_no_engine():
    loaded = loaded_after("import aevb.data")
    assert "aevb.data.datasets" in loaded
    assert not {m for m in loaded if m.startswith(("aevb.models", "aevb.engine", "aevb.nn"))}


@pytest.mark.parametrize("module", ["aevb.evaluation.evaluate", "aevb.reporting.figures"])
def test_evaluation_and_figures_do_not_load_the_training_loop(module):
    loaded = loaded_after(f"import {module}")
    assert module in loaded
    assert "aevb.engine.loop" not in loaded


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, ", ".join(long)
