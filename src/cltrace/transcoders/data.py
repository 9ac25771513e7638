"""Text sources and MLP activation harvesting shared by transcoder training and evaluation."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from cltrace.errors import CltraceError


def bundled_texts(n_docs: int, seed: int) -> list[str]:
    """Documents of the bundled synthetic corpus (a seed other than the model's = unseen text)."""
    return load_texts(None, n_docs, seed)


def load_texts(source: str | None, n_docs: int, seed: int) -> list[str]:
    """Documents from ``source``: ``None``/``"bundled"``, a text file (one document per
    non-empty line) or a Hugging Face dataset name (its ``text`` column, train split)."""
    from cltrace.corpus import load_texts as load

    return load(source, n_docs, seed, bare_dataset_names=True)


def model_context(model, default: int = 96) -> int:
    cfg = model.hf_model.config
    n = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    return min(default, int(n)) if n else default


def pack_texts(model, texts: list[str], n_ctx: int) -> tuple[Int[Tensor, "R n_ctx"], Tensor]:
    """Greedily pack ``[BOS] doc`` token lists into rows (documents are never split).

    Returns ``(rows, valid)``: padded token rows and a mask of real (non-pad) positions. Each row
    starts at a document's BOS, as the bundled model saw its training rows.
    """
    tok = model.tokenizer
    bos = model.bos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else bos
    encoded = tok(list(texts), add_special_tokens=False)["input_ids"]
    rows, lengths, row = [], [], []
    for ids in encoded:
        ids = [bos, *ids][:n_ctx]
        if len(row) + len(ids) > n_ctx:
            rows.append(row)
            row = []
        row = row + ids
    if row:
        rows.append(row)
    if not rows:
        raise CltraceError("The corpus produced no tokens; pass non-empty text.")
    lengths = [len(r) for r in rows]
    out = torch.full((len(rows), n_ctx), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    valid = torch.arange(n_ctx)[None, :] < torch.tensor(lengths)[:, None]
    return out, valid


@torch.no_grad()
def harvest(
    model,
    rows: Int[Tensor, "R T"],
    valid: Bool[Tensor, "R T"],
    batch_rows: int = 32,
    input_kind: str = "mlp_in",
) -> tuple[Float[Tensor, "N L D"], Float[Tensor, "N L D"]]:
    """MLP inputs and outputs of every layer at every valid position, ``(x, y)`` [N, L, D].

    ``input_kind``: the site ``x`` is read at (``resid_mid`` for transcoders reading the
    residual stream before the MLP's norm)."""
    L = model.n_layers
    sites = [f"{input_kind}.{i}" for i in range(L)] + [f"mlp_out.{i}" for i in range(L)]
    xs, ys = [], []
    for start in range(0, len(rows), batch_rows):
        tokens = rows[start : start + batch_rows].to(model.device)
        mask = valid[start : start + batch_rows].to(model.device)
        with model.cache(sites) as cache:
            model(tokens, attention_mask=mask.long())
        xs.append(torch.stack([cache[s][mask] for s in sites[:L]], 1).float().cpu())
        ys.append(torch.stack([cache[f"mlp_out.{i}"][mask] for i in range(L)], 1).float().cpu())
    return torch.cat(xs), torch.cat(ys)
