"""One uniform view of a Hugging Face causal LM: sizes, tokens, sites, hooks.

A *site* is a named tensor inside the forward pass, written ``"<kind>.<layer>"``:

=============  ==========================================  =================================
kind           what                                        shape
=============  ==========================================  =================================
resid_pre      residual stream entering block ``layer``    [batch, pos, d_model]
resid_post     residual stream leaving block ``layer``     [batch, pos, d_model]
attn_out       attention's write into the residual stream  [batch, pos, d_model]
resid_mid      the input of the MLP's norm: the residual   [batch, pos, d_model]
               stream between attention and MLP
mlp_in         the MLP's input (after its norm)            [batch, pos, d_model]
mlp_out        the MLP's write into the residual stream    [batch, pos, d_model]
attn_pattern   attention probabilities                     [batch, head, q_pos, k_pos]
=============  ==========================================  =================================

A hook is ``fn(tensor) -> tensor | None``: returning a tensor substitutes it for the site's value
in the forward pass, returning ``None`` keeps the value (used for caching). ``cache``, ``patch``
and ``stop_gradient`` are thin conveniences over :meth:`ModelAdapter.hooks`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.models import attention
from cltrace.models.families import Family, family_for, get_path
from cltrace.models.offload import execution_device, param, swapped_forward

Hook = Callable[[Tensor], Tensor | None]

SITE_KINDS: tuple[str, ...] = (
    "resid_pre",
    "resid_post",
    "attn_out",
    "resid_mid",
    "mlp_in",
    "mlp_out",
    "attn_pattern",
)


@dataclass(frozen=True)
class Site:
    """A parsed site name: ``Site("mlp_out", 3)`` is ``"mlp_out.3"``."""

    kind: str
    layer: int

    def __str__(self) -> str:
        return f"{self.kind}.{self.layer}"


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _with_first(output, new):
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def describe_words(words: Sequence[str], limit: int = 5) -> str:
    """``the word 'x'`` / ``the words 'x', 'y' and 3 more``, for messages."""
    shown = ", ".join(repr(w) for w in words[:limit])
    more = f" and {len(words) - limit} more" if len(words) > limit else ""
    return f"the word{'s' if len(words) > 1 else ''} {shown}{more}"


def _unk_runs(
    text: str, ids: Sequence[int], spans: Sequence[tuple[int, int]], unk: int
) -> list[str]:
    """The text of each run of touching unk tokens: "Jöhn" split into unknown pieces "J", "ö",
    "hn" is one word to the user."""
    runs: list[list[int]] = []
    prev_end = None
    for tid, (a, b) in zip(ids, spans, strict=True):
        if tid == unk and runs and prev_end == a and not text[a:b][:1].isspace():
            runs[-1][1] = b
        elif tid == unk:
            runs.append([a, b])
        prev_end = b if tid == unk else None
    return [text[a:b].strip() for a, b in runs]


class ModelAdapter:
    """Wraps a transformers causal LM and its tokenizer.

    The model is switched to cltrace's attention function (numerically the family's eager
    attention) so that attention patterns can be read and substituted; logits are unchanged.
    """

    def __init__(self, hf_model: torch.nn.Module, tokenizer, name: str | None = None):
        cfg = hf_model.config
        self.family: Family = family_for(getattr(cfg, "model_type", "?"))
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(cfg, "_name_or_path", "") or self.family.name
        attention.register()
        if hasattr(hf_model, "set_attn_implementation"):
            hf_model.set_attn_implementation(attention.ATTN_IMPLEMENTATION)
        else:  # older transformers
            cfg._attn_implementation = attention.ATTN_IMPLEMENTATION
        self._blocks = list(get_path(hf_model, self.family.blocks))
        self.n_layers: int = len(self._blocks)
        self.d_model: int = int(cfg.hidden_size)
        self.n_heads: int = int(cfg.num_attention_heads)
        self.d_vocab: int = int(hf_model.get_output_embeddings().weight.shape[0])
        self.final_logit_softcap: float | None = getattr(cfg, "final_logit_softcapping", None)

    # ------------------------------------------------------------------ sizes and weights
    @property
    def device(self) -> torch.device:
        """Where cltrace keeps its tensors: the model's device, or for a model spread over
        devices (``device_map``) the one its input embedding computes on. Hooks see their
        site's value there, wherever the block runs."""
        if getattr(self.hf_model, "hf_device_map", None):
            return execution_device(self.hf_model.get_input_embeddings())
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return param(self.hf_model.get_input_embeddings())  # type: ignore[return-value]

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return param(self.hf_model.get_output_embeddings()).T  # type: ignore[union-attr]

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"] | None:
        return param(self.hf_model.get_output_embeddings(), "bias")

    def block(self, layer: int) -> torch.nn.Module:
        return self._blocks[layer]

    def final_norm(self) -> torch.nn.Module:
        return get_path(self.hf_model, self.family.final_norm)

    def norm_modules(self, layer: int) -> dict[str, torch.nn.Module]:
        """The norms inside block ``layer``, keyed by their attribute name."""
        return {n: get_path(self._blocks[layer], n) for n in self.family.norms}

    # ------------------------------------------------------------------ tokens
    @property
    def bos_token_id(self) -> int:
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if bos is None:
            raise CltraceError(
                f"the tokenizer of {self.name} has neither a BOS nor an EOS token; "
                "pass prepend_bos=False."
            )
        return int(bos)

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]:
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return [self.bos_token_id, *ids] if prepend_bos else ids

    def to_tokens(
        self, texts: str | Sequence[str], prepend_bos: bool = True
    ) -> Int[Tensor, "batch pos"]:
        """Token ids of one text or of texts that tokenize to the same length."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode(t, prepend_bos) for t in texts]
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            raise CltraceError(
                f"texts tokenize to different lengths {sorted(lengths)}; "
                "batch only texts of equal token length."
            )
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def single_token_id(self, text: str, what: str = "answer") -> int:
        """The id of a text that must be exactly one known token (e.g. an answer " Mary").

        ``what`` names the text in the error (``"answer"``, ``"--target"``)."""
        ids = self.encode(text, prepend_bos=False)
        if len(ids) != 1:
            raise CltraceError(
                f"{what} {text!r} is {len(ids)} tokens for {self.name}; use a single token "
                "(usually a word with a leading space)."
            )
        if ids[0] == self.unk_token_id:
            raise CltraceError(
                f"{what} {text!r} is not in the vocabulary of {self.name} (it would be read as "
                f"{self.tokenizer.unk_token}); use a word the tokenizer knows."
            )
        return ids[0]

    # ------------------------------------------------------------------ checking user text
    @property
    def unk_token_id(self) -> int | None:
        """The id the tokenizer gives text it does not know, or None when nothing is unknown.

        Byte-level tokenizers (GPT-2's) name their end-of-text token as the unk token but can
        spell any text, so an unk id equal to BOS or EOS counts as none."""
        tok = self.tokenizer
        unk = getattr(tok, "unk_token_id", None)
        if unk is None or unk in (tok.bos_token_id, tok.eos_token_id):
            return None
        return int(unk)

    def unknown_words(self, text: str) -> list[str]:
        """The distinct pieces of ``text`` the tokenizer reads as its unk token, in order."""
        unk = self.unk_token_id
        if unk is None:
            return []
        ids = self.encode(text, prepend_bos=False)
        if unk not in ids:
            return []
        spans = self._offsets(text, len(ids))
        words = (
            self._unknown_by_word(text, unk) if spans is None else _unk_runs(text, ids, spans, unk)
        )
        return list(dict.fromkeys(w for w in words if w)) or [self.tokenizer.unk_token]

    def _offsets(self, text: str, n_ids: int) -> list[tuple[int, int]] | None:
        """Each token's character span, or None when the tokenizer cannot give them."""
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
            return None
        spans = [tuple(s) for s in enc["offset_mapping"]]
        return spans if len(spans) == n_ids and all(b > a for a, b in spans) else None

    def _unknown_by_word(self, text: str, unk: int) -> list[str]:
        # re-encode each word with the space before it: many vocabularies hold " word", not
        # "word", so a word alone may tokenize differently from the same word in the prompt
        chunks = re.findall(r"\s*\S+", text)
        return [c.strip() for c in chunks if unk in self.encode(c, prepend_bos=False)]

    @property
    def n_ctx(self) -> int | None:
        """The longest sequence the model takes (its position count), or None if unstated."""
        cfg = self.hf_model.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def check_length(
        self, n_tokens: int, what: str = "the prompt", error: type[CltraceError] = CltraceError
    ) -> None:
        """Raise ``error`` when ``n_tokens`` (BOS included) do not fit the model's context."""
        if self.n_ctx is not None and n_tokens > self.n_ctx:
            raise error(
                f"{what} is {n_tokens} tokens with BOS but the context of {self.name} is "
                f"{self.n_ctx} tokens; shorten it."
            )

    def check_prompt(
        self,
        text: str,
        what: str = "the prompt",
        allow_unk: bool = False,
        error: type[CltraceError] = CltraceError,
    ) -> list[str]:
        """Check user text before it is run: not empty, every word known (unless
        ``allow_unk``), not longer than the context. Returns the unknown words (allowed ones),
        so the caller can warn about them once. ``what`` names the text in the message."""
        if not text.strip():
            raise error(f"{what} is empty; give it some text.")
        unknown = self.unknown_words(text)
        if unknown and not allow_unk:
            raise error(
                f"{what} has {describe_words(unknown)} that the tokenizer of {self.name} does "
                f"not know; use words in its vocabulary, or pass --allow-unk to read unknown "
                f"words as {self.tokenizer.unk_token}."
            )
        self.check_length(len(self.encode(text)), what, error)
        return unknown

    def to_str_tokens(self, ids: Iterable[int] | Tensor) -> list[str]:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        if not hasattr(self, "_token_strs"):
            self._token_strs: dict[int, str] = {}
        cache = self._token_strs
        out = []
        for i in ids:
            i = int(i)
            s = cache.get(i)
            if s is None:
                s = cache[i] = self.tokenizer.decode([i])
            out.append(s)
        return out

    # ------------------------------------------------------------------ forward
    def __call__(
        self, tokens: Int[Tensor, "batch pos"], attention_mask: Tensor | None = None
    ) -> Float[Tensor, "batch pos d_vocab"]:
        if tokens.ndim == 1:
            tokens = tokens[None]
        out = self.hf_model(input_ids=tokens, attention_mask=attention_mask, use_cache=False)
        return out.logits

    def run_until(
        self,
        tokens: Int[Tensor, "batch pos"],
        site: str | Site,
        attention_mask: Tensor | None = None,
    ) -> None:
        """A forward pass that stops once ``site`` is computed: hooks installed before the call
        see every site up to it (``site``'s own included), and nothing after it runs, the
        unembedding included. For reading activations (e.g. the transcoder's inputs) only."""
        class _Reached(Exception):
            pass

        def stop(_t: Tensor) -> None:
            raise _Reached

        if tokens.ndim == 1:
            tokens = tokens[None]
        try:
            with self.hooks({site: stop}):
                self.hf_model(input_ids=tokens, attention_mask=attention_mask, use_cache=False)
        except _Reached:
            return
        raise RuntimeError(f"the forward pass never reached {site}")  # hooks must fire

    # ------------------------------------------------------------------ sites and hooks
    def parse_site(self, site: str | Site) -> Site:
        if isinstance(site, Site):
            parsed = site
        else:
            kind, _, layer = str(site).rpartition(".")
            if kind not in SITE_KINDS or not layer.lstrip("-").isdigit():
                raise CltraceError(
                    f"unknown site {site!r}; write '<kind>.<layer>' with kind one of "
                    f"{', '.join(SITE_KINDS)}."
                )
            parsed = Site(kind, int(layer))
        if not 0 <= parsed.layer < self.n_layers:
            raise CltraceError(
                f"site {parsed} names layer {parsed.layer}, but {self.name} has layers "
                f"0..{self.n_layers - 1}."
            )
        return parsed

    def _install(self, site: Site, fn: Hook) -> Callable[[], None]:
        """Attach ``fn`` at ``site``; returns the function that detaches it."""
        block = self._blocks[site.layer]
        fn = self._on_home_device(fn)
        fam = self.family
        if site.kind == "attn_pattern":
            hooks = attention.pattern_hooks(get_path(block, fam.attn))
            hooks.append(fn)
            return lambda: hooks.remove(fn)
        if site.kind in ("resid_pre", "resid_mid", "mlp_in"):
            # resid_mid is read where the MLP's norm reads it, so substituting it changes what
            # the MLP sees (like mlp_in), not the residual stream the block adds the MLP to
            path = {"resid_mid": fam.mlp_in_norm, "mlp_in": fam.mlp}.get(site.kind)
            module = block if path is None else get_path(block, path)

            def pre_hook(_mod, args, kwargs):
                if args:
                    new = fn(args[0])
                    return None if new is None else ((new, *args[1:]), kwargs)
                key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
                new = fn(kwargs[key])
                return None if new is None else (args, {**kwargs, key: new})

            return module.register_forward_pre_hook(pre_hook, with_kwargs=True).remove
        module = {
            "resid_post": block,
            "attn_out": get_path(block, fam.attn_write),
            "mlp_out": get_path(block, fam.mlp_write),
        }[site.kind]

        def post_hook(_mod, _args, output):
            new = fn(_first(output))
            return None if new is None else _with_first(output, new)

        return module.register_forward_hook(post_hook).remove

    def _on_home_device(self, fn: Hook) -> Hook:
        """``fn`` as it runs at a site of a block on another device than :attr:`device` (a
        device map): it sees the value moved here, and the forward pass goes on with what it
        returns (or the moved value itself, so gradients taken at what ``fn`` saw reach the
        forward pass) moved back. Copies between devices are exact."""
        if not getattr(self.hf_model, "hf_device_map", None):
            return fn
        home = self.device

        def moved(t: Tensor) -> Tensor | None:
            if t.device == home:
                return fn(t)
            here = t.to(home)
            new = fn(here)
            return (here if new is None else new).to(t.device)

        return moved

    @contextlib.contextmanager
    def hooks(self, hooks: Mapping[str | Site, Hook]) -> Iterator[None]:
        """Run ``fn`` on each site's value during every forward pass inside the block."""
        removers = []
        try:
            for site, fn in hooks.items():
                removers.append(self._install(self.parse_site(site), fn))
            yield
        finally:
            for remove in reversed(removers):
                remove()

    @contextlib.contextmanager
    def cache(
        self, sites: Iterable[str | Site], detach: bool = True
    ) -> Iterator[dict[str, Tensor]]:
        """Record the value of each site (keyed by its string name) during the block.

        With ``detach=False`` the cached tensors stay in the autograd graph, so gradients with
        respect to a site can be taken (``torch.autograd.grad(metric, cache[site])``).
        """
        store: dict[str, Tensor] = {}

        def recorder(name: str) -> Hook:
            def fn(t: Tensor) -> None:
                store[name] = t.detach() if detach else t

            return fn

        parsed = [self.parse_site(s) for s in sites]
        with self.hooks({p: recorder(str(p)) for p in parsed}):
            yield store

    @contextlib.contextmanager
    def patch(
        self,
        site: str | Site,
        add: Tensor | None = None,
        replace: Tensor | None = None,
    ) -> Iterator[None]:
        """Add ``add`` to, or substitute ``replace`` for, a site's value (broadcasting)."""
        if (add is None) == (replace is None):
            raise ValueError("patch takes exactly one of add= or replace=")
        if add is not None:
            fn: Hook = lambda t: t + add.to(t.device, t.dtype)  # noqa: E731
        else:
            fn = lambda t: replace.to(t.device, t.dtype).expand_as(t)  # noqa: E731
        with self.hooks({site: fn}):
            yield

    @contextlib.contextmanager
    def resume_after(self, layer: int, hidden: Tensor) -> Iterator[None]:
        """Inside the block, a forward pass skips blocks ``0..layer``: block ``layer`` outputs
        ``hidden`` (``[batch, pos, d_model]``, the batch of the tokens passed) and only the
        blocks after it, the final norm and the unembedding run.

        For work that changes nothing before block ``layer``'s output, e.g. patches whose
        earliest site is that block's MLP output: the skipped blocks' values are the clean
        run's, so they need not be computed again. Hooks inside skipped blocks do not fire.
        """
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is outside 0..{self.n_layers - 1}")
        as_tuple = self._block_returns_tuple()

        def skipped(value):
            def forward(*args, **kwargs):
                x = value if value is not None else (args[0] if args else kwargs["hidden_states"])
                return (x,) if as_tuple else x

            return forward

        # the next block reads it where block `layer` would have written it
        hidden = hidden.to(execution_device(self._blocks[layer]))
        blocks = self._blocks[: layer + 1]
        with swapped_forward([(b, skipped(hidden if j == layer else None))
                              for j, b in enumerate(blocks)]):  # fmt: skip
            yield

    @torch.no_grad()
    def prompt_keys_values(
        self, tokens: Int[Tensor, "1 pos"]
    ) -> list[tuple[Tensor, Tensor]] | None:
        """Every layer's attention keys and values for ``tokens``, to resume a forward pass in
        the middle of the prompt (:meth:`last_logits`); None where this model cannot be resumed
        that way: an attention window shorter than the prompt, or a cache layout this version
        of transformers does not expose. Either way it runs one forward pass of ``tokens``, so
        hooks around the call record that pass."""
        out = self.hf_model(input_ids=tokens, use_cache=True)
        window = getattr(self.hf_model.config, "sliding_window", None)
        if window is not None and window < tokens.shape[1]:
            return None
        cache = getattr(out, "cache", None)  # older transformers: past_key_values
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        layers = getattr(cache, "layers", None)
        if layers is None or len(layers) != self.n_layers:
            return None
        kv = [(getattr(x, "keys", None), getattr(x, "values", None)) for x in layers]
        if any(not isinstance(t, Tensor) or t.shape[-2] != tokens.shape[1] for k in kv for t in k):
            return None
        return kv

    def last_logits(
        self,
        tokens: Int[Tensor, "batch pos"],
        start: int = 0,
        keys_values: list[tuple[Tensor, Tensor]] | None = None,
        keys_values_out: list[tuple[Tensor, Tensor] | None] | None = None,
    ) -> Float[Tensor, "batch d_vocab"]:
        """Last-position logits (the other positions are never unembedded). With ``start > 0``
        only positions ``start..`` are computed, attending to ``keys_values``
        (:meth:`prompt_keys_values` of the same tokens, batch 1 or the tokens' batch) for the
        earlier ones; the hidden states given to :meth:`resume_after` then cover those
        positions only. A list passed as ``keys_values_out`` receives every layer's keys and
        values over the whole prompt, or None for a layer whose block did not run."""
        from transformers import DynamicCache

        model = self.hf_model
        params = self._forward_parameters()
        kwargs: dict = {"use_cache": keys_values_out is not None}
        if "logits_to_keep" in params:
            kwargs["logits_to_keep"] = 1
        cache_key = "cache" if "cache" in params else "past_key_values"
        if start > 0:
            if keys_values is None:
                raise ValueError("start > 0 needs the prompt's keys and values")
            b = tokens.shape[0]
            data = [tuple(x[..., :start, :].expand(b, -1, -1, -1) for x in kv)
                    for kv in keys_values]  # fmt: skip
            kwargs.update({cache_key: DynamicCache(ddp_cache_data=data, config=model.config),
                           "use_cache": True})  # fmt: skip
            tokens = tokens[:, start:]
        out = model(input_ids=tokens, **kwargs)
        if keys_values_out is not None:
            cache = kwargs.get(cache_key)
            if cache is None:  # newer transformers name the returned cache "cache"
                cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            n_pos = start + tokens.shape[1]
            for layer in getattr(cache, "layers", [None] * self.n_layers):
                k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
                ran = isinstance(k, Tensor) and isinstance(v, Tensor) and k.shape[-2] == n_pos
                keys_values_out.append((k, v) if ran else None)
        return out.logits[:, -1]

    @contextlib.contextmanager
    def last_position_mlp(self) -> Iterator[None]:
        """Inside the block, the last block's MLP runs on the last position only and writes
        zeros elsewhere.

        For passes that read nothing but the last position's logits (:meth:`last_logits`): no
        later block reads the last block's other positions, so their MLP work is wasted. Any
        value recorded at the last block's ``mlp_out`` or ``resid_post`` is wrong outside the
        last position, so do not cache those sites inside the block.
        """
        mlp = get_path(self._blocks[-1], self.family.mlp)
        run = mlp.forward  # accelerate's wrapper where it hooks the MLP (loads, moves)

        def last_only(x: Tensor, *args, **kwargs) -> Tensor:
            y = run(x[:, -1:], *args, **kwargs)
            out = y.new_zeros(*x.shape[:-1], y.shape[-1])
            out[:, -1:] = y
            return out

        with swapped_forward([(mlp, last_only)]):
            yield

    @contextlib.contextmanager
    def fused_activations(self) -> Iterator[None]:
        """Inside the block, GPT-2's ``gelu_new`` (tanh GELU written as five elementwise ops)
        runs as torch's fused tanh GELU: the same formula, about twice as fast, equal within
        a few float32 ulps (2.4e-7 on unit-normal inputs)."""
        from transformers.activations import NewGELUActivation

        def fused(x: Tensor) -> Tensor:
            return torch.nn.functional.gelu(x, approximate="tanh")

        if not hasattr(self, "_gelu_new"):
            self._gelu_new = [m for m in self.hf_model.modules()
                              if isinstance(m, NewGELUActivation)]  # fmt: skip
        with swapped_forward([(m, fused) for m in self._gelu_new]):
            yield

    def _forward_parameters(self) -> frozenset[str]:
        """The names the model's ``forward`` takes, read once (patched passes ask every call)."""
        if not hasattr(self, "_forward_params"):
            import inspect

            self._forward_params = frozenset(inspect.signature(self.hf_model.forward).parameters)
        return self._forward_params

    def _block_returns_tuple(self) -> bool:
        """Whether this transformers version's blocks return a tuple (older) or a tensor."""
        if not hasattr(self, "_blocks_return_tuple"):
            seen: list[bool] = []
            handle = self._blocks[0].register_forward_hook(
                lambda _m, _a, out: seen.append(isinstance(out, tuple))
            )
            try:
                with torch.no_grad():
                    self.hf_model(input_ids=torch.tensor([[self.bos_token_id]], device=self.device),
                                  use_cache=False)  # fmt: skip
            finally:
                handle.remove()
            self._blocks_return_tuple = seen[0]
        return self._blocks_return_tuple

    @contextlib.contextmanager
    def stop_gradient(self, sites: Iterable[str | Site]) -> Iterator[None]:
        """Detach each site's value: forward values unchanged, no gradient flows through it."""
        with self.hooks({s: (lambda t: t.detach()) for s in sites}):
            yield

    def sites(self, kind: str) -> list[str]:
        """All sites of one kind, layer by layer."""
        if kind not in SITE_KINDS:
            raise CltraceError(f"unknown site kind {kind!r}; use one of {', '.join(SITE_KINDS)}.")
        return [f"{kind}.{layer}" for layer in range(self.n_layers)]
