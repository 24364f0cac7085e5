"""The direction of imports between the proxy, the Django apps and `contracts` (pyproject.toml,
[tool.importlinter]): the proxy stays Django-free, and the two sides share only `contracts`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout
