"""The transpose of a frozen model: gradients along direct paths without autograd.

With attention patterns and norm scales frozen (:mod:`cltrace.models.freeze`), the map from the
residual stream to any later site is linear, and it is made of a few explicit pieces per layer:
the attention input norm (an elementwise scale, mean-centred for LayerNorm), the value projection,
the frozen pattern, the output projection, and for Gemma-2 a norm on attention's output. MLPs are
not on these paths (a local replacement model replaces them by transcoder features and error
nodes, whose writes are the leaves). :class:`FrozenTranspose` applies the transpose of those
pieces directly, layer by layer from the top, to a batch of read vectors.

Because attention is causal, a read at position ``t`` only reaches positions ``<= t``, so a batch
whose reads all sit at positions ``< n_pos`` runs on that prefix alone; and a read at the input of
layer ``l``'s MLP never touches the layers above ``l``. The attribution engine sorts its targets
so that each batch gets both savings.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.models.adapter import ModelAdapter
from cltrace.models.families import get_path
from cltrace.models.freeze import FrozenState
from cltrace.models.offload import param


class _NormT:
    """Transpose of a norm with a frozen ``1/scale``: ``g -> C(g * w * inv)`` (C centres the
    vector for LayerNorm; RMSNorms have no C)."""

    def __init__(self, kind: str, module: torch.nn.Module, inv: Tensor, device, dtype):
        w = param(module).detach().to(device, dtype)  # type: ignore[union-attr]
        self.w = 1.0 + w if kind == "gemma_rmsnorm" else w
        self.inv = inv.reshape(-1).to(device, dtype)  # [pos]
        self.center = kind == "layernorm"

    def _finish(self, out: Tensor) -> Tensor:
        return out - out.mean(-1, keepdim=True) if self.center else out

    def dense(self, g: Float[Tensor, "p b d"]) -> Float[Tensor, "p b d"]:
        """All positions ``< p`` (position-major layout)."""
        return self._finish(g * self.w * self.inv[: g.shape[0], None, None])

    def at(self, g: Float[Tensor, "b d"], pos: Int[Tensor, " b"]) -> Float[Tensor, "b d"]:
        """One vector per batch row, each at its own position."""
        return self._finish(g * self.w * self.inv[pos, None])


class _Identity:
    """Stands in for :class:`_NormT` where features read the residual stream itself
    (``resid_mid``): their input is linear in it with no norm in between."""

    def dense(self, g: Float[Tensor, "p b d"]) -> Float[Tensor, "p b d"]:
        return g

    def at(self, g: Float[Tensor, "b d"], pos: Int[Tensor, " b"]) -> Float[Tensor, "b d"]:
        return g


def ov_weights(adapter: ModelAdapter, layer: int) -> tuple[Tensor, Tensor]:
    """``(W_V [d_model, kv_heads * d_head], W_O [heads * d_head, d_model])`` of one layer, so that
    ``v = x @ W_V`` and attention's write is ``z @ W_O`` (biases left out)."""
    fam = adapter.family
    attn = get_path(adapter.block(layer), fam.attn)
    if fam.ov_kind == "fused_conv1d":
        D = adapter.d_model
        qkv, out = param(attn.c_attn), param(attn.c_proj)
        return qkv[:, 2 * D : 3 * D].detach(), out.detach()  # type: ignore[index,union-attr]
    v, o = param(attn.v_proj), param(attn.o_proj)
    return v.detach().T, o.detach().T  # type: ignore[union-attr]


class FrozenTranspose:
    """Vector-Jacobian products of a frozen model along direct (non-MLP) paths.

    :meth:`backward` starts from read vectors at one layer, each batch row at its own position,
    and returns the gradient at the block-0 input and at every MLP output: exactly what autograd
    through the frozen model returns. Gradients are position-major, ``[pos, batch, ...]``.
    """

    @torch.no_grad()
    def __init__(
        self,
        adapter: ModelAdapter,
        frozen: FrozenState,
        skip: list[Tensor] | None = None,
        dtype: torch.dtype = torch.float32,
        input_kind: str = "mlp_in",
    ):
        """``skip``: per layer, a linear map ``W`` with ``mlp_out += x @ W.T`` (a transcoder's
        skip connection; its transpose carries gradient into ``x``). ``input_kind``: where
        feature reads (and ``x``) sit, ``mlp_in`` (after the MLP's norm, whose frozen scale the
        transpose applies) or ``resid_mid`` (the residual stream before it: no norm)."""
        fam, dev = adapter.family, adapter.device
        kind = fam.norm_kind
        self.n_layers, self.dtype, self.device = adapter.n_layers, dtype, dev
        self.d_model = adapter.d_model
        self.n_pos = frozen.tokens.shape[-1]
        self._buf: Tensor | None = None
        self.skip = None if skip is None else [w.detach().to(dev, dtype) for w in skip]
        self.layers = []
        inv = frozen.inv_scales
        for layer in range(adapter.n_layers):
            block = adapter.block(layer)

            def norm_t(name, _b=block, _l=layer):
                return _NormT(kind, get_path(_b, name), inv[f"{_l}.{name}"][0], dev, dtype)

            W_V, W_O = ov_weights(adapter, layer)
            pattern = frozen.patterns[layer][0].to(dev, dtype)  # [heads, dst, src]
            n_heads = pattern.shape[0]
            d_head = W_O.shape[0] // n_heads
            n_kv = W_V.shape[1] // d_head
            W_V_T = W_V.to(dev, dtype).T.contiguous()  # [kv * d_head, d]
            self.layers.append(
                {
                    "attn_in": norm_t(fam.attn_in_norm),
                    "mlp_in": _Identity() if input_kind == "resid_mid" else norm_t(fam.mlp_in_norm),
                    "attn_out": norm_t(fam.attn_out_norm) if fam.attn_out_norm else None,
                    "W_V_T": W_V_T,
                    # per query head, the transposed value projection it reads through
                    "W_V_T_heads": W_V_T.reshape(n_kv, d_head, -1).repeat_interleave(
                        n_heads // n_kv, 0
                    ),
                    "W_O_T": W_O.to(dev, dtype).T.contiguous(),  # [d, heads * d_head]
                    "pattern_T": pattern.transpose(1, 2).contiguous(),  # [heads, src, dst]
                    "n_heads": n_heads,
                    "n_kv": n_kv,
                    "d_head": d_head,
                }
            )
        self.final = _NormT(kind, adapter.final_norm(), frozen.inv_scales["final"][0], dev, dtype)

    def _attention_t(self, lay: dict, g: Float[Tensor, "p b d"]) -> Float[Tensor, "p b d"]:
        """Through one layer's attention: from its write to the residual stream it read."""
        P, b, _ = g.shape
        H, kv, dh = lay["n_heads"], lay["n_kv"], lay["d_head"]
        if lay["attn_out"] is not None:
            g = lay["attn_out"].dense(g)
        z = (g @ lay["W_O_T"]).reshape(P, b, H, dh).permute(2, 0, 1, 3).reshape(H, P, b * dh)
        gv = torch.bmm(lay["pattern_T"][:, :P, :P], z)  # [heads, src, b * d_head]
        gv = gv.reshape(H, P, b, dh).permute(1, 2, 0, 3)  # [src, b, heads, d_head]
        if kv != H:  # grouped-query attention: heads of a group share one value head
            gv = gv.reshape(P, b, kv, H // kv, dh).sum(3)
        return lay["attn_in"].dense(gv.reshape(P, b, kv * dh) @ lay["W_V_T"])

    def _attention_t_at(
        self, lay: dict, g: Float[Tensor, "b d"], pos: Int[Tensor, " b"], n_pos: int
    ) -> Float[Tensor, "p b d"]:
        """:meth:`_attention_t` for a gradient that is nonzero at one position per row: one
        vector per head and row, spread over positions by that row's pattern."""
        b = g.shape[0]
        H, dh = lay["n_heads"], lay["d_head"]
        if lay["attn_out"] is not None:
            g = lay["attn_out"].at(g, pos)
        z = (g @ lay["W_O_T"]).reshape(b, H, dh)
        u = torch.einsum("bhk,hkd->bhd", z, lay["W_V_T_heads"])  # [b, heads, d]
        coef = lay["pattern_T"][:, :n_pos, pos].permute(2, 1, 0)  # [b, src, heads]
        gx = torch.bmm(coef, u).transpose(0, 1)  # [src, b, d]
        return lay["attn_in"].dense(gx)

    def _scratch(self, shape: tuple[int, ...]) -> Tensor:
        """A reused buffer (big fresh allocations cost page faults on every batch)."""
        n = 1
        for s in shape:
            n *= s
        if self._buf is None or self._buf.numel() < n:
            self._buf = torch.empty(n, device=self.device, dtype=self.dtype)
        return self._buf[:n].view(shape)

    @torch.no_grad()
    def backward(
        self,
        layer: int,
        pos: Int[Tensor, " b"],
        read: Float[Tensor, "b d"] | None = None,
        post: Float[Tensor, "b d"] | None = None,
        n_pos: int | None = None,
    ) -> tuple[Float[Tensor, "p b d"], Float[Tensor, "p b n d"]]:
        """Gradients ``(at the block-0 input, at the MLP outputs)`` of the reads, per row.

        Row ``i`` reads ``read[i]`` at layer ``layer``'s feature input (MLP input or
        ``resid_mid``, as constructed) and/or ``post[i]`` at the
        residual stream after that layer, both at position ``pos[i]``. The outputs cover
        positions ``< n_pos`` (default: the whole prompt; at least ``pos.max() + 1``) and the
        MLP outputs that can be nonzero: layers ``< layer``, or ``<= layer`` with ``post``.
        The MLP-output gradients live in a buffer that the next call overwrites.
        """
        P = self.n_pos if n_pos is None else n_pos
        b = pos.numel()
        rows = torch.arange(b, device=self.device)
        n_valid = layer + (post is not None)
        g_out = self._scratch((P, b, n_valid, self.d_model))
        lay = self.layers[layer]
        mid = torch.zeros(b, self.d_model, device=self.device, dtype=self.dtype)
        if post is not None:
            post = post.to(self.device, self.dtype)
            g_out[:, :, layer] = 0.0
            g_out[pos, rows, layer] = post
            mid = mid + post
            if self.skip is not None:
                through = post @ self.skip[layer]
                read = through if read is None else read.to(self.dtype) + through
        if read is not None:
            mid = mid + lay["mlp_in"].at(read.to(self.device, self.dtype), pos)
        g = self._attention_t_at(lay, mid, pos, P)
        g[pos, rows] += mid
        for lower in range(layer - 1, -1, -1):
            lay = self.layers[lower]
            g_out[:, :, lower] = g
            if self.skip is not None:
                g = g + lay["mlp_in"].dense(g @ self.skip[lower])
            g = g + self._attention_t(lay, g)
        return g, g_out

    def backward_final(
        self, vecs: Float[Tensor, "b d"]
    ) -> tuple[Float[Tensor, "pos b d"], Float[Tensor, "pos b n_layers d"]]:
        """:meth:`backward` of read vectors at the final norm's output, last position (logits)."""
        last = torch.full((vecs.shape[0],), self.n_pos - 1, device=self.device)
        post = self.final.at(vecs.to(self.device, self.dtype), last)
        return self.backward(self.n_layers - 1, last, post=post)
