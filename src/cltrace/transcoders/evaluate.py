"""Transcoder quality (docs/METHODS.md §1): per-layer FVU, L0, dead features, and how well the
model still predicts when every MLP output is replaced by the transcoder's reconstruction."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from cltrace.transcoders.clt import CrossLayerTranscoder
from cltrace.transcoders.data import harvest, pack_texts
from cltrace.transcoders.hooknames import hook_site


@dataclass
class EvalReport:
    """Evaluation of one transcoder on held-out text."""

    n_tokens: int
    """Token positions evaluated (padding excluded)."""
    fvu: list[float]
    """Per layer: ||y_hat - y||^2 / ||y - mean y||^2 over all positions (clean activations)."""
    mean_fvu: float
    """Mean of ``fvu`` over layers."""
    l0: list[float]
    """Per layer: mean number of active features per token."""
    mean_l0: float
    """Mean of ``l0`` over layers."""
    dead_share: float
    """Share of all features never active on the evaluated tokens."""
    n_features: int
    """Total features (layers x features per layer)."""
    replacement_agreement: float
    """Share of positions whose top-1 next token is unchanged when every MLP output is the
    transcoder's reconstruction (attention live, errors not corrected)."""
    replacement_kl: float
    """Mean KL(model || replacement) of the next-token distributions, in nats per position."""

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def reconstruction_stats(tc: CrossLayerTranscoder, x, y, batch: int = 4096):
    """FVU and L0 per layer and per-feature activity from clean ``x, y`` [N, L, D]."""
    L = tc.n_layers
    err = torch.zeros(L)
    l0 = torch.zeros(L)
    alive = torch.zeros(L, tc.d_features, dtype=torch.bool)
    for s in range(0, len(x), batch):
        xb, yb = x[s : s + batch].transpose(0, 1), y[s : s + batch].transpose(0, 1)
        acts = tc.encode_all(xb)
        recon = tc.reconstruct_from(xb, acts)
        err += (recon - yb).pow(2).sum((1, 2))
        nz = acts != 0
        l0 += nz.float().sum((1, 2))
        alive |= nz.any(1)
    total = (y - y.mean(0, keepdim=True)).pow(2).sum((0, 2))
    return (err / total).tolist(), (l0 / len(x)).tolist(), alive


def _input_kind(tc: CrossLayerTranscoder) -> str:
    """The adapter site the features read (the hook table's kind of the input hook)."""
    return hook_site(tc.cfg.feature_input_hook).kind


def replacement_hooks(tc: CrossLayerTranscoder) -> dict:
    """Adapter hooks that swap every ``mlp_out.l`` for the reconstruction from the live input.

    The CLT output at layer l needs the features of layers <= l, computed from the inputs
    (``mlp_in`` or ``resid_mid``, :func:`_input_kind`) of *this* (replaced) forward pass; the
    input hooks record them as the pass goes.
    """
    acts: dict[int, torch.Tensor] = {}
    xs: dict[int, torch.Tensor] = {}

    def read(i):
        def fn(x):
            xs[i] = x
            acts[i] = tc.encode(i, x.float())
            return None

        return fn

    def write(i):
        def fn(y):
            out = tc.decode([acts[j] for j in range(i + 1)], i) + tc.skip(i, xs[i].float())
            return out.to(y.dtype)

        return fn

    hooks = {f"{_input_kind(tc)}.{i}": read(i) for i in range(tc.n_layers)}
    hooks.update({f"mlp_out.{i}": write(i) for i in range(tc.n_layers)})
    return hooks


@torch.no_grad()
def replacement_scores(model, tc, rows, valid, batch_rows: int = 16) -> tuple[float, float]:
    agree, kl, n = 0.0, 0.0, 0
    hooks = replacement_hooks(tc)
    for s in range(0, len(rows), batch_rows):
        tokens, mask = rows[s : s + batch_rows], valid[s : s + batch_rows]
        clean = model(tokens, attention_mask=mask.long()).float()
        with model.hooks(hooks):
            repl = model(tokens, attention_mask=mask.long()).float()
        c, r = clean[mask], repl[mask]
        agree += (c.argmax(-1) == r.argmax(-1)).float().sum().item()
        lp, lq = F.log_softmax(c, -1), F.log_softmax(r, -1)
        kl += (lp.exp() * (lp - lq)).sum(-1).sum().item()
        n += int(mask.sum())
    return agree / n, kl / n


def evaluate_transcoder(
    model, tc: CrossLayerTranscoder, texts: list[str], n_tokens: int = 20_000, n_ctx: int = 96
) -> EvalReport:
    """The quality figures (docs/METHODS.md §1) on the first ``n_tokens`` tokens of ``texts``
    (packed like training)."""
    rows, valid = pack_texts(model, texts, n_ctx)
    keep = int((valid.sum(1).cumsum(0) < n_tokens).sum()) + 1
    rows, valid = rows[:keep], valid[:keep]
    x, y = harvest(model, rows, valid, input_kind=_input_kind(tc))
    fvu, l0, alive = reconstruction_stats(tc, x, y)
    agreement, kl = replacement_scores(model, tc, rows, valid)
    return EvalReport(
        n_tokens=len(x), fvu=fvu, mean_fvu=sum(fvu) / len(fvu), l0=l0, mean_l0=sum(l0) / len(l0),
        dead_share=1.0 - alive.float().mean().item(), n_features=tc.n_features(),
        replacement_agreement=agreement, replacement_kl=kl,
    )  # fmt: skip


@torch.no_grad()
def active_occurrences(model, tc: CrossLayerTranscoder, prompts: list[str]) -> list[int]:
    """Number of active (layer, position, feature) occurrences on each prompt."""
    sites = [f"{_input_kind(tc)}.{i}" for i in range(tc.n_layers)]
    counts = []
    for p in prompts:
        with model.cache(sites) as cache:
            model(model.to_tokens(p))
        x_all = torch.stack([cache[s][0] for s in sites]).float()
        counts.append(len(tc.encode_sparse(x_all)))
    return counts
