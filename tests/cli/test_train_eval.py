"""Training and transcoder evaluation commands under bad options, through the console script."""

import pytest

from tests.cli.conftest import expect_error


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "clt", "--activation", "bogus", "--steps", "1"], ["'bogus'", "jumprelu"]),
        (["train", "clt", "--activation", "topk", "--steps", "1"], ["--k"]),
        (["train", "clt", "--features", "0", "--steps", "1"], ["--features"]),
        (["train", "clt", "--steps", "0"], ["--steps"]),
        (["train", "clt", "--sparsity", "nan", "--steps", "1"], ["--sparsity", "finite"]),
        (["train", "model", "--lr", "nan", "--steps", "1"], ["--lr", "finite"]),
        (["train", "model", "--lr", "-1", "--steps", "1"], ["--lr", "> 0"]),
    ],
)
def test_bad_training_option_is_a_usage_error(cli, tmp_path, args, fragments):
    done = cli(*args, "--out", tmp_path / "out")
    expect_error(done, 2, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("what", ["model", "clt"])
def test_training_output_under_a_file_fails_before_training(cli, tmp_path, what):
    (tmp_path / "file").write_text("keep")
    done = cli("train", what, "--steps", "1", "--out", tmp_path / "file" / "out")
    expect_error(done, 1, "is a file", "another path")
    assert "loss" not in done.stdout + done.stderr and "fvu" not in done.stdout + done.stderr
    assert (tmp_path / "file").read_text() == "keep"


def test_zero_evaluation_tokens_is_a_usage_error(cli):
    expect_error(cli("transcoder", "eval", "--n-tokens", "0"), 2, "--n-tokens")


def test_missing_transcoder_is_one_line(cli, tmp_path):
    done = cli("transcoder", "eval", "--transcoder", tmp_path / "none")
    expect_error(done, 1, "does not exist")


def test_another_model_needs_a_corpus_named(cli, tiny, tmp_path):
    train = ["train", "clt", "--steps", "1", "--out", tmp_path / "c"]
    evaluate = ["transcoder", "eval", "--n-tokens", "50", "--transcoder", tiny / "clt"]
    for args in (train, evaluate):
        done = cli(*args, "--model", tiny / "model")
        expect_error(done, 2, "not the bundled model", "--corpus")
    assert not (tmp_path / "c").exists()
    # naming the corpus, even the bundled one, is accepted
    corpus = tmp_path / "docs.txt"
    corpus.write_text("w1 w2 w3 w4 w5 w6\nw7 w8 w9 w10\n" * 20)
    done = cli("transcoder", "eval", "--n-tokens", "50", "--model", tiny / "model",
               "--transcoder", tiny / "clt", "--corpus", corpus, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
