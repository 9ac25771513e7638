"""Per-feature detail JSON (docs/formats.md section 3: ``index``, ``examples_quantiles``,
``top_logits``, ``bottom_logits``) and the ``descriptions.json`` entry of a feature."""

from __future__ import annotations

from pathlib import Path

import torch

from cltrace.files import atomic_write_json
from cltrace.graph.nodes import cantor
from cltrace.interpret.explainers import Explanation
from cltrace.interpret.features import FeatureKey
from cltrace.interpret.render import example_html
from cltrace.interpret.store import ActivationStore


def feature_logits(adapter, transcoder, key: FeatureKey, n: int = 10) -> tuple[list, list]:
    """Tokens with the largest and smallest ``(sum of decoders) . W_U`` (direct logit effect)."""
    dec = transcoder.decoder_rows(key[0], torch.tensor([key[1]]))[0].detach().float().sum(0)
    logits = dec @ adapter.W_U.detach().float()
    n = min(n, logits.numel())
    top, bottom = logits.topk(n), logits.topk(n, largest=False)
    fmt = lambda r: [{"token": t, "id": int(i), "value": float(v)}  # noqa: E731
                     for t, i, v in zip(adapter.to_str_tokens(r.indices), r.indices.tolist(),
                                        r.values.tolist(), strict=True)]  # fmt: skip
    return fmt(top), fmt(bottom)


def detail_json(adapter, transcoder, store: ActivationStore, key: FeatureKey,
                expl: Explanation | None = None) -> dict:  # fmt: skip
    rec = store.record(key)
    top, bottom = feature_logits(adapter, transcoder, key)
    return {
        "index": key[1],
        "layer": key[0],
        "id": cantor(*key),
        "frequency": rec["frequency"],
        "max_activation": rec["max_activation"],
        "examples_quantiles": [
            {
                "quantile_name": q["quantile_name"],
                "examples": [
                    {"tokens": ex["tokens"], "tokens_acts_list": ex["tokens_acts_list"]}
                    for ex in q["examples"]
                ],
            }
            for q in rec["examples_quantiles"]
        ],  # fmt: skip
        "top_logits": top,
        "bottom_logits": bottom,
        "description": expl.description if expl else "",
    }


def detail_files(adapter, transcoder, store, explanations: dict) -> dict[str, dict]:
    """``features/<l>_<f>.json`` name -> content for every feature of ``store`` (computed
    first, written by :func:`write_details`, so a failing stage writes none of them)."""
    return {
        f"{key[0]}_{key[1]}.json": detail_json(adapter, transcoder, store, key,
                                               explanations.get(key))
        for key in store.features
    }  # fmt: skip


def write_details(run_dir: Path, files: dict[str, dict]) -> Path:
    """Write :func:`detail_files`' output under ``run_dir/features`` (each file atomically)."""
    out = run_dir / "features"
    out.mkdir(exist_ok=True)
    for name, content in files.items():
        atomic_write_json(out / name, content, indent=None)
    return out


def description_entry(store: ActivationStore, key: FeatureKey, expl: Explanation,
                      n_html: int = 3) -> dict:  # fmt: skip
    """One ``descriptions.json`` value (the report reads ``description`` and ``examples_html``)."""
    rec = store.record(key)
    return {
        "layer": key[0],
        "feature": key[1],
        "description": expl.description,
        "explainer": expl.explainer,
        "failure": expl.failure,
        "frequency": rec["frequency"],
        "examples_html": [example_html(ex) for ex in store.top_examples(key, n_html)],
        "details": expl.details,
    }
