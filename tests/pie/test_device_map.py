"""A PIE run started on the whole model and resumed with part of it offloaded to disk by an
accelerate device map (or the other way round) ends with the results of an uninterrupted run:
the map is where the model sits, not what the run computes."""

import pytest

from cltrace.pie import run_pie
from tests.pie.test_run import _cfg, assets  # noqa: F401  (the fixture)

pytest.importorskip("accelerate")

# the tiny GPT-2 of `assets` has two blocks; its tied unembedding stays with the embedding
DISK_MAP = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
            "transformer.h.0": "disk", "transformer.h.1": "cpu", "transformer.ln_f": "disk",
            "lm_head": "cpu"}  # fmt: skip


def test_a_run_resumes_across_a_device_map_to_the_same_results(assets, tmp_path):  # noqa: F811
    spread = {"device_map": DISK_MAP, "offload_folder": str(tmp_path / "offload")}
    cfg = _cfg(assets, methods=("fap", "random"))
    full = tmp_path / "full"
    run_pie(cfg, full, force=True)
    for first, then in ((None, spread), (spread, None)):
        part = tmp_path / f"part-{first is None}"
        assert run_pie(cfg, part, stop_after=2, force=True, spread=first) == {}
        run_pie(cfg, part, force=True, spread=then)
        assert (part / "results.json").read_text() == (full / "results.json").read_text()
