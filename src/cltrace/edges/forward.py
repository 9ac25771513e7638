"""The masked forward: one pass of the model in which every reader's input is assembled edge by
edge, ``in_v = const_v + sum_u [z_uv * out_u + (1 - z_uv) * corrupt_u]``, for a batch of masks.

It runs the adapter's own Hugging Face modules and substitutes, through hooks, the inputs of the
q/k/v projections (per head; grouped-query models get one key and value input per query head),
of each MLP and of the final norm. ``out_u`` is the writer's output *in this same pass*, so
removing an edge upstream changes what flows on downstream (the Edge Pruning semantics); with
all masks 1 the pass is the ordinary forward, with all masks 0 every reader sees the corrupted
run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.edges.graph import EdgeGraph
from cltrace.models.adapter import ModelAdapter
from cltrace.models.families import get_path


def graph_of(adapter: ModelAdapter) -> EdgeGraph:
    """The edge graph of an adapter's model."""
    return EdgeGraph(adapter.n_layers, adapter.n_heads)


@dataclass
class MaskedRun:
    """What one masked forward returns."""

    logits: Float[Tensor, "mask batch pos d_vocab"]
    writers: Float[Tensor, "writer mask batch pos d_model"] | None
    """Each writer's output in this pass (with ``record=True``)."""
    probes: list[Tensor] | None
    """Zero tensors added to each reader block's input (``probe=True``): their gradients are
    the metric's gradients with respect to the readers' inputs, shaped like the blocks with
    ``[batch, pos, d_model]`` appended (q/k/v blocks: ``[3, heads, batch, pos, d_model]``)."""


def _replace_first(args, kwargs, value):
    if args:
        return (value, *args[1:]), kwargs
    key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
    return args, {**kwargs, key: value}


def _first_arg(args, kwargs):
    if args:
        return args[0]
    return kwargs["hidden_states"] if "hidden_states" in kwargs else next(iter(kwargs.values()))


class _Pass:
    """The state of one masked forward: writer outputs so far and the hooks that use them."""

    def __init__(self, adapter, graph, masks, corrupt, m, b, embed_override, probe):
        self.a, self.g = adapter, graph
        self.m, self.b = m, b
        self.blocks = graph.split(masks) if masks is not None else None
        self.corrupt = corrupt  # [W, B, P, D] or None (zeros)
        self.embed_override = embed_override
        self.probe = probe
        self.probes: list[Tensor] = []
        self.diffs: list[Tensor] = []  # [M, w, B, P, D] groups, (out - corrupt)
        self.outs: list[Tensor] = []  # [M, w, B, P, D] groups, out
        self.const: Tensor | float = 0.0
        self.pending: dict[int, Tensor] = {}  # layer -> normed q/k/v inputs

    # --- helpers -------------------------------------------------------------------------
    def _split(self, t: Tensor) -> Tensor:  # [M*B, ...] -> [M, B, ...]
        return t.reshape(self.m, self.b, *t.shape[1:])

    def _merge(self, t: Tensor) -> Tensor:
        return t.reshape(self.m * self.b, *t.shape[2:])

    def _add_writers(self, out: Tensor) -> None:  # out: [M, w, B, P, D]
        n0 = sum(o.shape[1] for o in self.outs)
        self.outs.append(out)
        if self.corrupt is None:
            self.diffs.append(out)
        else:
            self.diffs.append(out - self.corrupt[n0 : n0 + out.shape[1]].to(out.dtype))

    def _reader_input(self, block: int, n_up: int, spec: str) -> Tensor:
        """``const + sum corrupt + sum z * (out - corrupt)`` over the first ``n_up`` writers."""
        diff = torch.cat(self.diffs, dim=1)[:, :n_up]
        if self.blocks is None:
            shape = self.g.block_shapes[block]
            z = diff.new_ones(self.m, *shape)
        else:
            z = self.blocks[block].to(diff.dtype)
        mixed = torch.einsum(f"mwbpd,{spec}->m{spec[2:]}bpd", diff, z)
        base = self.const
        if self.corrupt is not None:
            base = base + self.corrupt[:n_up].to(diff.dtype).sum(0)
        x = mixed + base
        if self.probe:
            p = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device, requires_grad=True)
            self.probes.append(p)
            x = x + p
        return x


def masked_forward(
    adapter: ModelAdapter,
    tokens: Int[Tensor, "batch pos"],
    masks: Float[Tensor, "mask n_edges"] | None = None,
    corrupt: Float[Tensor, "writer batch pos d_model"] | None = None,
    record: bool = False,
    embed_override: Float[Tensor, "mask batch pos d_model"] | None = None,
    probe: bool = False,
) -> MaskedRun:
    """Run ``tokens`` once per mask row. ``masks=None`` keeps every edge (one row);
    ``corrupt=None`` patches removed edges to zero. ``embed_override`` replaces the embedding
    writer's output (EAP-IG interpolates it)."""
    graph = graph_of(adapter)
    if masks is not None and masks.shape[-1] != graph.n_edges:
        raise ValueError(f"masks have {masks.shape[-1]} edges, the graph has {graph.n_edges}")
    m = 1 if masks is None else masks.shape[0]
    if embed_override is not None and masks is None:
        m = embed_override.shape[0]
    b = tokens.shape[0]
    st = _Pass(adapter, graph, masks, corrupt, m, b, embed_override, probe)
    fam = adapter.family
    handles = []
    saved_groups = []

    def embed_hook(_mod, args, kwargs):
        x = st._split(_first_arg(args, kwargs))
        if st.embed_override is not None:
            x = st.embed_override.to(x.dtype).expand_as(x)
        st._add_writers(x[:, None])
        return None

    for layer in range(adapter.n_layers):
        block = adapter.block(layer)
        attn = get_path(block, fam.attn)
        norm_attn = get_path(block, fam.attn_in_norm)
        norm_mlp = get_path(block, fam.mlp_in_norm)
        mlp = get_path(block, fam.mlp)
        h = adapter.n_heads
        groups = getattr(attn, "num_key_value_groups", 1)
        if groups != 1:
            saved_groups.append(attn)
            attn.num_key_value_groups = 1

        def qkv_inputs(layer=layer, norm_attn=norm_attn):
            if layer not in st.pending:
                x = st._reader_input(2 * layer, graph.upstream_of_attn(layer), "mwqh")
                st.pending[layer] = norm_attn(x)  # [M, 3, H, B, P, D]
            return st.pending[layer]

        if fam.ov_kind == "fused_conv1d":
            c_attn = attn.c_attn

            def fused_hook(_mod, _args, _out, c_attn=c_attn, qkv_inputs=qkv_inputs, h=h):
                x = qkv_inputs()
                d = x.shape[-1]
                w = c_attn.weight.view(d, 3, h, d // h)
                y = torch.einsum("mqhbpd,dqhe->mbpqhe", x, w) + c_attn.bias.view(3, h, d // h)
                return st._merge(y.reshape(*y.shape[:3], -1))

            handles.append(c_attn.register_forward_hook(fused_hook))
            o_proj, o_conv = attn.c_proj, True
        else:
            attn_q_rows = attn.q_proj.weight.shape[0]
            for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
                proj = getattr(attn, name)

                def proj_hook(
                    _mod,
                    _args,
                    _out,
                    proj=proj,
                    i=i,
                    qkv_inputs=qkv_inputs,
                    h=h,
                    attn_q_rows=attn_q_rows,
                ):
                    x = qkv_inputs()[:, i]  # [M, H, B, P, D]
                    dh = attn_q_rows // h
                    w = proj.weight.view(-1, dh, proj.weight.shape[1])
                    rep = h // w.shape[0]
                    w = w.repeat_interleave(rep, dim=0)  # one weight per query head
                    y = torch.einsum("mhbpd,hed->mbphe", x, w)
                    if proj.bias is not None:
                        y = y + proj.bias.view(-1, dh).repeat_interleave(rep, dim=0)
                    return st._merge(y.reshape(*y.shape[:3], -1))

                handles.append(proj.register_forward_hook(proj_hook))
            o_proj, o_conv = attn.o_proj, False
        post = get_path(block, fam.attn_out_norm) if fam.attn_out_norm else None

        def z_hook(_mod, args, kwargs, o_proj=o_proj, o_conv=o_conv, post=post, h=h, layer=layer):
            z = st._split(_first_arg(args, kwargs))  # [M, B, P, H*dh]
            z = z.view(*z.shape[:3], h, -1)
            if o_conv:
                w = o_proj.weight.view(h, -1, o_proj.weight.shape[1])  # [H, dh, D]
            else:
                w = o_proj.weight.view(o_proj.weight.shape[0], h, -1).permute(1, 2, 0)
            heads = torch.einsum("mbphe,hed->mhbpd", z, w)
            bias = o_proj.bias
            if post is not None:
                heads = _norm_shares(post, heads, bias)
            elif bias is not None:
                st.const = st.const + bias
            st._add_writers(heads)
            st.pending.pop(layer, None)
            return None

        handles.append(o_proj.register_forward_pre_hook(z_hook, with_kwargs=True))

        def mlp_in_hook(_mod, args, kwargs, layer=layer, norm_mlp=norm_mlp):
            x = st._reader_input(2 * layer + 1, graph.upstream_of_mlp(layer), "mw")
            return _replace_first(args, kwargs, st._merge(norm_mlp(x)))

        handles.append(mlp.register_forward_pre_hook(mlp_in_hook, with_kwargs=True))
        mlp_write = get_path(block, fam.mlp_write)

        def mlp_out_hook(_mod, _args, out):
            y = out[0] if isinstance(out, tuple) else out
            st._add_writers(st._split(y)[:, None])
            return None

        handles.append(mlp_write.register_forward_hook(mlp_out_hook))

    def final_hook(_mod, args, kwargs):
        x = st._reader_input(2 * adapter.n_layers, graph.n_writers, "mw")
        return _replace_first(args, kwargs, st._merge(x))

    handles.append(adapter.block(0).register_forward_pre_hook(embed_hook, with_kwargs=True))
    handles.append(adapter.final_norm().register_forward_pre_hook(final_hook, with_kwargs=True))
    try:
        logits = adapter(tokens.repeat(m, 1))
    finally:
        for hd in handles:
            hd.remove()
        for attn in saved_groups:
            attn.num_key_value_groups = adapter.n_heads // _kv_heads(attn)
    writers = torch.cat(st.outs, dim=1).transpose(0, 1) if record else None
    return MaskedRun(
        logits=logits.reshape(m, b, *logits.shape[1:]),
        writers=writers,
        probes=st.probes if probe else None,
    )


def _kv_heads(attn) -> int:
    cfg = attn.config
    return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)


def _norm_shares(norm: torch.nn.Module, heads: Tensor, bias: Tensor | None) -> Tensor:
    """Each head's share of ``norm(sum of heads)`` for an RMS norm after attention (Gemma-2):
    the norm's scale is the run's own, so the shares add up to the normed output."""
    total = heads.sum(1)
    if bias is not None:
        total = total + bias
    normed = norm(total)
    scale = normed / torch.where(total == 0, torch.ones_like(total), total)
    return heads * scale[:, None]
