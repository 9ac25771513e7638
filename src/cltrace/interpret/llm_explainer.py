"""The top-activation LLM explainer (docs/METHODS.md §6): show the strongest examples with the
active tokens marked and ask for a one-line description."""

from __future__ import annotations

from cltrace.interpret.render import marked_text

N_EXAMPLES = 40
TEMPERATURE = 0.2
MAX_TOKENS = 256
MARKER = "[EXPLANATION]:"

SYSTEM_PROMPT = (
    "You study the internals of a language model. You will see numbered text excerpts in which "
    "one hidden unit of the model responds; the spans where it responds most strongly are "
    "enclosed in << and >>. Work out what the marked spans have in common, taking their "
    "surrounding context into account: a word or token family, a meaning, a grammatical role, "
    "a formatting or code pattern. Keep any reasoning short. Do not talk about the << >> "
    "markers themselves. End your answer with a single line of the form\n"
    f"{MARKER} <a concise description of what the unit responds to>"
)


def build_messages(examples: list[dict], n: int = N_EXAMPLES) -> list[dict[str, str]]:
    """System and user messages for the examples (top bucket, strongest first)."""
    lines = [f"{i + 1}. {marked_text(ex).strip()}" for i, ex in enumerate(examples[:n])]
    user = "Excerpts where the unit is active:\n\n" + "\n".join(lines)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_explanation(reply: str) -> str:
    """The text after the last ``[EXPLANATION]:`` (first line of it), else the whole reply;
    surrounding quotes and whitespace removed. May return ``""``."""
    text = reply
    idx = reply.rfind(MARKER)
    if idx >= 0:
        tail = reply[idx + len(MARKER) :].strip()
        text = tail.splitlines()[0] if tail else ""
    return text.strip().strip('"').strip("'").strip()
