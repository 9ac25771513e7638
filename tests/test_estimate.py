"""The memory estimate: its parts follow the sizes they describe, and the command refuses bad
input before reading weights."""

import json
import subprocess

from cltrace.estimate import TranscoderShape, estimate_attribution, model_parameters
from cltrace.models import load_model
from tests.cli.conftest import CLTRACE, _env


def test_parts_follow_the_sizes():
    tc = TranscoderShape(n_layers=4, d_model=8, d_features=10, cross_layer=True)
    e = estimate_attribution(1000, tc, n_tokens=5, l0=2.0, batch_size=3, n_logits=2)
    n_active = 2 * 4 * 5
    n_cols = n_active + 4 * 5 + 5
    assert e.parts["edge_rows"] == (n_active + 2) * n_cols * 4
    assert e.parts["transcoder"] == (4 * 10 * 8 + 10 * 8 * 10) * 4  # 10 = 4 + 3 + 2 + 1 decoders
    assert e.parts["model_weights"] == 4000
    half = estimate_attribution(1000, tc, n_tokens=5, l0=2.0, batch_size=3, dtype="bf16")
    assert half.parts["model_weights"] == 2000
    lazy = estimate_attribution(1000, tc, 5, l0=2.0, lazy_decoders=True, cache_bytes=100)
    assert lazy.parts["transcoder"] == 4 * 10 * 8 * 4 + 100
    assert e.assumptions == [] and estimate_attribution(1000, tc, 5).assumptions


def test_parameter_count_from_the_config_alone():
    n, layers, width = model_parameters(None)
    model = load_model(None)
    assert (layers, width) == (model.n_layers, model.d_model)
    assert n == sum(p.numel() for p in model.hf_model.parameters())


def test_estimate_command(tmp_path):
    def run(*args):
        return subprocess.run([CLTRACE, "estimate", *map(str, args)], capture_output=True,
                              text=True, env=_env(None))  # fmt: skip

    done = run("--tokens", "64", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total_bytes"] == sum(report["parts_bytes"].values())
    bad = run("--tokens", "64", "--dtype", "fp8")
    assert bad.returncode == 2 and "fp8" in bad.stderr and "Traceback" not in bad.stderr
    empty = run("--tokens", "64", "--transcoder", tmp_path)
    assert empty.returncode == 2 and "W_enc" in empty.stderr
