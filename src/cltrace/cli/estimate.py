"""``cltrace estimate``: the expected peak memory of an attribution run, before loading weights."""

from __future__ import annotations

import json

import typer

from cltrace.cli._apps import app


@app.command("estimate")
def estimate(
    tokens: int = typer.Option(..., "--tokens", min=1, help="Prompt length in tokens (with BOS)."),
    model: str = typer.Option(None, "--model", help="HF id or local model dir (default: bundled)."),
    transcoder: str = typer.Option(
        None, "--transcoder", help="Local transcoder directory (default: bundled CLT)."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    l0: float = typer.Option(
        None,
        "--l0",
        min=0.0,
        help="Active features per token and layer (default: recorded by the transcoder, else 64).",
    ),
    max_feature_nodes: int = typer.Option(None, "--max-feature-nodes", min=1),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    lazy_decoders: bool = typer.Option(False, "--lazy-decoders"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Expected peak memory of `cltrace attribute` with these options (nothing is loaded)."""
    from cltrace.estimate import estimate_attribution, model_parameters, transcoder_shape
    from cltrace.precision import parse_dtype

    parse_dtype(dtype)  # a usage error before anything is read
    shape = transcoder_shape(transcoder)
    n_params, n_layers, d_model = model_parameters(model)
    if (n_layers, d_model) != (shape.n_layers, shape.d_model):
        from cltrace.errors import UsageError

        raise UsageError(
            f"the transcoder has {shape.n_layers} layers of width {shape.d_model} but the model "
            f"{n_layers} of width {d_model}; pass the transcoder trained on this model."
        )
    est = estimate_attribution(
        n_params, shape, tokens, dtype=dtype, l0=l0, max_feature_nodes=max_feature_nodes,
        batch_size=batch_size, lazy_decoders=lazy_decoders,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(est.to_dict()))
        return
    typer.echo(f"expected peak memory: {est.total / 2**30:.2f} GiB")
    for name, size in sorted(est.parts.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {name:<16} {size / 2**20:>10.1f} MiB")
    for line in est.assumptions:
        typer.echo(f"assumes {line}")
