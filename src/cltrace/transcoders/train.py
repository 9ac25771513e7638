"""Train a cross-layer (or per-layer) transcoder on a model's MLP activations.

Loss (Ameisen et al. 2025, "Circuit Tracing", methods): the fraction of variance unexplained of
every MLP output, averaged over layers, plus ``lambda * sum_f tanh(c * a_f * ||W_dec_f||)`` with
JumpReLU thresholds learned through a straight-through estimator, plus a small pre-activation
term that nudges dead features back above threshold. TopK transcoders use the FVU term only.

Data is a pure function of ``(seed, step)``: step ``s`` reads chunk ``s // chunk_steps``, whose
activations are harvested from a fixed slice of packed rows and shuffled by a generator seeded
with the chunk number. A resumed run therefore recomputes exactly the data an uninterrupted run
would have seen, and gives the same weights.

Under ``torchrun`` (``world`` with more than one process) every rank keeps a full copy of the
transcoder and takes every ``world_size``-th token of each step's batch; the gradients are
averaged across ranks before the update, which is the gradient of the whole batch's loss (every
term is a mean over tokens), so the run follows the single-process one within float rounding.
Rank 0 alone writes checkpoints and the result; a checkpoint resumes at any world size.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cltrace.dist import World, all_ok, barrier
from cltrace.errors import CltraceError
from cltrace.transcoders.clt import CrossLayerTranscoder, TranscoderConfig
from cltrace.transcoders.data import harvest, pack_texts
from cltrace.transcoders.io import save_transcoder

CHECKPOINT = "checkpoint.pt"
CONFIG = "train_config.json"


@dataclass(frozen=True)
class CLTTrainConfig:
    """One transcoder training run (saved as ``train_config.json`` beside the checkpoint)."""

    cross_layer: bool = True
    """Train a CLT (True) or a set of per-layer transcoders (False)."""
    d_features: int = 512
    """Features per layer."""
    activation: str = "jumprelu"
    """``jumprelu`` (tanh sparsity penalty), ``relu`` (same penalty) or ``topk``."""
    k: int | None = None
    """Active features per token and layer for ``topk``."""
    skip: bool = False
    """Learn a linear skip ``W_skip`` per layer."""
    steps: int = 2500
    """Optimizer steps."""
    batch_tokens: int = 1024
    """Token positions per step (all layers of each)."""
    lr: float = 2e-3
    """Peak Adam learning rate (warm-up, then linear decay to a tenth over the last 30%)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    sparsity: float = 0.012
    """Final coefficient lambda of the tanh sparsity penalty (ramped up linearly)."""
    sparsity_c: float = 1.0
    """Sharpness c inside tanh(c * a * ||W_dec||)."""
    sparsity_warmup: float = 0.7
    """Fraction of training over which lambda ramps from 0 to ``sparsity``."""
    preact: float = 3e-4
    """Coefficient of the pre-activation loss relu(theta - z) * ||W_dec|| (revives dead
    features)."""
    threshold_init: float = 0.3
    """Initial JumpReLU threshold, in units of the normalised pre-activation."""
    n_ctx: int = 96
    """Tokens per packed row."""
    chunk_rows: int = 64
    """Packed rows harvested per data chunk."""
    chunk_steps: int = 50
    """Optimizer steps drawn from one chunk before the next is harvested."""
    seed: int = 0
    """Seeds the initial weights and the data order."""
    checkpoint_every: int = 500
    """Steps between checkpoints (model, optimizer, RNG and data position)."""

    def transcoder_config(self, model) -> TranscoderConfig:
        return TranscoderConfig(
            n_layers=model.n_layers, d_model=model.d_model, d_features=self.d_features,
            cross_layer=self.cross_layer, activation=self.activation, k=self.k, skip=self.skip,
            model_name=str(model.name), feature_input_hook="mlp.hook_in",
            feature_output_hook="mlp.hook_out",
        )  # fmt: skip


class _Chunks:
    """Deterministic activation chunks: chunk c = harvested rows of a seeded row order."""

    def __init__(self, model, rows, valid, cfg: CLTTrainConfig):
        self.model, self.rows, self.valid, self.cfg = model, rows, valid, cfg
        g = torch.Generator().manual_seed(cfg.seed)
        self.order = torch.randperm(len(rows), generator=g)
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def get(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cached is None or self._cached[0] != c:
            n, R = len(self.rows), self.cfg.chunk_rows
            idx = self.order[(torch.arange(c * R, (c + 1) * R)) % n]
            x, y = harvest(self.model, self.rows[idx], self.valid[idx])
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + c)
            perm = torch.randperm(len(x), generator=g)
            self._cached = (c, x[perm], y[perm])
        return self._cached[1], self._cached[2]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.get(step // self.cfg.chunk_steps)
        B = self.cfg.batch_tokens
        i = (step % self.cfg.chunk_steps) * B
        idx = torch.arange(i, i + B) % len(x)
        # [B, L, D] -> [L, B, D], the layout the transcoder expects
        return x[idx].transpose(0, 1), y[idx].transpose(0, 1)


def _scales(x: torch.Tensor, y: torch.Tensor):
    """Per-layer RMS of inputs and outputs, and the variance of outputs (after scaling)."""
    sx = x.pow(2).mean((0, 2)).sqrt()  # [L]
    sy = y.pow(2).mean((0, 2)).sqrt()
    yn = y / sy[None, :, None]
    var = (yn - yn.mean(0, keepdim=True)).pow(2).sum(-1).mean(0)  # [L]
    return sx, sy, var


def _init(tc: CrossLayerTranscoder, cfg: CLTTrainConfig, y_mean: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(cfg.seed)
    D, F, L = tc.d_model, tc.d_features, tc.n_layers
    with torch.no_grad():
        for i in range(L):
            # Unit-norm encoder rows give O(1) pre-activations on unit-RMS inputs.
            w = torch.randn(F, D, generator=g)
            tc.W_enc[i].copy_(w / w.norm(dim=1, keepdim=True))
            tc.W_dec[i].copy_(torch.randn(tc.W_dec[i].shape, generator=g) / math.sqrt(F * L))
            tc.b_dec[i].copy_(y_mean[i])
            if tc.threshold is not None:
                tc.threshold[i].fill_(cfg.threshold_init)


def _lr(step: int, cfg: CLTTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_from = int(0.7 * cfg.steps)
    if step < decay_from:
        return cfg.lr
    frac = (step - decay_from) / max(1, cfg.steps - decay_from)
    return cfg.lr * (1 - 0.9 * frac)


def _loss(tc, cfg, x, y, var, step):
    # Pre-activations are kept: the pre-activation loss reuses them (no second encoder pass).
    pre = [tc.pre_activation(i, x[i]) for i in range(tc.n_layers)]
    acts = torch.stack([tc.activate(i, p) for i, p in enumerate(pre)])
    recon = tc.reconstruct_from(x, acts)
    fvu = (recon - y).pow(2).sum(-1).mean(-1) / var  # [L]
    loss = fvu.mean()
    sparsity = torch.zeros(())
    if cfg.activation != "topk":
        lam = cfg.sparsity * min(1.0, step / max(1, cfg.sparsity_warmup * cfg.steps))
        for i in range(tc.n_layers):
            norm = tc.W_dec[i].flatten(1).norm(dim=1)
            sparsity = sparsity + torch.tanh(cfg.sparsity_c * acts[i] * norm).sum(-1).mean()
            if tc.threshold is not None and cfg.preact > 0:
                dead = torch.relu(tc.threshold[i] - pre[i]) * norm
                loss = loss + cfg.preact * dead.sum(-1).mean() / tc.n_layers
        loss = loss + lam * sparsity / tc.n_layers
    l0 = (acts != 0).float().sum(-1).mean()
    return loss, fvu.detach(), l0.detach()


def fold_scales(tc: CrossLayerTranscoder, sx, sy) -> CrossLayerTranscoder:
    """Turn a transcoder trained on ``x / sx``, ``y / sy`` into one on raw activations."""
    with torch.no_grad():
        for i in range(tc.n_layers):
            tc.W_enc[i].div_(sx[i])
            for j in range(tc.n_out(i)):
                tc.W_dec[i][:, j].mul_(sy[i + j])
            tc.b_dec[i].mul_(sy[i])
            if tc.W_skip is not None:
                tc.W_skip[i].mul_(sy[i] / sx[i])
    return tc


def train_transcoder(
    model,
    texts: list[str],
    out: str | Path,
    cfg: CLTTrainConfig | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    world: World | None = None,
) -> CrossLayerTranscoder:
    """Train on ``texts`` and write the transcoder (circuit-tracer layout) to ``out``.

    ``stop_after`` ends this call after that many total steps, leaving a checkpoint (a planned
    interruption; tests and long jobs use it). ``resume`` continues from ``out/checkpoint.pt``.
    ``world``: this process's rank among several (see the module docstring).
    """
    cfg = cfg or CLTTrainConfig()
    world = world or World()
    from cltrace.files import check_out_path

    out = check_out_path(Path(out), "transcoder directory")  # before training: no work lost
    ckpt_path = out / CHECKPOINT
    if cfg.batch_tokens % world.size:
        raise CltraceError(
            f"batch_tokens {cfg.batch_tokens} does not split over {world.size} processes; use a "
            "process count that divides it."
        )
    problem = None
    if resume and not ckpt_path.is_file():
        problem = f"Nothing to resume in {str(out)!r}: no {CHECKPOINT}; drop --resume."
    if not resume and out.is_dir() and (out / CONFIG).exists():
        problem = (
            f"{str(out)!r} already holds a transcoder run; pass --resume or a new --out directory."
        )
    if not all_ok(world, problem is None):  # every rank checks before rank 0 writes anything
        raise CltraceError(problem or f"another process refused {str(out)!r}; see its message.")
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    rows, valid = pack_texts(model, texts, cfg.n_ctx)
    chunks = _Chunks(model, rows, valid, cfg)
    x0, y0 = chunks.get(0)
    sx, sy, var = _scales(x0, y0)
    tc = CrossLayerTranscoder(cfg.transcoder_config(model))
    torch.manual_seed(cfg.seed)
    _init(tc, cfg, (y0 / sy[None, :, None]).mean(0))
    opt = torch.optim.Adam(tc.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    step = 0
    if resume:
        state = torch.load(ckpt_path, weights_only=False)
        if state["config"] != asdict(cfg):
            raise CltraceError(
                f"The checkpoint in {str(out)!r} was made with another training "
                "config; resume with the same options or start a new --out."
            )
        tc.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
    barrier(world)  # every rank has read the checkpoint before rank 0 may replace it
    if world.is_main:
        (out / CONFIG).write_text(json.dumps(asdict(cfg), indent=2))
    curve: list[list[float]] = []

    def save_checkpoint(at: int) -> None:
        if not world.is_main:
            return
        state = {
            "step": at,
            "model": tc.state_dict(),
            "optim": opt.state_dict(),
            "rng": torch.get_rng_state(),
            "config": asdict(cfg),
            "data": {"chunk": at // cfg.chunk_steps, "offset": at % cfg.chunk_steps},
        }
        torch.save(state, ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)  # never leave a half-written checkpoint

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    start_time, tokens = time.time(), 0
    columns = (
        TextColumn("[bold]train transcoder[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("fvu {task.fields[fvu]:.3f} L0 {task.fields[l0]:.1f}"),
        TimeRemainingColumn(),
    )
    tc.train()
    try:
        with Progress(*columns, disable=not (progress and world.is_main)) as bar:
            task = bar.add_task("train", total=cfg.steps, completed=step, fvu=1.0, l0=0.0)
            while step < end:
                x, y = chunks.batch(step)
                x = x[:, world.rank :: world.size] / sx[:, None, None]
                y = y[:, world.rank :: world.size] / sy[:, None, None]
                for group in opt.param_groups:
                    group["lr"] = _lr(step, cfg)
                loss, fvu, l0 = _loss(tc, cfg, x, y, var, step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world.distributed:
                    fvu, l0 = _average_gradients(tc, world, fvu, l0)
                if step % LOG_EVERY == 0:
                    curve.append([step, float(fvu.mean())])
                torch.nn.utils.clip_grad_norm_(tc.parameters(), 1.0)
                opt.step()
                if tc.threshold is not None:
                    with torch.no_grad():
                        for t in tc.threshold:
                            t.clamp_(min=1e-3)
                step += 1
                tokens += cfg.batch_tokens
                bar.update(task, completed=step, fvu=float(fvu.mean()), l0=float(l0))
                if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    save_checkpoint(step)
    except KeyboardInterrupt:
        save_checkpoint(step)
        raise CltraceError(
            f"Training interrupted at step {step}; a checkpoint is in "
            f"{str(out)!r}, continue with --resume."
        ) from None
    tc.eval()
    if step < cfg.steps:
        save_checkpoint(step)
        return tc
    final = fold_scales(tc, sx, sy)
    if not world.is_main:
        return final
    save_transcoder(final, out)
    seconds = time.time() - start_time
    (out / "train_stats.json").write_text(
        json.dumps(
            {
                "seconds": seconds,
                "tokens": tokens,
                "tokens_per_s": tokens / max(seconds, 1e-9),
                "final_fvu": float(fvu.mean()) if step else None,
                "final_l0": float(l0) if step else None,
                "world_size": world.size,
                "fvu_curve": curve,
            },
            indent=2,
        )
    )
    ckpt_path.unlink(missing_ok=True)
    return final


LOG_EVERY = 10
"""Steps between the entries of ``train_stats.json``'s ``fvu_curve`` (this call's steps)."""


def _average_gradients(tc: CrossLayerTranscoder, world: World, fvu, l0):
    """Average every gradient (and the reported FVU and L0) over the ranks, in one reduction."""
    import torch.distributed as dist

    params = [p for p in tc.parameters() if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params] + [fvu.reshape(-1), l0.reshape(-1)])
    dist.all_reduce(flat)
    flat /= world.size
    at = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[at : at + n].view_as(p.grad))
        at += n
    return flat[at : at + fvu.numel()].view_as(fvu), flat[-1]


def config_from_dict(d: dict) -> CLTTrainConfig:
    names = {f.name for f in fields(CLTTrainConfig)}
    return CLTTrainConfig(**{k: v for k, v in d.items() if k in names})
