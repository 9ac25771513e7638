"""The cross-layer transcoder module; a per-layer transcoder set is the same module with only the
``l -> l`` decoders.

Notation follows docs/METHODS.md §1: features of layer ``l`` read the MLP input ``x_l`` and
write into the MLP outputs of layers ``l .. l + n_out(l) - 1``, where ``n_out(l) = L - l`` for a
CLT and ``1`` for a PLT. Decoder ``W_dec[l]`` is ``[F, n_out(l), D]`` in both cases, so every
method below has one code path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cltrace.transcoders.activations import ACTIVATIONS, check_activation
from cltrace.transcoders.lazy import LazyDecoders


@dataclass
class TranscoderConfig:
    """Shape and metadata of a transcoder (saved as ``config.yaml`` beside the weights)."""

    n_layers: int
    """Number of model layers L; there is one encoder per layer."""
    d_model: int
    """Residual stream width D."""
    d_features: int
    """Features per layer F (total features = L * F)."""
    cross_layer: bool = True
    """True: a CLT (layer l writes to layers l..L-1). False: per-layer transcoders (l -> l)."""
    activation: str = "jumprelu"
    """``jumprelu`` (per-feature threshold), ``relu`` or ``topk``."""
    k: int | None = None
    """Active features per token and layer for ``topk``; unused otherwise."""
    skip: bool = False
    """Whether each layer has a linear skip ``W_skip`` [D, D] from MLP input to MLP output."""
    model_name: str = ""
    """The model the transcoder was trained on (HF id or a name)."""
    feature_input_hook: str = "mlp.hook_in"
    """TransformerLens name of where features read (see :mod:`cltrace.transcoders.hooknames`)."""
    feature_output_hook: str = "mlp.hook_out"
    """TransformerLens name of where features write."""

    def __post_init__(self) -> None:
        check_activation(self.activation, self.k)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SparseActivations:
    """Active feature occurrences ``(layer, position, feature) -> value`` of one prompt."""

    layer: Int[Tensor, " n"]
    position: Int[Tensor, " n"]
    feature: Int[Tensor, " n"]
    value: Float[Tensor, " n"]
    shape: tuple[int, int, int]
    """(n_layers, n_positions, d_features) of the dense tensor these entries come from."""

    def __len__(self) -> int:
        return int(self.value.numel())

    def to_coo(self) -> Tensor:
        """A ``torch.sparse_coo_tensor`` of shape ``shape``."""
        idx = torch.stack([self.layer, self.position, self.feature])
        # nonzero() already yields sorted, unique indices, so the tensor is coalesced as built.
        return torch.sparse_coo_tensor(
            idx, self.value, self.shape, is_coalesced=True, check_invariants=False
        )


def _params(shapes: list[tuple[int, ...]], dtype, device) -> nn.ParameterList:
    return nn.ParameterList(
        [nn.Parameter(torch.zeros(s, dtype=dtype, device=device)) for s in shapes]
    )


class CrossLayerTranscoder(nn.Module):
    """CLT or PLT set over an ``L``-layer model (parameters zero-initialised; load or train).

    With ``lazy=LazyDecoders(...)`` the decoders stay on disk and only the rows of features that
    are active are read, in :meth:`decode`, :meth:`reconstruct` and :meth:`decoder_rows`.
    """

    def __init__(
        self,
        cfg: TranscoderConfig,
        *,
        lazy: LazyDecoders | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        L, D, F = cfg.n_layers, cfg.d_model, cfg.d_features
        self.W_enc = _params([(F, D)] * L, dtype, device)
        self.b_enc = _params([(F,)] * L, dtype, device)
        self.b_dec = _params([(D,)] * L, dtype, device)
        self.threshold = (
            _params([(F,)] * L, dtype, device) if cfg.activation == "jumprelu" else None
        )
        self.W_skip = _params([(D, D)] * L, dtype, device) if cfg.skip else None
        self.lazy = lazy
        self.W_dec = (
            None
            if lazy is not None
            else _params([(F, self.n_out(i), D) for i in range(L)], dtype, device)
        )

    # ----- shape helpers -------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.cfg.n_layers

    @property
    def d_model(self) -> int:
        return self.cfg.d_model

    @property
    def d_features(self) -> int:
        return self.cfg.d_features

    def n_out(self, layer: int) -> int:
        """How many target layers the features of ``layer`` write to."""
        return self.cfg.n_layers - layer if self.cfg.cross_layer else 1

    def sources(self, target: int) -> range:
        """Source layers whose features write into ``target``."""
        return range(0, target + 1) if self.cfg.cross_layer else range(target, target + 1)

    # ----- encoder -------------------------------------------------------------------------
    def pre_activation(self, layer: int, x: Float[Tensor, "... D"]) -> Float[Tensor, "... F"]:
        return x.to(self.W_enc[layer].dtype) @ self.W_enc[layer].T + self.b_enc[layer]

    def activate(self, layer: int, pre: Float[Tensor, "... F"]) -> Float[Tensor, "... F"]:
        threshold = self.threshold[layer] if self.threshold is not None else None
        return ACTIVATIONS[self.cfg.activation](pre, threshold, self.cfg.k)

    def encode(self, layer: int, x: Float[Tensor, "... D"]) -> Float[Tensor, "... F"]:
        """Dense feature activations of ``layer`` from its MLP input ``x``."""
        return self.activate(layer, self.pre_activation(layer, x))

    def encode_all(self, x_all: Float[Tensor, "L ... D"]) -> Float[Tensor, "L ... F"]:
        return torch.stack([self.encode(i, x_all[i]) for i in range(self.n_layers)])

    def encode_sparse(self, x_all: Float[Tensor, "L pos D"]) -> SparseActivations:
        """Active occurrences of one prompt, ordered by (layer, position, feature)."""
        acts = self.encode_all(x_all)
        idx = acts.nonzero(as_tuple=True)
        return SparseActivations(idx[0], idx[1], idx[2], acts[idx], tuple(acts.shape))

    # ----- decoder -------------------------------------------------------------------------
    def decoder_rows(
        self, layer: int, feature_ids: Int[Tensor, " n"]
    ) -> Float[Tensor, "n n_out D"]:
        """Decoders of the chosen features of ``layer`` into layers ``layer .. layer+n_out-1``."""
        feature_ids = torch.as_tensor(feature_ids, dtype=torch.long)
        if self.lazy is not None:
            # Rows come off disk on the CPU; move them to wherever the encoders live.
            return self.lazy.rows(layer, feature_ids).to(self.W_enc[layer].device)
        return self.W_dec[layer][feature_ids]

    def decoder_norms(self, layer: int) -> Float[Tensor, " F"]:
        """Norm of each feature's decoders concatenated over all its target layers."""
        if self.lazy is not None:
            return self.lazy.norms(layer).to(self.W_enc[layer].device)
        return self.W_dec[layer].flatten(1).norm(dim=1)

    def _active_block(
        self, layer: int, acts: Float[Tensor, "N F"]
    ) -> tuple[Float[Tensor, "N n"], Float[Tensor, "n n_out D"]]:
        """Activations and decoder rows restricted to what a decode needs.

        In memory every feature is kept (one dense matmul is fastest); lazily, only features
        active somewhere in ``acts`` are read from disk.
        """
        if self.lazy is None:
            return acts, self.W_dec[layer]
        ids = (acts != 0).any(0).nonzero().squeeze(1)
        return acts[:, ids], self.decoder_rows(layer, ids.cpu())

    def decode(
        self,
        acts_by_layer: list[Float[Tensor, "... F"]] | Float[Tensor, "L ... F"],
        target_layer: int,
    ) -> Float[Tensor, "... D"]:
        """Features' contribution (plus decoder bias) to the MLP output of ``target_layer``.

        ``acts_by_layer[l]`` holds layer ``l``'s activations; entries after ``target_layer`` are
        ignored. The skip term is not included (it needs ``x``; see :meth:`skip`).
        """
        lead = acts_by_layer[target_layer].shape[:-1]
        out = self.b_dec[target_layer].expand(*lead, self.d_model).clone()
        for src in self.sources(target_layer):
            a = acts_by_layer[src].reshape(-1, self.d_features)
            a_sub, rows = self._active_block(src, a)
            w = rows[:, target_layer - src, :]
            out = out + (a_sub.to(w.dtype) @ w).reshape(*lead, self.d_model)
        return out

    def skip(self, layer: int, x: Float[Tensor, "... D"]) -> Float[Tensor, "... D"]:
        """Linear skip term ``W_skip[layer] @ x`` (zero when the transcoder has no skip)."""
        if self.W_skip is None:
            return torch.zeros_like(x)
        return x.to(self.W_skip[layer].dtype) @ self.W_skip[layer].T

    def reconstruct_from(
        self, x_all: Float[Tensor, "L ... D"], acts: Float[Tensor, "L ... F"]
    ) -> Float[Tensor, "L ... D"]:
        """Every MLP output from given activations: one matmul per *source* layer."""
        L, D = self.n_layers, self.d_model
        lead = x_all.shape[1:-1]
        outs = [self.b_dec[t].expand(*lead, D) + self.skip(t, x_all[t]) for t in range(L)]
        for src in range(L):
            a_sub, rows = self._active_block(src, acts[src].reshape(-1, self.d_features))
            n_out = rows.shape[1]
            contrib = a_sub.to(rows.dtype) @ rows.reshape(rows.shape[0], n_out * D)
            contrib = contrib.reshape(*lead, n_out, D)
            for j in range(n_out):
                outs[src + j] = outs[src + j] + contrib[..., j, :]
        return torch.stack(outs)

    def reconstruct(self, x_all: Float[Tensor, "L ... D"]) -> Float[Tensor, "L ... D"]:
        """Reconstruction ``y_hat_s`` of every MLP output from every MLP input."""
        return self.reconstruct_from(x_all, self.encode_all(x_all))

    def forward(
        self, x_all: Float[Tensor, "L ... D"]
    ) -> tuple[Float[Tensor, "L ... D"], Float[Tensor, "L ... F"]]:
        """``(reconstruction, activations)``; training uses both."""
        acts = self.encode_all(x_all)
        return self.reconstruct_from(x_all, acts), acts

    def n_features(self) -> int:
        return self.n_layers * self.d_features

    def extra_repr(self) -> str:
        kind = "CLT" if self.cfg.cross_layer else "PLT"
        return (
            f"{kind}, layers={self.n_layers}, d_model={self.d_model}, "
            f"features/layer={self.d_features}, activation={self.cfg.activation}, "
            f"skip={self.cfg.skip}, lazy={self.lazy is not None}"
        )
