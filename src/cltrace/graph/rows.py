"""Edge rows: gradients of target reads at the leaves of the frozen model, dotted with the sources'
writes (docs/METHODS.md §2).

:class:`DirectGradients` runs the transpose of the frozen replacement model for a batch of targets;
:class:`EdgeComputer` turns those gradients into one row per target over the source columns of
:class:`~cltrace.graph.nodes.NodeIndex` (every active feature, the error nodes, the tokens).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.graph.nodes import NodeIndex
from cltrace.models.adapter import ModelAdapter
from cltrace.models.linear import FrozenTranspose
from cltrace.replacement import ReplacementState, decoder_block
from cltrace.transcoders import CrossLayerTranscoder


class DirectGradients:
    """Gradients of target reads at the leaves of the frozen model (see module docstring).

    Runs :class:`~cltrace.models.linear.FrozenTranspose`: no forward pass and no autograd; a
    batch of feature targets (all at one layer) runs on the prefix of positions up to its last
    target, and only through the layers below it.
    """

    def __init__(
        self, adapter: ModelAdapter, transcoder: CrossLayerTranscoder, state: ReplacementState
    ):
        skip = None if transcoder.W_skip is None else list(transcoder.W_skip)
        self.transpose = FrozenTranspose(adapter, state.frozen, skip, input_kind=state.input_kind)

    def features(
        self, layer: int, pos: Int[Tensor, " b"], vecs: Float[Tensor, "b d"]
    ) -> tuple[Float[Tensor, "p b d"], Float[Tensor, "p b n_layers d"]]:
        """One batch row per feature target (read ``vecs[i]`` at the feature input
        ``state.mlp_in[layer, pos[i]]``);
        the outputs cover positions ``<= pos.max()``."""
        return self.transpose.backward(layer, pos, read=vecs, n_pos=int(pos.max()) + 1)

    def logits(
        self, vecs: Float[Tensor, "b d"]
    ) -> tuple[Float[Tensor, "pos b d"], Float[Tensor, "pos b n_layers d"]]:
        """One batch row per logit target (read at the final norm's output, last position)."""
        return self.transpose.backward_final(vecs)


class EdgeComputer:
    """Turns gradients at the leaves into edge rows over a fixed set of source columns.

    A feature at position ``t`` only reads the gradient at ``t``, so each source layer's
    activation-scaled decoders are packed by position, ``[pos, slots + 1, n_out * d]``; the last
    slot holds that layer's error vector at the position (it writes to its own layer only). One
    batched matmul per source layer then gives every feature's and error's edge for every target
    in the batch.
    """

    def __init__(
        self,
        transcoder: CrossLayerTranscoder,
        state: ReplacementState,
        token_vectors: Float[Tensor, "pos d_model"] | None = None,
        unattributed_error_positions: int = 0,
    ):
        """``token_vectors``: what each token node writes into block 0 (default: the whole
        block-0 input); the error vectors of the first ``unattributed_error_positions``
        positions get no edges (they stay in the targets' bias)."""
        self.state = state
        self.token_vectors = state.resid0 if token_vectors is None else token_vectors
        self.device = dev = state.resid0.device
        T = state.mlp_in.shape[1]
        a = state.active
        self.index = NodeIndex.sources(transcoder.n_layers, T, a.layer, a.position, a.feature)
        """The columns of every row: all active features, then errors, then tokens."""
        self.packed = []
        for layer in range(transcoder.n_layers):
            sel, rows = decoder_block(transcoder, state.active, layer)
            pos = state.active.position[sel]
            counts = torch.bincount(pos, minlength=T)
            starts = torch.cumsum(counts, 0) - counts
            slot = torch.arange(sel.numel(), device=dev) - torch.repeat_interleave(starts, counts)
            n_out, d = rows.shape[1], rows.shape[2]
            n_slots = int(counts.max()) if sel.numel() else 0
            packed = torch.zeros(T, n_slots + 1, n_out * d, device=dev)
            scaled = rows * state.active.value[sel, None, None]
            packed[pos, slot] = scaled.reshape(sel.numel(), n_out * d)
            packed[:, n_slots, :d] = state.errors[layer]
            packed[:unattributed_error_positions, n_slots, :d] = 0
            self.packed.append((layer, sel, pos, slot, packed, n_out))

    @torch.no_grad()
    def rows(
        self,
        g_emb: Float[Tensor, "p b d"],
        g_out: Float[Tensor, "p b n d"],
        out: Float[Tensor, "b n_sources"] | None = None,
    ) -> Float[Tensor, "b n_sources"]:
        """Edges into each batch row's target from every active feature, error and token.

        The gradients (position-major, as ``FrozenTranspose.backward`` returns them) may cover
        only the first ``p`` positions (the rest are zero: causal attention) and only the MLP
        outputs of the first ``n`` layers (the rest are zero: no target reads them). ``out``:
        where to write the rows (overwritten; it may live on another device, e.g. CPU storage
        for rows computed on a GPU), else a new tensor on the computing device.
        """
        idx = self.index
        P, b, n_read, d = g_out.shape
        L, T = idx.n_layers, idx.n_pos
        target = out
        if out is None or out.device != self.device:
            out = torch.zeros(b, idx.n_sources, device=self.device)
        else:
            out.zero_()
        feat = out[:, idx.features()]
        err = out[:, idx.errors()].view(b, L, T)
        for layer, sel, pos, slot, packed, n_out in self.packed:
            k = min(n_out, n_read - layer)
            if k <= 0:
                continue
            g = g_out[:, :, layer : layer + k].reshape(P, b, k * d)
            res = torch.bmm(g, packed[:P, :, : k * d].transpose(1, 2))  # [p, b, slots + 1]
            err[:, layer, :P] = res[:, :, -1].T
            if P < T:
                m = pos < P
                sel, pos, slot = sel[m], pos[m], slot[m]
            feat[:, sel] = res[pos, :, slot].T
        tok = self.token_vectors[:P, None]
        out[:, idx.token_node(0) : idx.token_node(P)] = (g_emb * tok).sum(-1).T
        if target is not None and target is not out:
            return target.copy_(out)
        return out
