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
    # another model than the bundled one: the bundled corpus is refused before stage I
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stderr
    errors = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "is not the bundled model" in errors[0], refused.stderr
    assert "--corpus" in errors[0] and "Traceback" not in refused.stderr
    assert not run.exists()
    done = subprocess.run(cmd + ["--corpus", "bundled"], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    kept = json.loads((run / "kept_features.json").read_text())
    assert kept["method"] == "fap" and kept["features"]
    assert (run / "descriptions.json").exists()
    stored = json.loads((run / "activations" / "meta.json").read_text())
    assert stored["config"]["corpus"] == "bundled", stored["config"]  # the corpus named


def test_pie_takes_device_dtype_and_lazy_decoders(tmp_path):
    save_tiny_assets(tmp_path, "gpt2", d_features=16)
    write_pairs(tmp_path / "pairs.json", PAIRS[:2])
    base = [sys.executable, "-c", "from cltrace.cli import main; main()", "pie",
            "--model", str(tmp_path / "model"), "--transcoder", str(tmp_path / "clt"),
            "--data", str(tmp_path / "pairs.json"), "--budgets", "2,4", "--methods", "fap",
            "--stages", "prune", "--force"]  # fmt: skip
    bad = subprocess.run(base + ["--dtype", "fp8", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "--dtype 'fp8' is unknown" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()
    run = tmp_path / "run"
    opts = ["--device", "cpu", "--dtype", "bf16", "--lazy-decoders", "--out", str(run)]
    done = subprocess.run(base + opts, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["device"], cfg["dtype"], cfg["lazy_decoders"]) == ("cpu", "bfloat16", True)
    assert json.loads((run / "kept_features.json").read_text())["features"]
