"""Turning a transcoder reference (local directory or Hugging Face repo id) into a local folder,
and reading its files with one-sentence errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from cltrace.errors import CltraceError

#: Files a transcoder repo may hold that cltrace reads; anything else in the repo is skipped.
ALLOW_PATTERNS = ["*.yaml", "*.yml", "*.json", "*.safetensors", "**/*.json", "**/*.safetensors"]


def _looks_like_hub_id(ref: str) -> bool:
    if ref.startswith((".", "/", "~")) or os.sep in ref.replace("/", "", 1):
        return False
    parts = ref.split("/")
    return len(parts) == 2 and all(parts)


def resolve_source(ref: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory for ``ref``: the directory itself, or a hub snapshot of the repo id."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CltraceError(f"Transcoder path {str(ref)!r} is a file; pass its directory.")
    if not _looks_like_hub_id(str(ref)):
        raise CltraceError(
            f"Transcoder directory {str(ref)!r} does not exist; pass an existing directory or a "
            "Hugging Face repo id such as 'mntss/clt-gemma-2-2b-426k'."
        )
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(str(ref), revision=revision, allow_patterns=ALLOW_PATTERNS)
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        raise CltraceError(
            f"Could not download transcoder repo {str(ref)!r} from the Hugging Face hub "
            f"({type(exc).__name__}); check the repo id and your network, or pass a local "
            "directory."
        ) from exc
    return Path(local)


def download_hf_uri(uri: str) -> Path:
    """Local path of an ``hf://owner/repo/path/to/file?revision=...`` URI (PLT config lists)."""
    body = uri[len("hf://") :]
    body, _, query = body.partition("?")
    revision = None
    for item in query.split("&"):
        if item.startswith("revision="):
            revision = item.split("=", 1)[1] or None
    parts = body.split("/")
    if len(parts) < 3:
        raise CltraceError(f"Malformed transcoder URI {uri!r}; expected hf://owner/repo/file.")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as exc:
        raise CltraceError(
            f"Could not download {uri!r} from the Hugging Face hub ({type(exc).__name__}); "
            "check the URI and your network."
        ) from exc


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CltraceError(f"Transcoder file {str(path)!r} is missing; re-download or re-save it.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CltraceError(
            f"Transcoder file {str(path)!r} is not a readable safetensors file ({exc}); "
            "re-download or re-save it."
        ) from exc


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise CltraceError(
            f"{str(path)!r} is missing; a transcoder directory needs a config.yaml "
            "(circuit-tracer layout) or per-layer cfg.json files (sparsify layout)."
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CltraceError(
            f"{str(path)!r} is not valid YAML ({problem}{where}); fix or rewrite it."
        ) from exc
    except UnicodeDecodeError:
        raise CltraceError(f"{str(path)!r} is not UTF-8 text; fix or rewrite it.") from None
    if not isinstance(data, dict):
        raise CltraceError(f"{str(path)!r} must hold a YAML mapping of config keys.")
    return data


def require(tensors: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in tensors:
        raise CltraceError(
            f"Transcoder file {str(path)!r} has no tensor {key!r} (it has {sorted(tensors)}); "
            "the file does not follow the circuit-tracer layout."
        )
    return tensors[key]
