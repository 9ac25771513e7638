import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cltrace.bundled import CorpusConfig, TrainConfig, train_model
from cltrace.errors import CltraceError
from cltrace.models import load_model

TINY = TrainConfig(
    seed=1, steps=20, batch_size=8, warmup_steps=5, n_layers=1, d_model=32, n_heads=2, n_ctx=64,
    corpus=CorpusConfig(n_docs=400),
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    return train_model(out, TINY, progress=False)


@pytest.mark.slow
def test_twenty_steps_give_a_loadable_hf_directory(trained):
    assert (trained / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(trained)
    tok = AutoTokenizer.from_pretrained(trained)
    assert model.config.n_layer == 1 and model.dtype == torch.float32
    assert model.config.vocab_size == len(tok)
    record = json.loads((trained / "train_config.json").read_text())
    assert record["steps"] == 20 and record["final_loss_ema"] > 0
    adapter = load_model(trained)
    logits = adapter(adapter.to_tokens("When Mary and John went to the store"))
    assert logits.shape[-1] == adapter.d_vocab and torch.isfinite(logits).all()


@pytest.mark.slow
def test_same_seed_same_weights(trained, tmp_path):
    again = train_model(tmp_path / "again", TINY, progress=False)
    a = AutoModelForCausalLM.from_pretrained(trained).state_dict()
    b = AutoModelForCausalLM.from_pretrained(again).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_refuses_non_empty_out(trained):
    with pytest.raises(CltraceError, match="already holds files"):
        train_model(trained, TINY, progress=False)


def test_answer_tokens_get_the_extra_weight():
    from cltrace.bundled.train import _answer_weights

    ioi = [1, 10, 11, 12, 13, 2]  # bos ... " IO" "." eos
    assert _answer_weights("ioi", ioi, None, 5.0) == [0.0, 1.0, 1.0, 5.0, 1.0, 1.0]
    doc = [1, 20, 7, 21, 7, 22, 2]  # 7 plays "param"
    assert _answer_weights("docstring", doc, 7, 3.0) == [0.0, 1.0, 1.0, 3.0, 1.0, 3.0, 1.0]


def test_batches_keep_documents_apart_and_cover_the_epoch():
    from cltrace.bundled.train import _batches

    docs = [([1] + [5 + i] * (2 + i % 7) + [2], [1.0] * (4 + i % 7)) for i in range(40)]
    batches = _batches(docs, 4, pad_id=0, gen=torch.Generator().manual_seed(0))
    assert len(batches) == 10
    seen = []
    for tokens, weights in batches:
        assert (tokens[:, 0] == 1).all()  # every row starts with its own BOS
        assert ((tokens == 0) == (weights == 0)).all()
        seen += [int(row[1]) for row in tokens]
    assert sorted(seen) == [5 + i for i in range(40)]


def test_long_rows_pack_whole_documents_to_the_context_length():
    from cltrace.bundled.train import _long_batch

    docs = [[1, 10 + i, 11 + i, 2] for i in range(5)]  # bos, two words, eos
    tokens, weights = _long_batch(docs, 3, 10, torch.Generator().manual_seed(0))
    assert tokens.shape == (3, 10) and weights.shape == (3, 10)
    assert (tokens[:, 0] == 1).all() and (weights[:, 0] == 0).all() and (weights[:, 1:] == 1).all()
    for row in tokens.tolist():
        for start in range(0, 8, 4):  # each 4-token block is one whole document
            assert row[start : start + 4] in docs
        assert row[8:] == [1, row[9]] and row[9] >= 10  # the third document, cut


@pytest.mark.slow
def test_long_rows_train_the_last_positions(tmp_path):
    from dataclasses import replace

    from transformers import GPT2LMHeadModel

    cfg = replace(TINY, n_ctx=160)  # longer than any document of the corpus
    with_long = train_model(tmp_path / "long", cfg, progress=False)
    plain = train_model(tmp_path / "plain", replace(cfg, long_every=0), progress=False)
    torch.manual_seed(cfg.seed)  # what train_model does right before building the model
    init = GPT2LMHeadModel(AutoModelForCausalLM.from_pretrained(plain).config)
    first = init.transformer.wpe.weight[-2].detach()  # [-1] never predicts a token

    def cosine(model_dir):
        row = AutoModelForCausalLM.from_pretrained(model_dir).transformer.wpe.weight[-2]
        return float(torch.nn.functional.cosine_similarity(row.detach(), first, dim=0))

    # no document reaches the last positions, so without long rows their embeddings only decay
    assert cosine(plain) > 1 - 1e-5
    assert cosine(with_long) < 0.99
