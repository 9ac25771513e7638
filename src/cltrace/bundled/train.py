"""Train the bundled model: a small GPT-2 on the synthetic corpus.

``train_model`` is what ``cltrace train model`` runs; with the default config it reproduces the
model in ``cltrace/assets/model`` from its seed (a few minutes on two CPU cores).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cltrace.bundled.corpus import RECIPES, CorpusConfig, generate_documents
from cltrace.bundled.filler import FILLER_KINDS
from cltrace.bundled.recipes import FOUR_TASKS_FILLER
from cltrace.bundled.tokenizer import DIGIT_PAIR_PATTERN, PIECE_PATTERN, build_tokenizer
from cltrace.errors import CltraceError, UsageError

PIECE_PATTERNS = {"words": PIECE_PATTERN, "digit-pairs": DIGIT_PAIR_PATTERN}
"""Tokenizer piece patterns by :attr:`TrainConfig.pieces` name."""


@dataclass(frozen=True)
class TrainConfig:
    """Model size, optimisation and corpus of one training run."""

    seed: int = 0
    """Seeds the corpus, the weight init and the batch order."""
    steps: int = 2500
    """Optimizer steps."""
    batch_size: int = 64
    """Documents per step (one per row, padded to the longest in the batch)."""
    lr: float = 2e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to a tenth)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices."""
    answer_weight: float = 10.0
    """Loss weight of task-answer tokens (the IOI name after "to", the argument after
    ``:param``); the answer is one token in ~30, so without it the IOI signal is too weak for a
    short run."""
    n_layers: int = 4
    """Transformer blocks."""
    d_model: int = 128
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads per block."""
    n_ctx: int = 1024
    """Context length (position embeddings); longer documents are cut."""
    long_every: int = 5
    """Every this many steps, also train on ``long_rows`` rows of ``n_ctx`` tokens of packed
    filler documents, so that every position embedding is trained (task documents are short and
    are never packed). 0 turns long rows off."""
    long_rows: int = 2
    """Rows per long batch."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """The synthetic corpus (its seed is replaced by ``seed``)."""
    pieces: str = "words"
    """How the tokenizer cuts text: ``words`` (:data:`~cltrace.bundled.tokenizer.PIECE_PATTERN`)
    or ``digit-pairs`` (numbers in two-digit pieces, as greater-than needs)."""

    @classmethod
    def recipe(cls, name: str, seed: int = 0) -> TrainConfig:
        """The preset of a corpus recipe: ``two-tasks`` (the first bundled model) or
        ``four-tasks`` (IOI, Doc-String, induction and greater-than)."""
        if name == "two-tasks":
            return cls(seed=seed)
        if name == "four-tasks":
            return cls(
                seed=seed, steps=4500, batch_size=64, lr=2e-3, warmup_steps=200, n_layers=6,
                d_model=128, n_heads=4, long_every=10, corpus=CorpusConfig.four_tasks(),
                pieces="digit-pairs",
            )  # fmt: skip
        raise UsageError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}.")


def _batches(
    docs: list[tuple[list[int], list[float]]],
    batch_size: int,
    pad_id: int,
    gen: torch.Generator,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of padded batches, each of documents of similar length.

    Documents are not packed together: every row starts with its own BOS at position 0, as task
    prompts do, and no earlier document's names leak into the context (with packing, names from
    the previous sentence made IOI ambiguous and the model never learned it). Returns a list of
    (tokens [batch, pos], weights [batch, pos]); weights are 0 on padding.
    """
    order = torch.randperm(len(docs), generator=gen).tolist()
    chunk = 50 * batch_size  # sort within chunks: little padding, still random batches
    batches = []
    for start in range(0, len(order), chunk):
        idx = sorted(order[start : start + chunk], key=lambda i: len(docs[i][0]))
        for b in range(0, len(idx) - batch_size + 1, batch_size):
            rows = [docs[i] for i in idx[b : b + batch_size]]
            width = max(len(ids) for ids, _ in rows)
            tokens = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows])
            weights = torch.tensor([w + [0.0] * (width - len(w)) for _, w in rows])
            batches.append((tokens, weights))
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def _long_batch(
    filler: list[list[int]], rows: int, n_ctx: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` rows of exactly ``n_ctx`` tokens: random filler documents (each ``[bos, ...,
    eos]``) back to back, the last one cut. Weights are 1 except at each row's first token."""
    out = []
    for _ in range(rows):
        row: list[int] = []
        while len(row) < n_ctx:
            row += filler[int(torch.randint(len(filler), (1,), generator=gen))]
        out.append(row[:n_ctx])
    tokens = torch.tensor(out)
    weights = torch.ones(tokens.shape)
    weights[:, 0] = 0.0
    return tokens, weights


def _weighted_loss(
    logits: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy, averaged with the per-token ``weights`` of the predicted
    tokens."""
    token_loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    )
    w = weights[:, 1:].reshape(-1)
    return (token_loss * w).sum() / w.sum()


def _answer_weights(kind: str, ids: list[int], param_id: int | None, w: float) -> list[float]:
    """Per-token loss weights of one ``[bos, ..., eos]`` document.

    Weighted: the IOI answer, every argument after ``:param``, the greater-than end year, and
    every word of an induction repeat after its first (each one predictable only by copying).
    """
    weights = [1.0] * len(ids)
    weights[0] = 0.0  # nothing predicts BOS
    if kind in ("ioi", "greater_than"):
        weights[-3] = w  # "... to IO . <eos>", "... 17 YY . <eos>"
    elif kind == "docstring":
        for i in range(1, len(ids)):
            if ids[i - 1] == param_id:
                weights[i] = w
    elif kind == "induction":  # bos w1 .. wn w1 .. wk+1 . eos
        repeat = ids.index(ids[1], 2)
        for i in range(repeat + 1, len(ids) - 2):
            weights[i] = w
    return weights


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _check_out_dir(out: Path, overwrite: bool) -> None:
    from cltrace.files import check_out_path

    check_out_path(out, "model directory")  # before training, so no work is lost
    if out.exists() and not out.is_dir():
        raise CltraceError(f"{out} is a file; pass a directory path as --out.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CltraceError(
            f"{out} already holds files; pass a new or empty directory as --out "
            "(or --overwrite to replace it)."
        )


def train_model(
    out: str | Path,
    cfg: TrainConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log_every: int = 0,
    snapshot_every: int = 0,
) -> Path:
    """Train a GPT-2 on the synthetic corpus and save model and tokenizer to ``out``.

    ``log_every``: also print one plain line (step, loss, seconds) every that many steps, for
    logs where a progress bar does not show. ``snapshot_every``: also save the model so far every
    that many steps to ``<out>.step<N>`` (to evaluate a long run while it trains).

    Writes ``config.json``, ``model.safetensors`` (fp32), the tokenizer files and
    ``train_config.json``. Returns ``out``.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = cfg or TrainConfig()
    out = Path(out)
    _check_out_dir(out, overwrite)
    start = time.time()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    corpus_cfg = CorpusConfig(**{**asdict(cfg.corpus), "seed": cfg.seed})
    docs = generate_documents(corpus_cfg)
    if cfg.pieces not in PIECE_PATTERNS:
        raise UsageError(f"unknown pieces {cfg.pieces!r}; use one of {', '.join(PIECE_PATTERNS)}.")
    tokenizer = build_tokenizer(
        [text for _, text in docs], max_length=cfg.n_ctx, pattern=PIECE_PATTERNS[cfg.pieces]
    )
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    param_id = tokenizer.get_vocab().get("param")
    encoded = tokenizer([text for _, text in docs], add_special_tokens=False)["input_ids"]
    full = [[bos, *ids, eos][: cfg.n_ctx] for ids in encoded]
    docs_w = [
        (ids, _answer_weights(kind, ids, param_id, cfg.answer_weight))
        for (kind, _), ids in zip(docs, full, strict=True)
    ]

    model_cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    model = GPT2LMHeadModel(model_cfg)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        weight_decay=0.0,
    )
    filler_kinds = FILLER_KINDS.keys() | FOUR_TASKS_FILLER.keys()
    filler = [ids for (kind, _), ids in zip(docs, full, strict=True) if kind in filler_kinds]
    gen = torch.Generator().manual_seed(cfg.seed)
    long_gen = torch.Generator().manual_seed(cfg.seed + 1)
    epoch: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.train()
    columns = (
        TextColumn("[bold]train[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=cfg.steps, loss=float("nan"))
        ema = None
        for step in range(cfg.steps):
            if not epoch:
                epoch = _batches(docs_w, cfg.batch_size, pad, gen)
            batch, batch_w = epoch.pop()
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            logits = model(input_ids=batch, attention_mask=(batch != pad).long()).logits
            loss = _weighted_loss(logits, batch, batch_w)
            doc_loss = loss.item()
            if cfg.long_every and step % cfg.long_every == cfg.long_every - 1 and filler:
                long_tok, long_w = _long_batch(filler, cfg.long_rows, cfg.n_ctx, long_gen)
                loss = loss + _weighted_loss(model(input_ids=long_tok).logits, long_tok, long_w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            ema = doc_loss if ema is None else 0.95 * ema + 0.05 * doc_loss
            bar.update(task, advance=1, loss=ema)
            if snapshot_every and (step + 1) % snapshot_every == 0 and step + 1 < cfg.steps:
                snap = out.with_name(f"{out.name}.step{step + 1}")
                model.save_pretrained(snap, safe_serialization=True)
                tokenizer.save_pretrained(snap)
            if log_every and (step + 1) % log_every == 0:
                elapsed = time.time() - start
                print(f"step {step + 1}/{cfg.steps} loss {ema:.4f} {elapsed:.0f}s", flush=True)

    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = {**asdict(cfg), "final_loss_ema": ema, "wall_seconds": round(time.time() - start, 1)}
    (out / "train_config.json").write_text(json.dumps(record, indent=1) + "\n")
    return out
