"""The import rules of DESIGN.md (``[tool.importlinter]`` in pyproject.toml) hold, and they bite.

import-linter runs in a subprocess over a given ``src`` folder, so that it reads this checkout's
modules whatever evalstack the environment has installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with ``root``'s pyproject.toml over ``root/src``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_engine_module_that_imports_the_api_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "src" / "evalstack", tmp_path / "src" / "evalstack")
    shutil.copyfile(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    plan = tmp_path / "src" / "evalstack" / "engine" / "plan.py"
    plan.write_text(
        plan.read_text() + "\nfrom evalstack.api.llama_stack.models import ScoreResponse  # noqa\n"
    )

    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert "The core (engine, store, registry, providers) stays below the API BROKEN" in result.stdout
    assert "evalstack.engine.plan -> evalstack.api.llama_stack.models" in result.stdout
