"""The edge-level computational graph of a transformer: writers, readers and the edges between.

*Writers* add into the residual stream: the embeddings (token plus position, as the input of
block 0), every attention head, every MLP. *Readers* take from it: each head's query, key and
value inputs separately, each MLP's input, and the logits. An edge joins a writer to a reader
that comes after it; a reader's input is the sum over its edges of the writer outputs (plus the
constant attention-output biases of earlier layers).

The flat edge order (the one place that fixes it) is, layer by layer: the attention block as a
``[n_upstream, 3, n_heads]`` array (writer, then q/k/v, then head), then the MLP's
``[n_upstream]`` edges; finally the logits' ``[n_writers]`` edges. :meth:`EdgeGraph.split` cuts a
flat vector into those blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

PORTS = ("q", "k", "v")


@dataclass(frozen=True)
class EdgeGraph:
    """The graph of a model with ``n_layers`` layers of ``n_heads`` heads and one MLP each."""

    n_layers: int
    n_heads: int

    # ------------------------------------------------------------------ writers
    @property
    def n_writers(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    def head_writer(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_writer(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def upstream_of_attn(self, layer: int) -> int:
        """How many writers come before layer ``layer``'s attention."""
        return 1 + layer * (self.n_heads + 1)

    def upstream_of_mlp(self, layer: int) -> int:
        return self.upstream_of_attn(layer) + self.n_heads

    @cached_property
    def writer_names(self) -> list[str]:
        names = ["embed"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return names

    # ------------------------------------------------------------------ edges
    @cached_property
    def block_shapes(self) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        for layer in range(self.n_layers):
            shapes.append((self.upstream_of_attn(layer), 3, self.n_heads))
            shapes.append((self.upstream_of_mlp(layer),))
        shapes.append((self.n_writers,))
        return shapes

    @cached_property
    def n_edges(self) -> int:
        return sum(int(torch.tensor(s).prod()) for s in self.block_shapes)

    def split(self, flat: Tensor) -> list[Tensor]:
        """Cut ``[..., n_edges]`` into the per-block views ``[..., *block_shape]``."""
        sizes = [int(torch.tensor(s).prod()) for s in self.block_shapes]
        parts = torch.split(flat, sizes, dim=-1)
        lead = flat.shape[:-1]
        return [p.reshape(*lead, *s) for p, s in zip(parts, self.block_shapes, strict=True)]

    @cached_property
    def edges(self) -> list[tuple[int, str]]:
        """``(writer index, reader name)`` for every edge, in flat order."""
        out: list[tuple[int, str]] = []
        for layer in range(self.n_layers):
            for w in range(self.upstream_of_attn(layer)):
                for port in PORTS:
                    out += [(w, f"a{layer}.h{h}.{port}") for h in range(self.n_heads)]
            out += [(w, f"m{layer}") for w in range(self.upstream_of_mlp(layer))]
        out += [(w, "logits") for w in range(self.n_writers)]
        return out

    @cached_property
    def edge_names(self) -> list[str]:
        return [f"{self.writer_names[w]}->{r}" for w, r in self.edges]

    @cached_property
    def edge_writer(self) -> Tensor:
        """The writer index of each edge, ``[n_edges]``."""
        return torch.tensor([w for w, _ in self.edges], dtype=torch.long)

    @cached_property
    def edge_reader_node(self) -> Tensor:
        """The writer index of the node each edge feeds (its reader's own output), or
        ``n_writers`` for the logits, ``[n_edges]``."""
        nodes = []
        for _, r in self.edges:
            if r == "logits":
                nodes.append(self.n_writers)
            elif r.startswith("m"):
                nodes.append(self.mlp_writer(int(r[1:])))
            else:
                layer, head = r.split(".")[:2]
                nodes.append(self.head_writer(int(layer[1:]), int(head[1:])))
        return torch.tensor(nodes, dtype=torch.long)

    # ------------------------------------------------------------------ MIB names
    @cached_property
    def mib_node_names(self) -> list[str]:
        """Writer names as the MIB circuit-localisation track spells them (``input``,
        ``a{layer}.h{head}``, ``m{layer}``); the logits node is ``logits``."""
        return ["input", *self.writer_names[1:]]

    @cached_property
    def mib_edge_names(self) -> list[str]:
        """Edge names in MIB's spelling, in flat order: ``input->a1.h0<q>``, ``a0.h2->m0``,
        ``m3->logits`` (the q/k/v port of a head reader in angle brackets)."""
        out = []
        for w, r in self.edges:
            head, _, port = r.rpartition(".") if r.count(".") == 2 else (r, "", "")
            dst = f"{head}<{port}>" if port else r
            out.append(f"{self.mib_node_names[w]}->{dst}")
        return out

    def edge_counts(self, keep: Tensor) -> dict[str, int]:
        """For every node a circuit touches, how many of its kept edges enter or leave it
        (``input`` and ``logits`` included)."""
        keep = keep.bool().cpu()
        counts = torch.bincount(self.edge_writer[keep], minlength=self.n_writers + 1)
        counts += torch.bincount(self.edge_reader_node[keep], minlength=self.n_writers + 1)
        names = [*self.mib_node_names, "logits"]
        return {names[i]: int(c) for i, c in enumerate(counts.tolist()) if c}

    def nodes_of(self, keep: Tensor) -> list[str]:
        """The heads and MLPs a circuit touches (as a writer or a reader), in forward order."""
        keep = keep.bool().cpu()
        used = set(self.edge_writer[keep].tolist()) | set(self.edge_reader_node[keep].tolist())
        return [self.writer_names[w] for w in range(1, self.n_writers) if w in used]

    def prune_dangling(self, keep: Tensor) -> Tensor:
        """Drop kept edges whose writer gets no kept input (so it outputs its corrupted value)
        or whose reader's node reaches the logits by no kept edge. ``keep``: bool [n_edges]."""
        keep = keep.bool().cpu()
        writer, node = self.edge_writer, self.edge_reader_node
        fed = torch.zeros(self.n_writers + 1, dtype=torch.bool)
        fed[0] = True
        for w in range(1, self.n_writers + 1):  # writers are in forward order
            fed[w] = bool((keep & (node == w) & fed[writer]).any())
        live = torch.zeros(self.n_writers + 1, dtype=torch.bool)
        live[self.n_writers] = True
        for w in range(self.n_writers - 1, -1, -1):
            live[w] = bool((keep & (writer == w) & live[node] & fed[w]).any())
        return keep & fed[writer] & live[node]


__all__ = ["PORTS", "EdgeGraph"]
