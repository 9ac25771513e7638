"""The bundled model's word-level tokenizer.

Text is split into words with their leading space (" Mary"), single punctuation marks (with an
optional leading space), newlines and runs of spaces (indentation), so every task answer is one
token and Python layout survives a round trip. The vocabulary is every piece of the training
corpus, ordered by frequency then text, so it is the same for the same corpus. The result loads
with ``transformers.AutoTokenizer.from_pretrained(dir)`` as a fast tokenizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
"""Ids 0-3, in this order."""

PIECE_PATTERN = r' ?"""| ?[A-Za-z0-9_]+| ?[^\sA-Za-z0-9_]|\n| +'
"""One piece per match: word or triple quote or punctuation mark (leading space kept), newline,
or a run of spaces. Anything unmatched (tabs) becomes its own piece, usually ``<unk>``."""


DIGIT_PAIR_PATTERN = r' ?"""| ?[A-Za-z_]+| ?[0-9]{1,2}| ?[^\sA-Za-z0-9_]|\n| +'
"""As :data:`PIECE_PATTERN`, but digits are cut into pairs, so a year reads as GPT-2 reads it
(`` 1732`` -> `` 17``, ``32``), which the greater-than task needs."""


def _pre_tokenizer(pattern: str = PIECE_PATTERN) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated")


def split_pieces(text: str, pattern: str = PIECE_PATTERN) -> list[str]:
    """The pieces a text is cut into before vocabulary lookup."""
    return [piece for piece, _ in _pre_tokenizer(pattern).pre_tokenize_str(text)]


def build_tokenizer(
    texts: Iterable[str], max_length: int = 96, pattern: str = PIECE_PATTERN
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every piece occurring in ``texts``.

    No BOS is added automatically (as with GPT-2); the model adapter and the training loop add it.
    ``pattern`` is the regular expression that cuts text into pieces.
    """
    counts: Counter[str] = Counter()
    pre = _pre_tokenizer(pattern)
    for text in texts:
        counts.update(piece for piece, _ in pre.pre_tokenize_str(text))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for piece, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Fuse()  # pieces carry their own spaces; join them as they are
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )
