"""``--device-map`` on ``cltrace attribute`` and ``cltrace pie``: the tiny model with its second
block offloaded to disk by accelerate writes the graph and the stage-I results of the whole
model; a bad map is a usage error."""

import json
import shutil

import pytest

from cltrace.pie.stages import load_run_models
from tests.cli.conftest import expect_error, tiny_opts
from tests.cli.test_attribute_batch import _graph

pytest.importorskip("accelerate")

# the saved tiny GPT-2 of the `tiny` fixture has two blocks; its unembedding is tied to the
# embedding, so it stays with it
DISK_MAP = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
            "transformer.h.0": "cpu", "transformer.h.1": "disk", "transformer.ln_f": "disk",
            "lm_head": "cpu"}  # fmt: skip


@pytest.fixture
def map_file(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps(DISK_MAP))
    return path


def test_attribute_with_a_device_map_writes_the_whole_models_graph(cli, tiny, tmp_path, map_file):
    args = ["attribute", *tiny_opts(tiny), "--prompt", "w1 w2 w3 w4 w2"]
    done = cli(*args, "--out", tmp_path / "one" / "g.json")
    assert done.returncode == 0, done.stderr
    done = cli(*args, "--out", tmp_path / "map" / "g.json", "--device-map", map_file,
               "--offload-folder", tmp_path / "offload")  # fmt: skip
    assert done.returncode == 0, done.stderr
    want, got = _graph(tmp_path / "one" / "g.json"), _graph(tmp_path / "map" / "g.json")
    assert got["links"] == want["links"] and got["nodes"] == want["nodes"]
    assert len(want["links"]) > 0


def test_pie_with_a_device_map_gives_the_whole_models_results(cli, tiny, tmp_path, map_file):
    args = ["pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", "--budgets", "2,4",
            "--methods", "fap,random", "--stages", "prune", "--force"]  # fmt: skip
    done = cli(*args, "--out", tmp_path / "one")
    assert done.returncode == 0, done.stderr
    inline = json.dumps(DISK_MAP)  # the map inline this time
    done = cli(*args, "--out", tmp_path / "map", "--device-map", inline, "--offload-folder",
               tmp_path / "offload")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("results.json", "kept_features.json"):
        want = json.loads((tmp_path / "one" / name).read_text())
        assert json.loads((tmp_path / "map" / name).read_text()) == want, name


def test_bad_device_maps_are_usage_errors(cli, tiny, tmp_path, map_file):
    args = ["attribute", *tiny_opts(tiny), "--prompt", "w1 w2", "--out", tmp_path / "g.json"]
    expect_error(cli(*args, "--device-map", "everywhere"), 2, "--device-map", "preset")
    expect_error(cli(*args, "--device-map", "{h.0: cpu}"), 2, "not valid JSON")
    expect_error(cli(*args, "--device-map", map_file), 2, "--offload-folder")
    expect_error(cli(*args, "--offload-folder", tmp_path), 2, "only serves --device-map")
    pie = ["pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", "--out", tmp_path / "r",
           "--stages", "prune"]
    expect_error(cli(*pie, "--device-map", "[1, 2]"), 2, "module names to devices")
    assert not (tmp_path / "r").exists() and not (tmp_path / "g.json").exists()


@pytest.mark.slow
def test_pie_stages_two_and_three_with_a_device_map_write_the_whole_models_files(
    cli, tiny, tmp_path, map_file
):
    args = ["pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", "--budgets", "2",
            "--methods", "fap,random", "--force"]  # fmt: skip
    done = cli(*args, "--stages", "prune", "--out", tmp_path / "one")
    assert done.returncode == 0, done.stderr
    (tmp_path / "map").mkdir()
    for name in ("config.json", "records.jsonl", "results.json", "kept_features.json",
                 "behaviour.json"):  # stage I as the whole model wrote it  # fmt: skip
        if (tmp_path / "one" / name).exists():
            (tmp_path / "map" / name).write_bytes((tmp_path / "one" / name).read_bytes())
    later = ["--stages", "interpret,evaluate", "--corpus", "bundled"]
    done = cli(*args, *later, "--out", tmp_path / "one")
    assert done.returncode == 0, done.stderr
    done = cli(*args, *later, "--out", tmp_path / "map", "--device-map", map_file,
               "--offload-folder", tmp_path / "offload")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("descriptions.json", "scores.json", "scores_summary.json"):
        want = json.loads((tmp_path / "one" / name).read_text())
        assert json.loads((tmp_path / "map" / name).read_text()) == want, name
    scores = json.loads((tmp_path / "one" / "scores.json").read_text())
    assert len(scores) >= 1


@pytest.mark.slow
def test_interpret_and_evaluate_take_a_device_map(cli, tiny, tmp_path, map_file):
    args = ["pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", "--budgets", "2",
            "--methods", "fap,random", "--stages", "prune", "--force"]  # fmt: skip
    done = cli(*args, "--out", tmp_path / "plain")
    assert done.returncode == 0, done.stderr
    shutil.copytree(tmp_path / "plain", tmp_path / "map")
    spread = ["--device-map", map_file, "--offload-folder", tmp_path / "offload"]
    for command in ("interpret", "evaluate"):
        # a map sending modules to disk needs an offload folder: the option is read
        expect_error(cli(command, "--run", tmp_path / "map", "--corpus", "bundled",
                         "--device-map", map_file), 2, "--offload-folder")  # fmt: skip
        for run, extra in (("plain", []), ("map", spread)):
            done = cli(command, "--run", tmp_path / run, "--corpus", "bundled", *extra)
            assert done.returncode == 0, (command, run, done.stderr)
    # and the stages load the model the way the map says (block 1 left on disk)
    adapter, _, _ = load_run_models(tmp_path / "map", spread={
        "device_map": DISK_MAP, "offload_folder": str(tmp_path / "offload")})  # fmt: skip
    assert adapter.block(1).mlp.c_fc.weight.device.type == "meta"
    for name in ("descriptions.json", "scores.json"):
        want = json.loads((tmp_path / "plain" / name).read_text())
        assert json.loads((tmp_path / "map" / name).read_text()) == want, name
    assert any(v.get("description") for v in want.values())
