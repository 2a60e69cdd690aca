"""Shared pytest fixtures (keep them small and generic)."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture
def ldensf():
    """``ldensf(*args, timeout=120)``: run the ``ldensf`` command in a subprocess, return the CompletedProcess."""

    def run(*args, timeout: float = 120):
        return subprocess.run([sys.executable, "-m", "ldensf_hpc.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)

    return run
