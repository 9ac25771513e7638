"""Prompt pairs and their file format (docs/PAIR_FILES.md).

A file is either one JSON object ``{"prompts": [pair, ...], "seq_labels": ..., "word_idxs": ...}``
or JSONL with one pair per line. A pair is ``{"clean", "corrupt", "answers", "wrong_answers"}``.
Reading checks the shape; :func:`check_pairs` checks the pairs against a tokenizer (no empty
prompts, no words the tokenizer does not know unless allowed, prompts that fit the model's
context, equal clean and corrupt lengths, single known-token answers). Every problem is a
:class:`CltraceError` naming the file, the pair index and the fix.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cltrace.errors import CltraceError
from cltrace.files import atomic_write_text, check_writable_dir

REQUIRED_FIELDS = ("clean", "corrupt", "answers", "wrong_answers")
FORMAT_DOC = "docs/PAIR_FILES.md"
"""Where the pair-file format is described (named in error messages)."""
FORMAT_HINT = f"write pairs as JSON or JSONL (see {FORMAT_DOC})"


class Encoder(Protocol):
    """What pair checking needs from a model adapter (``cltrace.models.ModelAdapter`` fits)."""

    tokenizer: Any

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]: ...

    def single_token_id(self, text: str, what: str = "answer") -> int: ...

    def check_prompt(self, text: str, what: str = ..., allow_unk: bool = False) -> list[str]: ...


@dataclass(frozen=True)
class PromptPair:
    """One clean/corrupt prompt pair with the tokens to compare at the last position."""

    clean: str
    """The prompt on which the model shows the behaviour."""
    corrupt: str
    """Same token length as ``clean``, with the information the behaviour needs destroyed."""
    answers: tuple[str, ...]
    """Correct next tokens, each one token (e.g. ``(" Mary",)``)."""
    wrong_answers: tuple[str, ...]
    """Competing next tokens the logit difference is measured against."""

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "corrupt": self.corrupt,
            "answers": list(self.answers),
            "wrong_answers": list(self.wrong_answers),
        }


@dataclass
class PairSet:
    """The pairs of one file plus the optional top-level keys other tools write."""

    pairs: list[PromptPair]
    """The prompt pairs, in file order."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other top-level keys (``seq_labels``, ``word_idxs``), kept so a round trip is lossless."""


def _pair_from_json(obj: Any, index: int, source: str) -> PromptPair:
    where = f"{source}: pair {index}"
    if not isinstance(obj, dict):
        raise CltraceError(
            f"{where} is not a JSON object; write each pair as "
            '{"clean": ..., "corrupt": ..., "answers": [...], "wrong_answers": [...]}.'
        )
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise CltraceError(
            f"{where} is missing the field(s) {', '.join(missing)}; "
            f"give every pair all of {', '.join(REQUIRED_FIELDS)}."
        )
    for key in ("clean", "corrupt"):
        if not isinstance(obj[key], str):
            raise CltraceError(f"{where} has a non-string {key!r}; write the prompt as a string.")
    lists = {}
    for key in ("answers", "wrong_answers"):
        value = obj[key]
        if isinstance(value, str):  # a lone string is a common shorthand for a one-item list
            value = [value]
        if not value or not all(isinstance(v, str) for v in value):
            raise CltraceError(
                f"{where} has an empty or non-string {key!r}; give a list of token strings "
                'such as [" Mary"].'
            )
        lists[key] = tuple(value)
    return PromptPair(obj["clean"], obj["corrupt"], lists["answers"], lists["wrong_answers"])


def parse_pairs(text: str, source: str = "<string>") -> PairSet:
    """Parse JSON (``{"prompts": [...]}``) or JSONL text into a :class:`PairSet`."""
    stripped = text.strip()
    if not stripped:
        raise CltraceError(f"{source} is empty; {FORMAT_HINT}.")
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        return PairSet(_parse_jsonl(stripped, source))  # several lines, or not JSON at all
    if isinstance(whole, list):
        return PairSet([_pair_from_json(p, i, source) for i, p in enumerate(whole)])
    if not isinstance(whole, dict):
        raise CltraceError(
            f"{source} holds a JSON {_json_kind(whole)}, not prompt pairs; {FORMAT_HINT}."
        )
    if "prompts" in whole:
        if not isinstance(whole["prompts"], list):
            raise CltraceError(f'{source}: "prompts" is not a list; make it a list of pairs.')
        pairs = [_pair_from_json(p, i, source) for i, p in enumerate(whole["prompts"])]
        extra = {k: v for k, v in whole.items() if k != "prompts"}
        return PairSet(pairs, extra)
    if any(k in whole for k in REQUIRED_FIELDS):  # a file of one pair (one JSONL line)
        return PairSet([_pair_from_json(whole, 0, source)])
    raise CltraceError(
        f'{source} is a JSON object without a "prompts" list; put the pairs under "prompts" '
        f"or write one pair per line (see {FORMAT_DOC})."
    )


def _parse_jsonl(text: str, source: str) -> list[PromptPair]:
    pairs = []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CltraceError(
                f"{source}: pair {i} (line {i + 1}) is not valid JSON ({exc.msg}); write one "
                'JSON object per line or one {"prompts": [...]} object for the whole file.'
            ) from None
        pairs.append(_pair_from_json(obj, i, source))
    return pairs


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def read_pairs(path: str | Path) -> PairSet:
    """Read a pair file (JSON or JSONL, detected from the content, not the suffix)."""
    path = Path(path)
    if path.is_dir():
        raise CltraceError(
            f"{path} is a directory, not a pair file; pass the path of a JSON or JSONL file."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # editors on Windows may add a BOM
    except UnicodeDecodeError:
        raise CltraceError(f"{path} is not UTF-8 text; {FORMAT_HINT}.") from None
    except OSError as exc:
        raise CltraceError(
            f"cannot read the pair file {path} ({exc.strerror}); check the path."
        ) from None
    return parse_pairs(text, str(path))


def check_pairs_out(path: str | Path) -> Path:
    """Fail with one sentence, before any work, when ``path`` cannot take a pair file."""
    path = Path(path)
    if path.is_dir():
        raise CltraceError(
            f"{path} is a directory; pass a file name for the pairs, such as {path / 'pairs.json'}."
        )
    check_writable_dir(path.parent, "folder for the pair file")
    return path


def write_pairs(path: str | Path, pairs: PairSet | list[PromptPair]) -> Path:
    """Write pairs; a ``.jsonl`` suffix gives one pair per line, anything else one JSON object.

    The file is replaced in one step: an earlier file survives a failed write intact."""
    path = check_pairs_out(path)
    pair_set = pairs if isinstance(pairs, PairSet) else PairSet(list(pairs))
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(p.to_json()) + "\n" for p in pair_set.pairs)
    else:
        obj = {"prompts": [p.to_json() for p in pair_set.pairs], **pair_set.extra}
        text = json.dumps(obj, indent=1) + "\n"
    return atomic_write_text(path, text)


def check_pair(
    pair: PromptPair, encoder: Encoder, where: str = "the pair", allow_unk: bool = False
) -> list[str]:
    """Raise a :class:`CltraceError` (its message starts with ``where``) when the tokenizer
    cannot use ``pair``; returns the unknown words it let through (only with ``allow_unk``)."""
    unknown = []
    for key in ("clean", "corrupt"):
        text = getattr(pair, key)
        unknown += encoder.check_prompt(text, f"{where}'s {key} prompt", allow_unk=allow_unk)
    n_clean = len(encoder.encode(pair.clean, prepend_bos=True))
    n_corrupt = len(encoder.encode(pair.corrupt, prepend_bos=True))
    if n_clean != n_corrupt:
        raise CltraceError(
            f"{where} has clean and corrupt prompts of different token lengths ({n_clean} vs "
            f"{n_corrupt}); edit the corrupt prompt so both tokenize to the same length."
        )
    for key in ("answers", "wrong_answers"):
        for answer in getattr(pair, key):
            encoder.single_token_id(answer, what=f"{where}'s {key[:-1].replace('_', ' ')}")
    return unknown


def pair_problem(pair: PromptPair, encoder: Encoder) -> str | None:
    """Why ``pair`` is unusable with this tokenizer (one sentence), or None when it is fine."""
    try:
        check_pair(pair, encoder)
    except CltraceError as exc:
        return str(exc)
    return None


def check_pairs(
    pairs: list[PromptPair], encoder: Encoder, source: str = "<pairs>", allow_unk: bool = False
) -> None:
    """Raise a :class:`CltraceError` for the first pair the tokenizer cannot use.

    With ``allow_unk`` words the tokenizer does not know are read as its unk token, and one
    warning lists them for the whole file."""
    if not pairs:
        raise CltraceError(f"{source} holds no prompt pairs; add at least one pair.")
    unknown: dict[str, None] = {}
    n_with_unknown = 0
    for i, pair in enumerate(pairs):
        words = check_pair(pair, encoder, f"{source}: pair {i}", allow_unk)
        n_with_unknown += bool(words)
        unknown.update(dict.fromkeys(words))
    if unknown:
        from cltrace.models.adapter import describe_words

        unk = getattr(encoder.tokenizer, "unk_token", "<unk>")
        warnings.warn(
            f"{n_with_unknown} pair(s) of {source} hold {describe_words(list(unknown))} that "
            f"the tokenizer does not know; unknown words are read as {unk}.",
            stacklevel=2,
        )


def require_count(task: str, pairs: list[PromptPair], n: int) -> None:
    """Raise when a generator could not make ``n`` usable pairs for this tokenizer."""
    if len(pairs) < n:
        raise CltraceError(
            f"only {len(pairs)} of {n} {task} pairs fit this model's tokenizer (its words split "
            "into several tokens); ask for fewer pairs or use a tokenizer that keeps common "
            "words whole."
        )
