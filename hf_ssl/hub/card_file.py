"""The README.md hf_ssl renders carries a marker with the hash of its text, so a hand-edited card is told apart.

`hf-ssl push` re-renders only a card that is exactly as hf_ssl wrote it (new results then reach the Hub); a card
a user edited, or wrote, is pushed as it is unless they ask for a re-render.
"""

import hashlib
import pathlib
import re

from huggingface_hub import ModelCard

MARKER = "<!-- rendered by hf_ssl; sha256 of the text above: {} -->"
_MARKER_LINE = re.compile(r"\n<!-- rendered by hf_ssl; sha256 of the text above: ([0-9a-f]{64}) -->\n?\Z")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save_rendered_card(card: ModelCard, path: pathlib.Path) -> None:
    """Write `card` to `path`, followed by the marker that records its hash (`card` then holds it too)."""
    text = str(card).rstrip("\n") + "\n"
    marked = text + MARKER.format(_digest(text)) + "\n"
    card.content = marked
    path.write_text(marked, encoding="utf-8")


def is_rendered_unedited(path: pathlib.Path) -> bool:
    """True when `path` is a card hf_ssl rendered and nobody changed since (its text still matches its marker)."""
    text = path.read_text(encoding="utf-8")
    found = _MARKER_LINE.search(text)
    return found is not None and _digest(text[: found.start() + 1]) == found.group(1)
