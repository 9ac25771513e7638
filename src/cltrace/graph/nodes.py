"""The attribution graph and its node index: the one place that defines node kinds, order, ids.

Nodes are laid out in four contiguous blocks, always in this order:

====== ================================= ======================== ===============================
block  node                               count                    JSON id (docs/formats.md 2)
====== ================================= ======================== ===============================
0      active feature (layer, pos, f)     ``n_features``           ``{layer}_{f}_{pos}``
1      error (layer, pos)                 ``n_layers * n_pos``     ``{layer}_-1_{pos}``
2      token embedding (pos)              ``n_pos``                ``E_{token_id}_{pos}``
3      logit (token or direction)         ``n_logits``             ``{n_layers+1}_{token_id}_{pos}``
====== ================================= ======================== ===============================

Only features and logits have inputs, so the adjacency is stored as a rectangular matrix
``A[target, source]`` with target rows = features then logits and source columns = features,
errors, tokens. Its size grows with ``(n_features + n_logits) * n_nodes``, never with the square
of the error and token blocks (which grow with the prompt length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from jaxtyping import Float, Int
from torch import Tensor


def cantor(layer: int, feature: int) -> int:
    """One integer for a (layer, feature) id: ``(l + f)(l + f + 1) / 2 + f`` (Cantor pairing).

    Graph viewers and PIE's result files use it as a feature's global index."""
    s = layer + feature
    return s * (s + 1) // 2 + feature


def inverse_cantor(z: int) -> tuple[int, int]:
    """``(layer, feature)`` of a :func:`cantor` index."""
    w = (math.isqrt(8 * z + 1) - 1) // 2
    feature = z - w * (w + 1) // 2
    return w - feature, feature


class NodeKind(IntEnum):
    FEATURE = 0
    ERROR = 1
    TOKEN = 2
    LOGIT = 3


@dataclass
class NodeIndex:
    """Positions of every node in the graph's node order (see the module docstring)."""

    n_layers: int
    n_pos: int
    feat_layer: Int[Tensor, " n_features"]
    feat_pos: Int[Tensor, " n_features"]
    feat_id: Int[Tensor, " n_features"]
    logit_token: Int[Tensor, " n_logits"]
    """Vocabulary id of each logit node; -1 for a custom direction."""

    @classmethod
    def sources(
        cls,
        n_layers: int,
        n_pos: int,
        feat_layer: Int[Tensor, " n_features"],
        feat_pos: Int[Tensor, " n_features"],
        feat_id: Int[Tensor, " n_features"],
    ) -> NodeIndex:
        """The source columns only (features, errors, tokens; no logits): the layout of edge
        rows while they are computed, before any feature selection."""
        empty = torch.zeros(0, dtype=torch.long)
        return cls(n_layers, n_pos, feat_layer, feat_pos, feat_id, logit_token=empty)

    @property
    def n_features(self) -> int:
        return int(self.feat_layer.numel())

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_tokens(self) -> int:
        return self.n_pos

    @property
    def n_logits(self) -> int:
        return int(self.logit_token.numel())

    @property
    def error_start(self) -> int:
        return self.n_features

    @property
    def token_start(self) -> int:
        return self.n_features + self.n_errors

    @property
    def logit_start(self) -> int:
        return self.token_start + self.n_tokens

    @property
    def n_sources(self) -> int:
        """Nodes that can have outgoing edges: features, errors, tokens."""
        return self.logit_start

    @property
    def n_nodes(self) -> int:
        return self.logit_start + self.n_logits

    @property
    def n_targets(self) -> int:
        """Nodes with incoming edges: features, then logits (adjacency rows)."""
        return self.n_features + self.n_logits

    def select_features(self, chosen: Int[Tensor, " m"]) -> Int[Tensor, " m_sources"]:
        """Source columns that keep only the ``chosen`` features (plus every error and token),
        in node order when ``chosen`` is sorted."""
        return torch.cat([chosen.cpu(), torch.arange(self.error_start, self.n_sources)])

    def features(self) -> slice:
        return slice(0, self.n_features)

    def errors(self) -> slice:
        return slice(self.error_start, self.token_start)

    def tokens(self) -> slice:
        return slice(self.token_start, self.logit_start)

    def logits(self) -> slice:
        return slice(self.logit_start, self.n_nodes)

    def error_node(self, layer: int, pos: int) -> int:
        return self.error_start + layer * self.n_pos + pos

    def token_node(self, pos: int) -> int:
        return self.token_start + pos

    def logit_node(self, k: int) -> int:
        return self.logit_start + k

    def target_row_of_node(self, node: int) -> int:
        """Adjacency row of a feature or logit node."""
        if node < self.n_features:
            return node
        if node >= self.logit_start:
            return self.n_features + (node - self.logit_start)
        raise ValueError(f"node {node} ({self.kind(node).name}) has no incoming edges")

    def target_nodes(self) -> Int[Tensor, " n_targets"]:
        """Node number of each adjacency row."""
        return torch.cat(
            [torch.arange(self.n_features), torch.arange(self.logit_start, self.n_nodes)]
        )

    def kind(self, node: int) -> NodeKind:
        if node < self.error_start:
            return NodeKind.FEATURE
        if node < self.token_start:
            return NodeKind.ERROR
        if node < self.logit_start:
            return NodeKind.TOKEN
        if node < self.n_nodes:
            return NodeKind.LOGIT
        raise IndexError(f"node {node} out of range (graph has {self.n_nodes})")

    def kinds(self) -> Int[Tensor, " n_nodes"]:
        return torch.cat(
            [
                torch.full((self.n_features,), NodeKind.FEATURE),
                torch.full((self.n_errors,), NodeKind.ERROR),
                torch.full((self.n_tokens,), NodeKind.TOKEN),
                torch.full((self.n_logits,), NodeKind.LOGIT),
            ]
        )

    def layer_pos(self, node: int) -> tuple[int, int]:
        """(layer, position) of a node; tokens are layer -1 ("E"), logits layer n_layers."""
        k = self.kind(node)
        if k == NodeKind.FEATURE:
            return int(self.feat_layer[node]), int(self.feat_pos[node])
        if k == NodeKind.ERROR:
            off = node - self.error_start
            return off // self.n_pos, off % self.n_pos
        if k == NodeKind.TOKEN:
            return -1, node - self.token_start
        return self.n_layers, self.n_pos - 1

    def node_id(self, node: int, tokens: Int[Tensor, " pos"]) -> str:
        """The JSON node id (docs/formats.md section 2)."""
        k = self.kind(node)
        layer, pos = self.layer_pos(node)
        if k == NodeKind.FEATURE:
            return f"{layer}_{int(self.feat_id[node])}_{pos}"
        if k == NodeKind.ERROR:
            return f"{layer}_-1_{pos}"
        if k == NodeKind.TOKEN:
            return f"E_{int(tokens[pos])}_{pos}"
        return f"{self.n_layers + 1}_{int(self.logit_token[node - self.logit_start])}_{pos}"


@dataclass
class Graph:
    """An attribution graph of one prompt on the local replacement model.

    ``adjacency[r, s]`` is the direct effect of source node ``s`` on the target of row ``r``
    (``index.target_nodes()[r]``): for a feature target, on its encoder pre-activation; for a
    logit target, on the de-meaned logit (logit minus the mean logit, before any soft-capping).
    """

    index: NodeIndex
    adjacency: Float[Tensor, "n_targets n_sources"]
    tokens: Int[Tensor, " pos"]
    activations: Float[Tensor, " n_features"]
    """Activation of each feature node."""
    logit_probs: Float[Tensor, " n_logits"]
    """Model probability of each logit node's token (1 for a custom direction)."""
    target_values: Float[Tensor, " n_targets"]
    """Each target's value on the real forward pass (feature pre-activation or de-meaned logit)."""
    bias_values: Float[Tensor, " n_targets"]
    """The part of each target's value that comes from biases, not from any node."""
    prompt: str = ""
    str_tokens: list[str] = field(default_factory=list)
    model_name: str = ""
    transcoder_name: str = ""
    n_active_features: int = 0
    """Active feature occurrences before any ``max_feature_nodes`` selection."""
    seconds: float = 0.0

    @property
    def n_nodes(self) -> int:
        return self.index.n_nodes

    def dense_adjacency(self) -> Float[Tensor, "n_nodes n_nodes"]:
        """The square adjacency (rows = targets) for small graphs and for analysis code."""
        idx = self.index
        full = torch.zeros(idx.n_nodes, idx.n_nodes, dtype=self.adjacency.dtype)
        full[idx.target_nodes(), : idx.n_sources] = self.adjacency
        return full
