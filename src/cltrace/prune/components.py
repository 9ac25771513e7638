"""What every PIE scorer shares for one prompt pair (docs/METHODS.md §4).

For a (clean, corrupt) pair the transcoder is run on both prompts; the occurrence set ``O`` is
the union of (layer, position, feature) triples active in either run (position 0, the BOS, is
never an occurrence). Each occurrence ``o`` has a *delta write* into every MLP output ``s >= l``::

    delta_o^(s) = (a_clean - a_corrupt) * W_dec^{l->s}[f]          ("corrupted_prompt" policy)
    delta_o^(s) = a_clean * W_dec^{l->s}[f]                          ("zero_features" policy)

Removing a set ``R`` of occurrences means running the *real* model on the clean prompt with
``y_s(t) <- y_s(t) - sum_{o in R, o.t = t} delta_o^(s)`` at every MLP output; downstream MLPs and
attention stay live. :meth:`PairComponents.run_removals` does that for a batch of removal masks at
once. The delta writes are never held densely: :class:`~cltrace.prune.writes.DeltaWrites` keeps
coefficients and decoder rows and builds what a patch or a score needs.

Occurrence bookkeeping (layer, position, feature, activations, masks, scores) lives on the CPU;
decoder rows, patches, residual streams and gradients on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.models.adapter import ModelAdapter
from cltrace.prune.resume import Recorder, RowOrigins, RowStates, per_row_bytes, start_batches
from cltrace.prune.writes import CPU, DeltaWrites
from cltrace.replacement import active_occurrences, check_sites, input_kind
from cltrace.tasks.pairs import PromptPair
from cltrace.transcoders import CrossLayerTranscoder, check_compatible

POLICIES = ("corrupted_prompt", "zero_features")
GRAD_MODES = ("direct", "full")


def kl_last(p_logits: Float[Tensor, " v"], q_logits: Float[Tensor, "b v"]) -> Float[Tensor, " b"]:
    """KL(p || q) in nats between softmax distributions, one per row of ``q_logits``."""
    logp = torch.log_softmax(p_logits.double(), -1)
    logq = torch.log_softmax(q_logits.double(), -1)
    return (logp.exp() * (logp - logq)).sum(-1).clamp(min=0.0).float()


@dataclass
class PairComponents:
    """Occurrences, their delta writes, and the clean run of one prompt pair."""

    adapter: ModelAdapter
    tokens: Int[Tensor, "1 pos"]
    """Clean prompt tokens (BOS first)."""
    corrupt_tokens: Int[Tensor, "1 pos"]
    answer: int
    wrong: int
    layer: Int[Tensor, " n"]
    position: Int[Tensor, " n"]
    feature: Int[Tensor, " n"]
    a_clean: Float[Tensor, " n"]
    a_corrupt: Float[Tensor, " n"]
    deltas: DeltaWrites
    """``delta_o^(s)`` of every occurrence, built on demand from decoder rows."""
    clean_logits: Float[Tensor, " d_vocab"]
    """Last-position logits of the unpatched clean run (float32, model device)."""
    grads: dict[str, Tensor] = field(default_factory=dict)
    """Metric gradients at the MLP outputs by gradient mode (see :func:`metric_gradients`)."""
    answers: tuple[int, ...] = ()
    """Every answer token id (``answer`` is the first); empty: ``(answer,)``."""
    wrongs: tuple[int, ...] = ()
    """Every wrong-answer token id (``wrong`` is the first); empty: ``(wrong,)``."""
    metric_name: str = "logit_diff"
    """The behaviour metric (:data:`cltrace.tasks.METRICS`)."""

    @property
    def n(self) -> int:
        return int(self.layer.numel())

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[1])

    def metric(self, logits: Float[Tensor, "... d_vocab"]) -> Float[Tensor, "..."]:
        """The behaviour metric on last-position logits (``logit_diff``: answer - wrong)."""
        answers, wrongs = self.answers or (self.answer,), self.wrongs or (self.wrong,)
        return behaviour_metric(logits, self.metric_name, answers, wrongs)

    @property
    def m_clean(self) -> float:
        return float(self.metric(self.clean_logits))

    @property
    def device(self) -> torch.device:
        return self.deltas.device

    def patch_for(self, masks: Bool[Tensor, "b n"]) -> Float[Tensor, "b pos n_layers d_model"]:
        """Sum of the delta writes of each mask's occurrences, per position and layer (float32,
        model device).

        Occurrences that every mask removes are summed once for all of them.
        """
        b = masks.shape[0]
        shared = masks.all(0) if b > 1 else torch.zeros_like(masks[0])
        if int(shared.sum()) > 4:  # e.g. a greedy pass: one removed set plus a unit per row
            base = self.patch_for(shared[None])
            return base + self.patch_for(masks & ~shared)
        return self.deltas.patch(masks, self.n_pos)

    def rows_per_batch(self, batch_size: int, memory_gb: float = 2.0) -> int:
        """Patched passes per batch: ``batch_size``, fewer when activations would not fit."""
        a = self.adapter
        per_row = 40 * self.n_pos * a.d_model * a.n_layers  # ~10 float32 activations per site
        return max(1, min(batch_size, int(memory_gb * 2**30 // per_row)))

    def state_bytes_per_row(self) -> int:
        """Bytes one row of :meth:`record_removals` keeps."""
        return per_row_bytes(self._clean_resid(), self._clean_keys_values())

    @torch.no_grad()
    def run_removals(
        self,
        masks: Bool[Tensor, "b n"],
        batch_size: int = 64,
        bases: Int[Tensor, " b"] | None = None,
        states: RowStates | None = None,
    ) -> Float[Tensor, "b d_vocab"]:
        """Last-position logits of the clean prompt with each mask's occurrences removed.

        A mask that removes nothing is the clean run itself (its logits are copied, so e.g. its
        KL to the clean run is exactly 0). A removal changes nothing before the MLP output of
        its earliest source layer ``l``, so each row starts from the clean residual stream after
        block ``l`` minus that layer's patch and runs only the blocks after it: a unit of the
        last layer costs no block at all. Nor does it change any position before its earliest
        one ``t``: where the model allows (:meth:`ModelAdapter.prompt_keys_values`), only
        positions ``t..`` are computed, attending to the clean run's keys and values before
        them. Rows are batched by ``(l, t)``.

        ``bases`` (with ``states`` from :meth:`record_removals`) resumes row ``i`` from the
        recorded run of a subset ``states.masks[bases[i]]`` of its mask instead of the clean
        run (-1: the clean run): ``l`` and ``t`` are then those of the occurrences the base
        does not remove, so e.g. a pair whose base is one of its units costs what the other
        unit alone costs.
        """
        return self._removals(masks, batch_size, bases, states, record=False)[0]

    @torch.no_grad()
    def record_removals(
        self,
        masks: Bool[Tensor, "b n"],
        batch_size: int = 64,
        bases: Int[Tensor, " b"] | None = None,
        states: RowStates | None = None,
    ) -> tuple[Float[Tensor, "b d_vocab"], RowStates]:
        """:meth:`run_removals`, also keeping each row's residual stream and keys and values
        so that later rows can resume from it (``bases``)."""
        logits, recorded = self._removals(masks, batch_size, bases, states, record=True)
        assert recorded is not None
        return logits, recorded

    def _removals(
        self,
        masks: Bool[Tensor, "b n"],
        batch_size: int,
        bases: Int[Tensor, " b"] | None,
        states: RowStates | None,
        record: bool,
    ) -> tuple[Float[Tensor, "b d_vocab"], RowStates | None]:
        kv = self._clean_keys_values()
        resid = self._clean_resid()
        origin = RowOrigins(self.clean_logits, resid, kv, states, bases, masks.shape[0])
        # what each row removes beyond its base: it decides where the row starts
        every = torch.arange(masks.shape[0], device=CPU)
        rest = masks & ~origin.masks(every, masks.shape[1]) if origin.any_base else masks
        out = origin.logits()
        recorder = Recorder(origin, masks) if record else None
        todo = rest.any(1).nonzero().squeeze(1)
        L, a = self.adapter.n_layers, self.adapter
        first = torch.where(rest[todo], self.layer, L).amin(1)
        starts = torch.zeros_like(first)
        if kv is not None:
            starts = torch.where(rest[todo], self.position, self.n_pos).amin(1)
        size = self.rows_per_batch(batch_size)
        for start_layer, t, rows in start_batches(first, starts, todo, size, L, self.n_pos):
            # the base's run already subtracted its own patch at the first layer; the later
            # layers' MLPs run anew, so there the whole row's patch is subtracted
            own = self.patch_for(rest[rows])[:, t:]
            base_patch = origin.patch(rows, self.patch_for)
            patch = own if base_patch is None else own + base_patch[:, t:]
            hidden = origin.resid(rows, start_layer, t) - own[:, :, start_layer].to(resid.dtype)
            hooks = {
                f"mlp_out.{s}": (lambda x, p=patch[:, :, s]: x - p.to(x.dtype))
                for s in range(start_layer + 1, L)
            }
            seen: dict[int, Tensor] = {}
            if recorder is not None:
                hooks.update({f"resid_post.{s}": (lambda x, s=s, seen=seen: seen.__setitem__(s, x))
                              for s in range(start_layer + 1, L)})  # fmt: skip
            kv_out: list | None = [] if recorder is not None and kv is not None else None
            with a.resume_after(start_layer, hidden), a.hooks(hooks), a.fused_activations(), \
                    a.last_position_mlp():
                logits = a.last_logits(self.tokens.expand(rows.numel(), -1), t,
                                       origin.keys_values(rows, t), kv_out)  # fmt: skip
            out[rows] = logits.float()
            if recorder is not None:
                recorder.write(rows, start_layer, t, out[rows], hidden, seen, kv_out)
        return out, None if recorder is None else recorder.states

    def _clean_keys_values(self) -> list[tuple[Tensor, Tensor]] | None:
        """The clean run's attention keys and values (None where the model cannot resume
        mid-prompt), computed once."""
        self._clean_run()
        return self._kv

    def _clean_resid(self) -> Float[Tensor, "n_layers pos d_model"]:
        """The clean run's residual stream after each block (model dtype), computed once."""
        self._clean_run()
        return self._resid

    def _clean_run(self) -> None:
        """One clean forward pass that records both the keys and values and the residual
        stream after each block."""
        if hasattr(self, "_resid"):
            return
        sites = self.adapter.sites("resid_post")
        with torch.no_grad(), self.adapter.cache(sites) as c:
            self._kv = self.adapter.prompt_keys_values(self.tokens)
        self._resid = torch.stack([c[s][0] for s in sites])

    def removal_effect(
        self,
        masks: Bool[Tensor, "b n"],
        batch_size: int = 64,
        bases: Int[Tensor, " b"] | None = None,
        states: RowStates | None = None,
    ) -> Tensor:
        """``M(S) = m(clean) - m(clean with S removed)`` for each mask (``bases``/``states``:
        as :meth:`run_removals`)."""
        return self.effect(self.run_removals(masks, batch_size, bases, states))

    def effect(self, logits: Float[Tensor, "b d_vocab"]) -> Float[Tensor, " b"]:
        """``m(clean) - m(logits)``: the removal effect of rows whose last logits are given."""
        return self.m_clean - self.metric(logits)

    def masks_from_sets(self, sets: list[Tensor]) -> Bool[Tensor, "b n"]:
        masks = torch.zeros(len(sets), self.n, dtype=torch.bool, device=CPU)
        for i, s in enumerate(sets):
            masks[i, s] = True
        return masks


@torch.no_grad()
def occurrence_key(
    layer: Int[Tensor, " n"],
    position: Int[Tensor, " n"],
    feature: Int[Tensor, " n"],
    n_pos: int,
    d_features: int,
) -> Int[Tensor, " n"]:
    """One integer per (layer, position, feature) occurrence, ascending in that order."""
    return (layer * n_pos + position) * d_features + feature


def split_occurrence_key(
    keys: Int[Tensor, " n"], n_pos: int, d_features: int
) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"], Int[Tensor, " n"]]:
    """``(layer, position, feature)`` of keys made by :func:`occurrence_key`."""
    return keys // (d_features * n_pos), (keys // d_features) % n_pos, keys % d_features


def behaviour_metric(
    logits: Float[Tensor, "... d_vocab"],
    name: str,
    answers: tuple[int, ...],
    wrongs: tuple[int, ...],
) -> Float[Tensor, "..."]:
    """Metric ``name`` of :data:`cltrace.tasks.METRICS` (``logit_diff``: first answer minus
    first wrong answer, in the logits' dtype as before)."""
    if name == "logit_diff":
        return logits[..., answers[0]] - logits[..., wrongs[0]]
    from cltrace.tasks.metrics import METRICS

    return METRICS[name](logits, answers, wrongs)


def compute_components(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    pair: PromptPair,
    policy: str = "corrupted_prompt",
    grad_mode: str = "direct",
    metric: str = "logit_diff",
) -> PairComponents:
    """Encode both prompts, form the occurrence set and the delta writes (docs/METHODS.md §4).

    The clean forward also takes the ``grad_mode`` metric gradient, so FAP costs one clean
    forward, one corrupt forward and one backward in all.
    """
    if policy not in POLICIES:
        raise CltraceError(f"unknown ablation policy {policy!r}; use one of {POLICIES}.")
    check_compatible(transcoder, adapter, names=False)  # loading already warned
    kind = check_sites(transcoder, adapter)  # features read mlp_in or resid_mid
    clean = adapter.to_tokens(pair.clean)
    corrupt = adapter.to_tokens(pair.corrupt)
    if clean.shape != corrupt.shape:
        raise CltraceError(
            f"clean and corrupt prompts tokenize to {clean.shape[1]} and {corrupt.shape[1]} "
            f"tokens ({pair.clean!r}); give pairs of equal token length."
        )
    answers = tuple(adapter.single_token_id(t) for t in pair.answers)
    wrongs = tuple(adapter.single_token_id(t) for t in pair.wrong_answers)
    answer, wrong = answers[0], wrongs[0]
    sites = adapter.sites(kind)
    clean_logits, x_clean, grads = _clean_pass(
        adapter,
        transcoder,
        clean,
        lambda lg: behaviour_metric(lg, metric, answers, wrongs),
        grad_mode,
    )
    with torch.no_grad(), adapter.cache(sites) as c_corr:
        adapter(corrupt)
    x_corr = torch.stack([c_corr[s][0] for s in sites]).float()
    T, F = clean.shape[1], transcoder.d_features
    keys, values = [], []
    for x in (x_clean, x_corr):
        act = active_occurrences(transcoder, x)
        keys.append(occurrence_key(act.layer, act.position, act.feature, T, F).cpu())
        values.append(act.value.float().cpu())
    occ = torch.unique(torch.cat(keys))  # sorted: (layer, position, feature) order
    a_clean = torch.zeros(occ.numel(), device=CPU)
    a_corr = torch.zeros(occ.numel(), device=CPU)
    a_clean[torch.searchsorted(occ, keys[0])] = values[0]
    a_corr[torch.searchsorted(occ, keys[1])] = values[1]
    layer, position, feature = split_occurrence_key(occ, T, F)
    delta = a_clean - (a_corr if policy == "corrupted_prompt" else 0.0)
    deltas = DeltaWrites.build(transcoder, layer, position, feature, delta, adapter.device)
    return PairComponents(
        adapter=adapter,
        tokens=clean,
        corrupt_tokens=corrupt,
        answer=answer,
        wrong=wrong,
        layer=layer,
        position=position,
        feature=feature,
        a_clean=a_clean,
        a_corrupt=a_corr,
        deltas=deltas,
        clean_logits=clean_logits,
        grads={grad_mode: grads},
        answers=answers,
        wrongs=wrongs,
        metric_name=metric,
    )


def _clean_pass(
    adapter: ModelAdapter,
    transcoder: CrossLayerTranscoder,
    tokens: Int[Tensor, "1 pos"],
    metric,
    mode: str,
) -> tuple[Float[Tensor, " d_vocab"], Float[Tensor, "n_layers pos d_model"], Tensor]:
    """One clean forward with gradients: last logits, MLP inputs, and ``d m / d y_s(t)``."""
    from cltrace.models.freeze import detached_scales

    L = adapter.n_layers
    if mode not in GRAD_MODES:
        raise CltraceError(f"unknown gradient mode {mode!r}; use 'direct' or 'full'.")
    leaves: dict[int, Tensor] = {}
    ins: dict[int, Tensor] = {}

    def store_in(layer):
        def fn(t):
            ins[layer] = t

        return fn

    def leaf_out(layer):
        # the MLP output becomes a leaf (no gradient into the real MLP); a skip path stays live
        def fn(t):
            has_skip = transcoder.W_skip is not None
            skip = transcoder.skip(layer, ins[layer]).to(t.dtype) if has_skip else 0.0
            base = (t - skip).detach().requires_grad_()
            leaves[layer] = base
            return base + skip

        return fn

    hooks = {f"{input_kind(transcoder)}.{layer}": store_in(layer) for layer in range(L)}
    with torch.enable_grad():
        if mode == "direct":
            hooks.update({f"mlp_out.{layer}": leaf_out(layer) for layer in range(L)})
            with detached_scales(adapter), adapter.hooks(hooks):
                logits = adapter(tokens)
        else:
            with adapter.hooks(hooks), adapter.cache(adapter.sites("mlp_out"), False) as c:
                logits = adapter(tokens)
            leaves = {layer: c[f"mlp_out.{layer}"] for layer in range(L)}
        last = logits[0, -1].float()
        grads = torch.autograd.grad(
            metric(last), [leaves[layer] for layer in range(L)], allow_unused=True
        )
    g = torch.stack(
        [torch.zeros_like(leaves[i][0]) if x is None else x[0] for i, x in enumerate(grads)]
    ).float()
    x = torch.stack([ins[layer][0].detach() for layer in range(L)]).float()
    return last.detach(), x, g


def metric_gradients(
    comps: PairComponents,
    transcoder: CrossLayerTranscoder,
    mode: str = "direct",
) -> Float[Tensor, "n_layers pos d_model"]:
    """``g_s(t) = d m / d y_s(t)`` on the clean run (docs/METHODS.md §4).

    ``direct``: attention patterns and norm scales frozen and every MLP output detached (the
    gradient follows the residual stream, attention OV and a transcoder skip path only);
    ``full``: the plain gradient through the real model, MLPs included. The components' own
    clean pass already computed one mode's gradient; another mode costs one more pass.
    """
    if mode not in comps.grads:
        comps.grads[mode] = _clean_pass(
            comps.adapter, transcoder, comps.tokens, comps.metric, mode
        )[2]
    return comps.grads[mode]


def fap_scores(
    comps: PairComponents, grads: Float[Tensor, "n_layers pos d_model"]
) -> Float[Tensor, " n"]:
    """``S_FAP(o) = sum_s <delta_o^(s), g_s(t_o)>`` (docs/METHODS.md §4), float32 on the CPU."""
    return comps.deltas.scores(grads)
