"""Reading and writing transcoders in the circuit-tracer layout (docs/formats.md, 1).

CLT: ``W_enc_{i}.safetensors`` (``W_enc_{i}`` [F, D], ``b_enc_{i}`` [F], ``b_dec_{i}`` [D],
optional ``threshold_{i}`` [F] and ``W_skip_{i}`` [D, D]) and ``W_dec_{i}.safetensors``
(``W_dec_{i}`` [F, L - i, D]). PLT: ``layer_{i}.safetensors`` (``W_enc`` [F, D], ``W_dec`` [F, D],
``b_enc``, ``b_dec``, optional ``activation_function.threshold`` and ``W_skip``). Both carry a
``config.yaml``; TopK sets add ``activation: topk`` and ``k``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from cltrace.errors import CltraceError
from cltrace.transcoders.clt import CrossLayerTranscoder, TranscoderConfig
from cltrace.transcoders.hooknames import hook_site
from cltrace.transcoders.lazy import DecoderEntry, LazyDecoders
from cltrace.transcoders.source import download_hf_uri, read_safetensors, read_yaml, require

CLT_KIND = "cross_layer_transcoder"
PLT_KIND = "transcoder_set"


# ----- writing ------------------------------------------------------------------------------
def _config_yaml(tc: CrossLayerTranscoder) -> dict:
    cfg = tc.cfg
    out = {
        "model_kind": CLT_KIND if cfg.cross_layer else PLT_KIND,
        "model_name": cfg.model_name,
        "feature_input_hook": cfg.feature_input_hook,
        "feature_output_hook": cfg.feature_output_hook,
    }
    if cfg.activation == "topk":
        out.update(activation="topk", k=int(cfg.k))
    return out


def save_transcoder(
    tc: CrossLayerTranscoder, directory: str | Path, dtype: torch.dtype | None = None
) -> Path:
    """Write ``tc`` in the circuit-tracer layout; ``dtype`` (e.g. fp16) shrinks the files."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    def t(x: Tensor) -> Tensor:
        x = x.detach().cpu().contiguous()
        return x.to(dtype) if dtype is not None else x

    for i in range(tc.n_layers):
        w_dec = tc.lazy.full(i) if tc.lazy is not None else tc.W_dec[i]
        if tc.cfg.cross_layer:
            enc = {
                f"W_enc_{i}": t(tc.W_enc[i]),
                f"b_enc_{i}": t(tc.b_enc[i]),
                f"b_dec_{i}": t(tc.b_dec[i]),
            }
            if tc.threshold is not None:
                enc[f"threshold_{i}"] = t(tc.threshold[i])
            if tc.W_skip is not None:
                enc[f"W_skip_{i}"] = t(tc.W_skip[i])
            save_file(enc, str(out / f"W_enc_{i}.safetensors"))
            save_file({f"W_dec_{i}": t(w_dec)}, str(out / f"W_dec_{i}.safetensors"))
        else:
            d = {
                "W_enc": t(tc.W_enc[i]),
                "W_dec": t(w_dec[:, 0, :]),
                "b_enc": t(tc.b_enc[i]),
                "b_dec": t(tc.b_dec[i]),
            }
            if tc.threshold is not None:
                d["activation_function.threshold"] = t(tc.threshold[i])
            if tc.W_skip is not None:
                d["W_skip"] = t(tc.W_skip[i])
            save_file(d, str(out / f"layer_{i}.safetensors"))
    (out / "config.yaml").write_text(yaml.safe_dump(_config_yaml(tc), sort_keys=False))
    # safetensors writes owner-only files; a shipped or shared transcoder must be world-readable.
    for p in out.glob("*.safetensors"):
        p.chmod(0o644)
    return out


# ----- reading ------------------------------------------------------------------------------
def _layer_indices(directory: Path, pattern: str, what: str) -> list[int]:
    rx = re.compile(pattern)
    idx = sorted(int(m.group(1)) for p in directory.iterdir() if (m := rx.fullmatch(p.name)))
    if not idx:
        raise CltraceError(
            f"Transcoder directory {str(directory)!r} has no {what} files; it does not follow the "
            "circuit-tracer layout (see docs/formats.md)."
        )
    missing = sorted(set(range(idx[-1] + 1)) - set(idx))
    if missing:
        raise CltraceError(
            f"Transcoder directory {str(directory)!r} lacks {what} files for layers {missing}; "
            "every layer from 0 up needs one, so re-download or re-save it."
        )
    return idx


def _check_shape(x: Tensor | tuple, expected: tuple, name: str, path: Path) -> None:
    shape = tuple(x.shape) if isinstance(x, Tensor) else tuple(x)
    if shape != tuple(expected):
        raise CltraceError(
            f"{name} in {str(path)!r} has shape {list(shape)} but the other files imply "
            f"{list(expected)}; the transcoder files do not belong together."
        )


def _decoder_shape(entry: DecoderEntry) -> tuple[int, ...]:
    try:
        with safe_open(str(entry.path), framework="pt", device="cpu") as f:
            if entry.key not in f.keys():
                raise CltraceError(
                    f"Transcoder file {str(entry.path)!r} has no tensor {entry.key!r}; the file "
                    "does not follow the circuit-tracer layout."
                )
            shape = tuple(f.get_slice(entry.key).get_shape())
    except CltraceError:
        raise
    except Exception as exc:
        if not entry.path.is_file():
            raise CltraceError(
                f"Transcoder file {str(entry.path)!r} is missing; re-download or re-save it."
            ) from exc
        raise CltraceError(
            f"Transcoder file {str(entry.path)!r} is not a readable safetensors file ({exc}); "
            "re-download or re-save it."
        ) from exc
    return shape[::-1] if entry.transposed else shape


def _activation(cfg: dict, thresholds: list[Tensor | None], directory: Path) -> tuple:
    has = [t is not None for t in thresholds]
    if any(has) and not all(has):
        raise CltraceError(
            f"Only some layers in {str(directory)!r} have thresholds (layers "
            f"{[i for i, h in enumerate(has) if h]}); all layers need one for JumpReLU."
        )
    if str(cfg.get("activation", "")).lower() == "topk":
        return "topk", int(cfg.get("k") or 0) or None
    return ("jumprelu" if all(has) else "relu"), None


def _assemble(
    cfg: TranscoderConfig, tensors: dict[str, list[Tensor | None]], lazy, dtype: torch.dtype, device
) -> CrossLayerTranscoder:
    """Build the module on the meta device and assign the loaded tensors (no double copies)."""
    tc = CrossLayerTranscoder(cfg, lazy=lazy, dtype=dtype, device="meta")
    for name, values in tensors.items():
        plist = getattr(tc, name)
        if plist is None:
            continue
        for i, v in enumerate(values):
            plist[i] = nn.Parameter(v.to(device=device or "cpu", dtype=dtype))
    return tc


def _common_config(cfg: dict, directory: Path) -> dict:
    for key in ("feature_input_hook", "feature_output_hook"):
        if key in cfg:
            hook_site(str(cfg[key]))
    return {
        "model_name": str(cfg.get("model_name") or ""),
        "feature_input_hook": str(cfg.get("feature_input_hook") or "mlp.hook_in"),
        "feature_output_hook": str(cfg.get("feature_output_hook") or "mlp.hook_out"),
    }


def load_clt_dir(directory: Path, cfg: dict, *, lazy_decoder: bool, dtype, device):
    idx = _layer_indices(directory, r"W_enc_(\d+)\.safetensors", "W_enc_{i}.safetensors")
    L = len(idx)
    encs = [read_safetensors(directory / f"W_enc_{i}.safetensors") for i in idx]
    p0 = directory / "W_enc_0.safetensors"
    F, D = require(encs[0], "W_enc_0", p0).shape
    t: dict[str, list] = {k: [] for k in ("W_enc", "b_enc", "b_dec", "threshold", "W_skip")}
    for i, enc in enumerate(encs):
        p = directory / f"W_enc_{i}.safetensors"
        for key, shape in ((f"W_enc_{i}", (F, D)), (f"b_enc_{i}", (F,)), (f"b_dec_{i}", (D,))):
            _check_shape(require(enc, key, p), shape, key, p)
        t["W_enc"].append(enc[f"W_enc_{i}"])
        t["b_enc"].append(enc[f"b_enc_{i}"])
        t["b_dec"].append(enc[f"b_dec_{i}"])
        t["threshold"].append(enc.get(f"threshold_{i}"))
        if t["threshold"][-1] is not None:
            _check_shape(t["threshold"][-1], (F,), f"threshold_{i}", p)
        skip = enc.get(f"W_skip_{i}", enc.get("W_skip"))
        skip_file = directory / f"W_skip_{i}.safetensors"
        if skip is None and skip_file.is_file():
            skip = require(read_safetensors(skip_file), f"W_skip_{i}", skip_file)
        if skip is not None:
            _check_shape(skip, (D, D), f"W_skip_{i}", p)
        t["W_skip"].append(skip)
    entries = [
        DecoderEntry(directory / f"W_dec_{i}.safetensors", f"W_dec_{i}", False) for i in range(L)
    ]
    for i, e in enumerate(entries):
        if lazy_decoder:
            _check_shape(_decoder_shape(e), (F, L - i, D), e.key, e.path)
        else:
            w = require(read_safetensors(e.path), e.key, e.path)
            _check_shape(w, (F, L - i, D), e.key, e.path)
            t.setdefault("W_dec", []).append(w)
    activation, k = _activation(cfg, t["threshold"], directory)
    skips = [s is not None for s in t["W_skip"]]
    if any(skips) and not all(skips):
        raise CltraceError(f"Only some layers in {str(directory)!r} have W_skip; all or none.")
    tcfg = TranscoderConfig(
        L,
        D,
        F,
        cross_layer=True,
        activation=activation,
        k=k,
        skip=all(skips),
        **_common_config(cfg, directory),
    )
    lazy = LazyDecoders(entries, dtype) if lazy_decoder else None
    return _assemble(tcfg, t, lazy, dtype, device)


def _plt_files(directory: Path, cfg: dict) -> list[Path]:
    listed = cfg.get("transcoders")
    if not listed:
        idx = _layer_indices(directory, r"layer_(\d+)\.safetensors", "layer_{i}.safetensors")
        return [directory / f"layer_{i}.safetensors" for i in idx]
    by_layer: dict[int, str] = {}
    for n, item in enumerate(listed):
        layer, ref = (int(item["layer"]), item["filepath"]) if isinstance(item, dict) else (n, item)
        by_layer[layer] = str(ref)
    missing = sorted(set(range(max(by_layer) + 1)) - set(by_layer))
    if missing:
        raise CltraceError(
            f"config.yaml in {str(directory)!r} lists no transcoder for layers "
            f"{missing}; list one file per layer."
        )
    files = []
    for i in range(len(by_layer)):
        ref = by_layer[i]
        if ref.startswith("hf://"):
            files.append(download_hf_uri(ref))
        else:
            p = Path(ref).expanduser()
            files.append(p if p.is_absolute() else directory / p)
    return files


def load_plt_dir(directory: Path, cfg: dict, *, lazy_decoder: bool, dtype, device):
    files = _plt_files(directory, cfg)
    t: dict[str, list] = {k: [] for k in ("W_enc", "b_enc", "b_dec", "threshold", "W_skip")}
    entries, decs, dims = [], [], None
    for p in files:
        d = read_safetensors(p)
        b_enc, b_dec = require(d, "b_enc", p), require(d, "b_dec", p)
        F, D = b_enc.shape[0], b_dec.shape[0]
        dims = dims or (F, D)
        _check_shape((F, D), dims, "(b_enc, b_dec) sizes", p)
        w_enc, w_dec = require(d, "W_enc", p), require(d, "W_dec", p)
        # Some released ReLU sets store W_enc as [D, F] and/or W_dec as [D, F]; the bias sizes
        # say which way round a matrix is (ambiguous only when F == D, then the spec wins).
        if F != D and tuple(w_enc.shape) == (D, F):
            w_enc = w_enc.T
        transposed = F != D and tuple(w_dec.shape) == (D, F)
        _check_shape(w_enc, (F, D), "W_enc", p)
        _check_shape(w_dec.T if transposed else w_dec, (F, D), "W_dec", p)
        t["W_enc"].append(w_enc.contiguous())
        t["b_enc"].append(b_enc)
        t["b_dec"].append(b_dec)
        t["threshold"].append(d.get("activation_function.threshold", d.get("threshold")))
        t["W_skip"].append(d.get("W_skip"))
        if t["W_skip"][-1] is not None:
            _check_shape(t["W_skip"][-1], (D, D), "W_skip", p)
        entries.append(DecoderEntry(p, "W_dec", True, transposed))
        decs.append((w_dec.T if transposed else w_dec).unsqueeze(1).contiguous())
        del d
    if not lazy_decoder:
        t["W_dec"] = decs
    activation, k = _activation(cfg, t["threshold"], directory)
    skips = [s is not None for s in t["W_skip"]]
    if any(skips) and not all(skips):
        raise CltraceError(f"Only some layers in {str(directory)!r} have W_skip; all or none.")
    tcfg = TranscoderConfig(
        len(files),
        dims[1],
        dims[0],
        cross_layer=False,
        activation=activation,
        k=k,
        skip=all(skips),
        **_common_config(cfg, directory),
    )
    lazy = LazyDecoders(entries, dtype) if lazy_decoder else None
    return _assemble(tcfg, t, lazy, dtype, device)


def load_circuit_tracer_dir(
    directory: Path, *, lazy_decoder: bool = False, dtype: torch.dtype = torch.float32, device=None
):
    cfg = read_yaml(directory / "config.yaml")
    kind = cfg.get("model_kind")
    if kind == CLT_KIND:
        return load_clt_dir(directory, cfg, lazy_decoder=lazy_decoder, dtype=dtype, device=device)
    if kind == PLT_KIND:
        return load_plt_dir(directory, cfg, lazy_decoder=lazy_decoder, dtype=dtype, device=device)
    raise CltraceError(
        f"config.yaml in {str(directory)!r} has model_kind {kind!r}; expected "
        f"{CLT_KIND!r} or {PLT_KIND!r}."
    )
