"""``cltrace pie`` run directories under bad options and faults, through the console script.

Each case asserts the exit code, the one ``error:`` line and that what was already in the run
directory is intact (or, where a rerun repairs it, that the results equal a clean run's).
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from cltrace.files import RunLock
from cltrace.tasks import write_pairs
from tests.cli.conftest import CLTRACE, _env, expect_error, snapshot, tiny_opts
from tests.pie.test_run import PAIRS

# --force: the tiny random model shows no behaviour; these tests are about the run directory
FAST = ["--budgets", "2,4", "--methods", "fap,random", "--stages", "prune", "--force"]


def pie_args(tiny, out, data=None, *extra):
    return ["pie", *tiny_opts(tiny), "--data", data or tiny / "pairs.json", *FAST, *extra,
            "--out", out]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory, cli):
    """A finished run on the 4-pair file (what every repaired rerun must reproduce)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    done = cli(*pie_args(tiny, out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def finished(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


def results(run):
    return json.loads((run / "results.json").read_text())


# ---------------------------------------------------------------- options, before any write
@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--unit", "occurrences"], ["--unit", "'occurrences'", "occurrence, feature"]),
        (["--policy", "zero"], ["--policy", "'zero'", "corrupted_prompt"]),
        (["--grad-mode", "fulll"], ["--grad-mode", "direct, full"]),
        (["--lambda-syn", "nan"], ["--lambda-syn", "finite"]),
        (["--lambda-syn", "-1"], ["--lambda-syn", ">= 0"]),
        (["--budgets", "0,5"], ["--budgets", "positive"]),
        (["--budgets", "ten"], ["--budgets", "'ten'"]),
        (["--methods", "fap,nosuch"], ["'nosuch'", "fap_synergy"]),
        (["--methods", ","], ["--methods", "no method"]),
        (["--stages", "prune,explain"], ["--stages", "prune,interpret,evaluate"]),
    ],
)
def test_bad_option_fails_before_writing(cli, tiny, tmp_path, extra, fragments):
    out = tmp_path / "run"
    done = cli(*pie_args(tiny, out), *extra)
    expect_error(done, 2, *fragments)
    assert not out.exists()


def test_unknown_task_is_a_usage_error(cli, tmp_path):
    done = cli("pie", "--task", "ioj", "--out", tmp_path / "run")
    expect_error(done, 2, "'ioj'", "ioi, docstring")
    assert not (tmp_path / "run").exists()


def test_missing_pair_file_is_a_usage_error(cli, tiny, tmp_path):
    done = cli(*pie_args(tiny, tmp_path / "run", tmp_path / "nope.json"))
    expect_error(done, 2, "nope.json", "--data")
    assert not (tmp_path / "run").exists()


def test_corrected_command_runs_after_a_typo(cli, tiny, tmp_path, reference):
    out = tmp_path / "run"
    expect_error(cli(*pie_args(tiny, out), "--unit", "occurence"), 2, "--unit")
    done = cli(*pie_args(tiny, out))
    assert done.returncode == 0, done.stderr
    assert results(out) == results(reference)


def test_out_under_a_file_fails_before_any_work(cli, tiny, tmp_path):
    (tmp_path / "file").write_text("x")
    done = cli(*pie_args(tiny, tmp_path / "file" / "run"))
    expect_error(done, 1, "is a file", "another path")
    assert (tmp_path / "file").read_text() == "x"


# ---------------------------------------------------------------- one process per directory
def test_second_process_on_a_locked_directory_fails_at_once(cli, tiny, finished):
    before = snapshot(finished)
    with RunLock(finished, command="cltrace pie (holder)"):
        t0 = time.monotonic()
        done = cli(*pie_args(tiny, finished))
        waited = time.monotonic() - t0
    line = expect_error(done, 1, "in use by another cltrace process", f"pid {os.getpid()}")
    assert "cltrace pie (holder)" in line and waited < 60
    assert snapshot(finished) == before


LONG = 100
"""Copies of the 4 pairs in a run that must still be going while the test acts on it (the tiny
model scores about 80 prompts a second)."""


def start_pie(tiny, out, data, n_records: int) -> subprocess.Popen:
    """Start ``cltrace pie`` in the background and return once ``n_records`` prompts are done."""
    proc = subprocess.Popen([CLTRACE, *map(str, pie_args(tiny, out, data))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(None))  # fmt: skip
    rec = out / "records.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if rec.exists() and rec.read_text().count("\n") >= n_records:
            break
        time.sleep(0.02)
    return proc


@pytest.mark.slow
def test_a_second_run_during_the_first_is_refused_and_writes_nothing(tiny, tmp_path, cli):
    data = tmp_path / "pairs.json"
    write_pairs(data, PAIRS * LONG)
    out = tmp_path / "run"
    rec = out / "records.jsonl"
    first = start_pie(tiny, out, data, n_records=1)
    second = cli(*pie_args(tiny, out, data))
    still_running = first.poll() is None
    _, err = first.communicate(timeout=300)
    assert still_running, "the first run ended before the second started; use more prompts"
    expect_error(second, 1, "in use by another cltrace process", f"pid {first.pid}")
    assert first.returncode == 0, err
    lines = rec.read_text().splitlines()
    assert sorted(json.loads(x)["index"] for x in lines) == list(range(len(PAIRS) * LONG))
    assert results(out)["n_prompts"] == len(PAIRS) * LONG


# ---------------------------------------------------------------- inputs that changed
def test_edited_pair_file_is_refused(cli, tiny, tmp_path):
    data = tmp_path / "pairs.json"
    write_pairs(data, PAIRS)
    out = tmp_path / "run"
    assert cli(*pie_args(tiny, out, data)).returncode == 0
    before = snapshot(out)
    write_pairs(data, [PAIRS[1], PAIRS[0], *PAIRS[2:]])  # same count, other content
    done = cli(*pie_args(tiny, out, data))
    expect_error(done, 1, "pairs.json changed since", "restore it", "new --out")
    assert snapshot(out) == before


def test_longer_pair_file_is_not_merged(cli, tiny, tmp_path):
    data = tmp_path / "pairs.json"
    write_pairs(data, PAIRS[:3])
    out = tmp_path / "run"
    assert cli(*pie_args(tiny, out, data)).returncode == 0
    before = snapshot(out)
    write_pairs(data, PAIRS + PAIRS[:3])
    expect_error(cli(*pie_args(tiny, out, data)), 1, "changed since")
    assert snapshot(out) == before
    assert results(out)["n_prompts"] == 3


def test_other_model_files_under_the_same_path_are_refused(cli, tiny, tmp_path):
    from cltrace.testing import save_tiny_assets

    assets = tmp_path / "assets"
    save_tiny_assets(assets, "gpt2", d_features=16)
    out = tmp_path / "run"
    assert cli(*pie_args(assets, out, tiny / "pairs.json")).returncode == 0
    before = snapshot(out)
    shutil.rmtree(assets / "clt")
    save_tiny_assets(tmp_path / "other", "gpt2", d_features=16, seed=1)
    shutil.copytree(tmp_path / "other" / "clt", assets / "clt")
    done = cli(*pie_args(assets, out, tiny / "pairs.json"))
    expect_error(done, 1, "transcoder files differ", "new --out")
    assert snapshot(out) == before


def test_other_options_in_a_finished_directory_are_refused(cli, tiny, finished):
    before = snapshot(finished)
    done = cli(*pie_args(tiny, finished), "--lambda-syn", "2")
    expect_error(done, 1, "different options", "lambda_syn")
    assert snapshot(finished) == before


# ---------------------------------------------------------------- damaged run directories
def test_corrupt_record_line_drops_only_that_line(cli, tiny, finished, reference):
    rec = finished / "records.jsonl"
    lines = rec.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # damaged in the middle of the file
    rec.write_text("\n".join(lines) + "\n")
    done = cli(*pie_args(tiny, finished))
    assert done.returncode == 0, done.stderr
    warning = [ln for ln in done.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "line(s) 2" in warning[0] and "recomputed" in warning[0]
    assert results(finished) == results(reference)
    assert (finished / "records.rejected.jsonl").read_text() == lines[1] + "\n"
    idx = sorted(json.loads(x)["index"] for x in rec.read_text().splitlines())
    assert idx == list(range(len(PAIRS)))


def test_line_cut_by_an_interruption_is_recomputed_quietly(cli, tiny, finished, reference):
    rec = finished / "records.jsonl"
    lines = rec.read_text().splitlines()
    rec.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    (finished / "results.json").unlink()
    done = cli(*pie_args(tiny, finished))
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stderr
    assert results(finished) == results(reference)


def test_duplicate_records_are_set_aside(cli, tiny, finished, reference):
    rec = finished / "records.jsonl"
    lines = rec.read_text().splitlines()
    rec.write_text("\n".join([*lines, lines[0]]) + "\n")
    done = cli(*pie_args(tiny, finished))
    assert done.returncode == 0, done.stderr
    assert "not valid records" in done.stderr
    assert results(finished) == results(reference)


def test_corrupt_config_json_is_one_line(cli, tiny, finished):
    (finished / "config.json").write_text('{"task": "ioi", ')
    before = snapshot(finished)
    done = cli(*pie_args(tiny, finished))
    expect_error(done, 1, "config.json is not valid JSON", "new --out")
    assert snapshot(finished) == before


def test_records_without_config_are_refused(cli, tiny, finished):
    (finished / "config.json").unlink()
    before = snapshot(finished)
    done = cli(*pie_args(tiny, finished))
    expect_error(done, 1, "no config.json", "new --out")
    assert snapshot(finished) == before


# ---------------------------------------------------------------- interrupt and resume
@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_rerun_finishes_the_same(cli, tiny, tmp_path):
    data = tmp_path / "pairs.json"
    write_pairs(data, PAIRS * LONG)
    out = tmp_path / "run"
    rec = out / "records.jsonl"
    proc = start_pie(tiny, out, data, n_records=2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    note = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert len(note) == 1 and "records.jsonl keeps the" in note[0] and "resume" in note[0]
    assert "Traceback" not in err and not (out / "results.json").exists()
    n_kept = rec.read_text().count("\n")
    assert 2 <= n_kept < len(PAIRS) * LONG
    done = cli(*pie_args(tiny, out, data))
    assert done.returncode == 0, done.stderr
    straight = tmp_path / "straight"
    assert cli(*pie_args(tiny, straight, data)).returncode == 0
    assert results(out) == results(straight)


# ---------------------------------------------------------------- model and transcoder files
def _broken_copy(tiny, tmp_path, what, name, damage):
    dst = tmp_path / "assets"
    shutil.copytree(tiny / "model", dst / "model")
    shutil.copytree(tiny / "clt", dst / "clt")
    target = dst / what / name
    damage(target)
    return dst


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("what", "name", "damage", "fragments"),
    [
        ("model", "model.safetensors", _truncate, ["could not load the weights", "re-download"]),
        ("model", "config.json", lambda p: p.write_text("{oops"), ["config.json is not valid"]),
        ("model", "tokenizer.json", lambda p: p.write_text("{}"), ["tokenizer of"]),
        ("clt", "W_dec_0.safetensors", _truncate, ["not a readable safetensors file"]),
        ("clt", "config.yaml", lambda p: p.write_text("a: [1,\n"), ["not valid YAML", "line"]),
    ],
)
def test_damaged_model_or_transcoder_is_one_line(cli, tiny, tmp_path, what, name, damage,
                                                 fragments):  # fmt: skip
    assets = _broken_copy(tiny, tmp_path, what, name, damage)
    out = tmp_path / "run"
    done = cli(*pie_args(assets, out, tiny / "pairs.json"))
    expect_error(done, 1, name if what == "clt" else "", *fragments)
    assert not out.exists()


def test_missing_model_directory_is_one_line(cli, tiny, tmp_path):
    done = cli("pie", "--model", tmp_path / "nomodel", "--data", tiny / "pairs.json", *FAST,
               "--out", tmp_path / "run")  # fmt: skip
    expect_error(done, 1, "nomodel", "does not exist")


def test_unreachable_hub_model_is_one_line(cli, tiny, tmp_path):
    done = cli("pie", "--model", "someone/no-such-model", "--data", tiny / "pairs.json", *FAST,
               "--out", tmp_path / "run")  # fmt: skip
    expect_error(done, 1, "someone/no-such-model")


def test_budget_above_the_active_set_is_said_once(cli, tiny, tmp_path):
    out = tmp_path / "run"
    done = cli("pie", *tiny_opts(tiny), "--data", tiny / "pairs.json", "--budgets", "2,100000",
               "--methods", "fap,random", "--stages", "prune", "--out", out, "--force")  # fmt: skip
    assert done.returncode == 0, done.stderr
    warning = [ln for ln in done.stderr.splitlines() if "K=100000 exceeds" in ln]
    assert len(warning) == 1 and "of 4 prompts" in warning[0]
    assert "error:" not in done.stderr
