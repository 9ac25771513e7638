"""LRP propagation rules through the real MLPs: same forward values, RelP gradients.

Relevance patching (RelP; used by PIE's CLT-RelP baseline, docs/METHODS.md §4) takes the
gradient of a metric through a model whose backward pass follows layer-wise relevance
propagation rules instead of the chain rule:

* **identity rule** through the elementwise activation: ``act(h)`` is treated as
  ``h * stopgrad(act(h) / h)``, so relevance passes the activation in proportion to its output
  rather than its slope;
* **half rule** on a gated product ``u * v``: ``(u * v) / 2 + stopgrad((u * v) / 2)``, so each
  factor receives half the product-rule gradient (the two halves add up to the relevance of the
  product instead of double-counting it).

Attention patterns and norm scales are held constant with :mod:`cltrace.models.freeze`; this
module supplies the MLP rules. :func:`lrp_mlps` hooks every block's MLP and returns an output that
is *bitwise* the MLP's own output (``value.detach() + (relp - relp.detach())``) but whose autograd
graph is the rule-rewritten recomputation from the MLP input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.models.adapter import ModelAdapter
from cltrace.models.families import get_path


def identity_rule(
    h: Float[Tensor, "... d_mlp"], act: torch.nn.Module
) -> Float[Tensor, "... d_mlp"]:
    """``act(h)`` in value, ``diag(act(h) / h)`` as its Jacobian (0 where ``h == 0``)."""
    out = act(h)
    zero = h == 0
    ratio = torch.where(zero, torch.zeros_like(out), out / torch.where(zero, 1.0, h))
    # forward: (h - h) * ratio is exactly 0, so the value is act(h) bit for bit
    return out.detach() + (h - h.detach()) * ratio.detach()


def half_rule(u: Tensor, v: Tensor) -> Tensor:
    """``u * v`` in value; each factor gets half of its product-rule gradient."""
    p = u * v
    return 0.5 * p + (0.5 * p).detach()


def _gelu_mlp(mlp: torch.nn.Module, x: Tensor) -> Tensor:
    return mlp.c_proj(identity_rule(mlp.c_fc(x), mlp.act))


def _gated(mlp: torch.nn.Module, x: Tensor) -> Tensor:
    return mlp.down_proj(half_rule(identity_rule(mlp.gate_proj(x), mlp.act_fn), mlp.up_proj(x)))


_RECOMPUTE = {"gelu_mlp": _gelu_mlp, "gated": _gated}


def _rules_for(adapter: ModelAdapter):
    kind = adapter.family.mlp_kind
    if kind not in _RECOMPUTE:
        raise CltraceError(
            f"RelP has no rules for MLP kind {kind!r} ({adapter.name}); use a model whose family "
            f"has one of {', '.join(_RECOMPUTE)}."
        )
    return _RECOMPUTE[kind]


def relp_mlp_output(adapter: ModelAdapter, layer: int, x: Float[Tensor, "... d_model"]) -> Tensor:
    """Block ``layer``'s MLP applied to ``x`` with the LRP rules (its value equals the MLP's)."""
    return _rules_for(adapter)(get_path(adapter.block(layer), adapter.family.mlp), x)


@contextlib.contextmanager
def lrp_mlps(adapter: ModelAdapter) -> Iterator[None]:
    """Inside, every MLP's output carries RelP gradients; forward values are unchanged.

    The hooks are prepended, so ``mlp_out`` hooks installed on the same module (caches, patches)
    see the rewritten tensor and gradients taken at ``mlp_out`` flow on through the MLP.
    """
    _rules_for(adapter)  # fail before any hook is installed
    handles = []

    def make(layer: int):
        def hook(_mod, args, kwargs, output):
            x = args[0] if args else next(iter(kwargs.values()))
            relp = relp_mlp_output(adapter, layer, x)
            return output.detach() + (relp - relp.detach()).to(output.dtype)

        return hook

    try:
        for layer in range(adapter.n_layers):
            mlp = get_path(adapter.block(layer), adapter.family.mlp)
            handles.append(mlp.register_forward_hook(make(layer), with_kwargs=True, prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()
