"""The explainer registry: one entry per method, each explaining a batch of features.

An explainer never raises for one feature's trouble: a feature it cannot describe gets an
:class:`Explanation` with an empty description and the reason in ``failure``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cltrace.errors import CltraceError, UsageError
from cltrace.interpret.features import FeatureKey
from cltrace.interpret.render import quote_tokens, top_token_summary
from cltrace.interpret.store import ActivationStore
from cltrace.llm import ChatClient, LLMFailure


@dataclass
class Explanation:
    """One feature's description and how it was obtained."""

    description: str
    explainer: str
    """Registry key of the method that produced ``description`` (a fallback names itself)."""
    failure: str | None = None
    """Why there is no description (None when there is one)."""
    details: dict = field(default_factory=dict)
    """Method-specific findings: token lists, clusters, the LLM's raw reply."""


@dataclass
class ExplainContext:
    """What explainers may use."""

    adapter: object
    transcoder: object
    store: ActivationStore
    client: ChatClient | None = None
    options: dict = field(default_factory=dict)
    """Per-explainer configs by key (``weightlens``: WeightLensConfig, ``circuitlens``: ...)."""
    llm_calls: int = 0
    """Requests made to the LLM (filled by explainers that use it)."""


@dataclass(frozen=True)
class Explainer:
    key: str
    name: str
    explain: Callable[[ExplainContext, list[FeatureKey]], dict[FeatureKey, Explanation]]
    needs_llm: bool = False


def _no_examples(key: FeatureKey, ctx: ExplainContext) -> bool:
    return not ctx.store.top_examples(key)


def top_tokens_fallback(ctx: ExplainContext, key: FeatureKey, why: str, name: str) -> Explanation:
    """The tokens the feature peaks on in its top examples, clearly labelled as a fallback."""
    examples = ctx.store.top_examples(key)
    if not examples:
        return Explanation("", name, failure=f"{why}; and the feature never fired on the corpus")
    summary = top_token_summary(examples)
    toks = [t for t, _ in summary]
    text = f"top-activation token summary: peaks on {quote_tokens(toks)}"
    return Explanation(text, f"{name}/top_tokens", details={"fallback_reason": why,
                                                            "peak_tokens": summary})  # fmt: skip


def explain_weightlens(ctx: ExplainContext, features: list[FeatureKey]):
    from cltrace.interpret.weightlens import WeightLens, WeightLensConfig

    wl = WeightLens(ctx.adapter, ctx.transcoder, ctx.options.get("weightlens", WeightLensConfig()))
    out = {}
    for key in features:
        res = wl.analyse(key)
        details = res.to_json()
        if res.description_tokens:
            out[key] = Explanation(res.description(wl.cfg.n_listed), "weightlens", details=details)
        else:
            fb = top_tokens_fallback(ctx, key, res.reason or "no description", "weightlens")
            fb.details["weightlens"] = details
            out[key] = fb
    return out


def explain_llm(ctx: ExplainContext, features: list[FeatureKey]):
    from cltrace.interpret.llm_explainer import (
        MAX_TOKENS,
        TEMPERATURE,
        build_messages,
        parse_explanation,
    )  # fmt: skip

    if ctx.client is None:
        raise CltraceError("the llm explainer needs an endpoint; pass --base-url or set "
                           "CLTRACE_LLM_BASE_URL (any OpenAI-compatible server).")  # fmt: skip
    out, todo = {}, []
    for key in features:
        if _no_examples(key, ctx):
            out[key] = Explanation("", "llm", failure="no activating examples in the corpus")
        else:
            todo.append(key)
    msgs = [build_messages(ctx.store.top_examples(k)) for k in todo]
    before = ctx.client.n_requests
    replies = ctx.client.complete_many(msgs, temperature=TEMPERATURE, max_tokens=MAX_TOKENS)
    ctx.llm_calls += ctx.client.n_requests - before
    for key, reply in zip(todo, replies, strict=True):
        if isinstance(reply, LLMFailure):
            out[key] = Explanation("", "llm", failure=f"LLM request failed: {reply}")
            continue
        text = parse_explanation(reply)
        out[key] = (
            Explanation(text, "llm", details={"reply": reply})
            if text
            else Explanation(
                "", "llm", failure="LLM reply had no explanation", details={"reply": reply}
            )  # fmt: skip
        )
    return out


def explain_circuitlens(ctx: ExplainContext, features: list[FeatureKey], use_llm: bool = False):
    from cltrace.interpret import circuitlens as cl
    from cltrace.interpret.llm_explainer import MAX_TOKENS, TEMPERATURE, parse_explanation

    cfg = ctx.options.get("circuitlens", cl.CircuitLensConfig())
    name = "circuitlens_llm" if use_llm else "circuitlens"
    if use_llm and ctx.client is None:
        raise CltraceError("the circuitlens_llm explainer needs an endpoint; pass --base-url or "
                           "set CLTRACE_LLM_BASE_URL (any OpenAI-compatible server).")  # fmt: skip
    out, per_feature = {}, {}
    for key in features:
        rec = ctx.store.record(key)
        picked = cl.pick_samples(rec, cfg.n_samples)
        samples = [cl.attribute_sample(ctx.adapter, ctx.transcoder, key, ex, cfg.plausible_top_k)
                   for ex in picked]  # fmt: skip
        samples = [s for s in samples if s is not None]
        if not samples:
            out[key] = Explanation("", name, failure="no activating context to attribute")
            continue
        labels = cl.cluster([s.vector for s in samples], cfg.distance_threshold)
        clusters = cl.describe_clusters(ctx.adapter, samples, labels, cfg)
        details = {"n_samples": len(samples), "n_clusters": len(set(labels)),
                   "clusters": [{k: v for k, v in c.items() if k != "samples"}
                                for c in clusters]}  # fmt: skip
        per_feature[key] = (clusters, details, len(samples))
    if use_llm:
        flat = [(k, i) for k, (cs, _, _) in per_feature.items() for i in range(len(cs))]
        msgs = [cl.cluster_messages(per_feature[k][0][i]) for k, i in flat]
        before = ctx.client.n_requests
        replies = ctx.client.complete_many(msgs, temperature=TEMPERATURE, max_tokens=MAX_TOKENS)
        ctx.llm_calls += ctx.client.n_requests - before
        texts: dict[FeatureKey, list] = {k: [] for k in per_feature}
        for (k, _), r in zip(flat, replies, strict=True):
            texts[k].append(r)
    for key, (clusters, details, n) in per_feature.items():
        if not use_llm:
            out[key] = Explanation(cl.offline_description(clusters, n), name, details=details)
            continue
        ok = [parse_explanation(r) for r in texts[key] if not isinstance(r, LLMFailure)]
        ok = [t for t in ok if t]
        fails = [str(r) for r in texts[key] if isinstance(r, LLMFailure)]
        details["llm_failures"] = fails
        out[key] = (
            Explanation(" | ".join(ok), name, details=details)
            if ok
            else Explanation(
                "",
                name,
                failure="no cluster got an LLM description: "
                + ("; ".join(fails) or "empty replies"),
                details=details,
            )  # fmt: skip
        )
    return out


EXPLAINERS: dict[str, Explainer] = {
    e.key: e
    for e in (
        Explainer("weightlens", "WeightLens (weights only; top-token fallback)",
                  explain_weightlens),
        Explainer("llm", "Top-activation examples explained by an LLM", explain_llm,
                  needs_llm=True),
        Explainer("circuitlens", "CircuitLens clusters (offline token summary)",
                  explain_circuitlens),
        Explainer("circuitlens_llm", "CircuitLens clusters explained by an LLM",
                  lambda ctx, feats: explain_circuitlens(ctx, feats, use_llm=True),
                  needs_llm=True),
    )
}  # fmt: skip


def get_explainer(key: str) -> Explainer:
    if key not in EXPLAINERS:
        raise UsageError(f"unknown explainer {key!r}; use one of {', '.join(EXPLAINERS)}.")
    return EXPLAINERS[key]
