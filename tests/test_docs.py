"""The documentation builds cleanly (Sphinx, warnings as errors) and its capability table is the registries'."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ldensf_hpc.cases import CASES
from ldensf_hpc.filters import METHODS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                            str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    for page in ("api", "own", "conventions", "capabilities", "quickstart"):
        assert (tmp_path / f"{page}.html").is_file()
    text = (tmp_path / "capabilities.html").read_text()
    registered = [name for name in CASES if ":" not in name]  # not the import paths other tests named
    assert all(f">{name}<" in text for name in (*METHODS, *registered))
    api = (tmp_path / "api.html").read_text()
    assert "Case.from_dataset" in api and "Assimilation.to_netcdf" in api
