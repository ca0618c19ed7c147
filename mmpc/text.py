"""Product text: HTML cleaning and the designation + description join used by every text model."""

from __future__ import annotations

import html
import re

_TAG = re.compile(r"<[^>]+>")
# Control characters other than whitespace, and invisible formatting (zero-width spaces and joiners,
# bidi marks, embeddings, overrides and isolates, byte-order marks), carry no meaning for a classifier
# and upset tokenizers; a title made only of them is empty.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def clean(value: object) -> str:
    """Unescape HTML entities, drop tags and control characters, collapse whitespace.

    Missing values (None, NaN) become the empty string.
    """
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value)
    if "&" in text:
        # Unescape twice: catalog exports often double-escape ("&amp;eacute;").
        text = html.unescape(html.unescape(text))
    if "<" in text:
        text = _TAG.sub(" ", text)
    text = CONTROL.sub(" ", text)
    return " ".join(text.split())


def join(designation: object, description: object) -> str:
    """The text every text model sees: ``designation + " " + description``, both cleaned."""
    title, body = clean(designation), clean(description)
    return f"{title} {body}" if body else title
