"""``cltrace pie`` from the command line on tiny saved assets."""

import json
import subprocess
import sys

import pytest

from cltrace.tasks import write_pairs
from cltrace.testing import save_tiny_assets
from tests.pie.test_run import PAIRS


@pytest.mark.slow
def test_pie_explains_the_methods_it_ran(tmp_path):
    save_tiny_assets(tmp_path, "gpt2", d_features=16)
    write_pairs(tmp_path / "pairs.json", PAIRS[:2])
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", "from cltrace.cli import main; main()", "pie",
           "--model", str(tmp_path / "model"), "--transcoder", str(tmp_path / "clt"),
           "--data", str(tmp_path / "pairs.json"), "--budgets", "2,4", "--methods",
           "fap,random", "--stages", "prune,interpret", "--out", str(run), "--force"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    kept = json.loads((run / "kept_features.json").read_text())
    assert kept["method"] == "fap" and kept["features"]
    assert (run / "descriptions.json").exists()
    # cltrace pie has no --corpus: for the tiny model it says it falls back to the bundled one
    said = " ".join(done.stdout.split())
    assert "is not the bundled model" in said and "Using it for stages II and III" in said
