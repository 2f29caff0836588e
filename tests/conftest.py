import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def seld_cli():
    """Run the real `seld` command in a subprocess; returns CompletedProcess."""
    import subprocess

    def run(*args: str, check: bool = False, **kwargs):
        return subprocess.run(
            [sys.executable, "-m", "seld", *map(str, args)],
            capture_output=True, text=True, check=check, timeout=600, **kwargs,
        )

    return run
