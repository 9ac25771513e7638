"""The examples run unchanged, as a user would run them, in an empty working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cltrace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_quickstart_runs_and_writes_the_graph(tmp_path):
    src = str(Path(cltrace.__file__).resolve().parents[1])  # this checkout's cltrace
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "CLTRACE_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "graph.json").read_text())
    assert doc["nodes"] and doc["links"] and doc["metadata"]["slug"] == "graph"
    assert "fap_synergy" in done.stdout and "K=100" in done.stdout
    assert seconds < 120, f"quickstart took {seconds:.0f} s"
