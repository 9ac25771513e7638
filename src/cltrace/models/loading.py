"""Load a causal LM by Hugging Face id or local directory (the bundled model by default)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from cltrace.errors import CltraceError, UsageError
from cltrace.models.adapter import ModelAdapter
from cltrace.models.families import family_for
from cltrace.models.offload import DEVICE_MAP_PRESETS, require_accelerate
from cltrace.paths import BUNDLED_MODEL_DIR


def _looks_like_path(name: str) -> bool:
    # hub ids are "org/name"; anything else with a slash, or that exists, is a path
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return True
    return Path(name).expanduser().exists()


DeviceMap = str | Mapping[str, str | int]


def parse_device_map(value: DeviceMap | None, option: str = "--device-map") -> DeviceMap | None:
    """A device map as a user writes it: a preset (``auto``, ``balanced``, ``balanced_low_0``,
    ``sequential``), a JSON object ``{"module name": device}`` inline or in a ``.json`` file,
    or a dict already. Devices are ``cpu``, ``disk``, ``cuda:N`` or a GPU index."""
    if value is None or isinstance(value, Mapping):
        return value
    text = str(value).strip()
    if text in DEVICE_MAP_PRESETS:
        return text
    if not text.startswith(("{", "[")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise UsageError(
                f"{option} {value!r} is neither a preset ({', '.join(DEVICE_MAP_PRESETS)}) nor a "
                "JSON file; pass one of those, or a JSON object of module name to device."
            )
        text = path.read_text()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{option} is not valid JSON ({exc.msg} at line {exc.lineno}); write an object "
            'such as {"transformer.h.0": "cuda:0", "transformer.h.1": "cpu"}.'
        ) from None
    if not isinstance(parsed, dict) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in parsed.values()
    ):
        raise UsageError(
            f"{option} must map module names to devices (cpu, disk, cuda:N or a GPU index); "
            f"got {type(parsed).__name__} {text[:80]!r}."
        )
    return parsed


def load_model(
    name_or_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    device_map: DeviceMap | None = None,
    offload_folder: str | Path | None = None,
) -> ModelAdapter:
    """Load a causal LM and its tokenizer and wrap them in a :class:`ModelAdapter`.

    ``None`` means the model cltrace ships (trained by ``cltrace train model``). A string is a
    local HF-format directory if such a path exists (or looks like a path), else a hub id.

    ``device_map`` (needs accelerate) spreads a model too large for one device over several,
    as transformers' ``from_pretrained`` does: a preset such as ``"auto"`` or a dict of module
    name to device (``"disk"`` offloads a module to ``offload_folder``). ``device`` is then
    unused; activations are exact (only moved between devices) and cltrace keeps its own
    tensors on the device of the input embedding.
    """
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from cltrace.files import read_json
    from cltrace.models import attention

    spread = device_map_options(device_map, offload_folder)  # a bad map fails before loading
    # cltrace prints its own progress; transformers' per-load bars and notes are noise here
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    source = str(name_or_path) if name_or_path is not None else str(BUNDLED_MODEL_DIR)
    if name_or_path is None and not (BUNDLED_MODEL_DIR / "config.json").exists():
        raise CltraceError(
            f"the bundled model is missing from {BUNDLED_MODEL_DIR}; reinstall cltrace or "
            "train it with `cltrace train model --out` that directory."
        )
    if _looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise CltraceError(
                f"model path {source} does not exist; pass an existing local model directory "
                "or a Hugging Face model id."
            )
        if not (path / "config.json").exists():
            raise CltraceError(
                f"model directory {source} has no config.json; point --model at a directory "
                "written by save_pretrained."
            )
        source = str(path)
        read_json(path / "config.json", "fix it or re-save the model with save_pretrained.")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise CltraceError(
            f"could not load a model config for {source!r} ({type(exc).__name__}); check the "
            "model id or path, and the network or HF_HOME cache for hub ids."
        ) from exc
    family_for(getattr(config, "model_type", "?"), source=source)
    if isinstance(spread.get("device_map"), Mapping):
        with torch.device("meta"):  # the model's layout, no weights
            skeleton = AutoModelForCausalLM.from_config(config)
        _check_map_covers(skeleton, spread["device_map"])  # type: ignore[arg-type]
    attention.register()
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=attention.ATTN_IMPLEMENTATION, **spread
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise CltraceError(
            f"could not load the weights of {source!r} ({_first_line(exc)}); check that the "
            "directory or hub repo holds a complete model (re-download or re-save it)."
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # tokenizer files fail in many library-specific ways
        raise CltraceError(
            f"could not load the tokenizer of {source!r} ({_first_line(exc)}); check its "
            "tokenizer files (re-download or re-save the model with its tokenizer)."
        ) from exc
    if not spread:  # a dispatched model stays where its map put it
        hf_model.to(device)
    name = "cltrace-bundled" if name_or_path is None else str(name_or_path)
    return ModelAdapter(hf_model, tokenizer, name=name)


def _check_map_covers(hf_model, device_map: Mapping[str, object]) -> None:
    """A device map must place every parameter: transformers loads a model whose map leaves
    some out whole, on one device, without a word (a typo in a module name would go unseen)."""

    def placed(name: str) -> bool:
        return any(k == "" or name == k or name.startswith(f"{k}.") for k in device_map)

    missing = [n for n, _ in hf_model.named_parameters() if not placed(n)]
    if missing:
        shown = ", ".join(sorted({n.rsplit(".", 1)[0] for n in missing})[:3])
        raise UsageError(
            f"the device map places no device for {len(missing)} parameters (e.g. in {shown}); "
            "name every module (or a parent of it) in --device-map, or use a preset such as auto."
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def device_map_options(
    device_map: DeviceMap | None, offload_folder: str | Path | None
) -> dict[str, object]:
    """``from_pretrained``'s keyword arguments for a device map (none without one), checked
    before any weight is read."""
    device_map = parse_device_map(device_map)
    if device_map is None:
        return {}
    require_accelerate()
    if isinstance(device_map, Mapping) and "disk" in device_map.values() and not offload_folder:
        raise UsageError(
            "the device map offloads modules to disk but names no folder for them; pass "
            "--offload-folder DIR (offload_folder= in the API)."
        )
    options: dict[str, object] = {"device_map": dict(device_map) if isinstance(device_map, Mapping)
                                  else device_map}  # fmt: skip
    if offload_folder:
        options["offload_folder"] = str(offload_folder)
    return options
