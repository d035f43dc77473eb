"""Class labels and names as they arrive (CSV cells, folder names, renames): one rule for all.

A label ends up in file names, tables, charts, model cards and other people's screens, so it is
checked on the way in: no control characters or line breaks (they break logs, CSV and Markdown,
and bidi overrides disguise text), not empty, not over-long. Escaping on the way out is the
display's job; this only keeps what is stored plain.
"""
from __future__ import annotations

import unicodedata

MAX_LABEL = 100
# Format characters that reorder or hide text (Trojan-source style); other Cf characters, such as
# the zero-width joiner inside emoji, are harmless and stay allowed.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class LabelError(ValueError):
    """A label or class name that breaks a rule; the message names it, the rule and the fix."""


def label_problem(label: object) -> str | None:
    """Why ``label`` cannot be a class label (a phrase such as 'is empty'), or None when it can."""
    if not isinstance(label, str):
        return f"is a {type(label).__name__}, not text"
    if not label.strip():
        return "is empty or only spaces"
    for ch in label:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI:
            what = "a line break" if ch in "\r\n\u2028\u2029\x85" else "a control character"
            return f"contains {what} (U+{ord(ch):04X})"
    if len(label.strip()) > MAX_LABEL:
        return f"is {len(label.strip())} characters long (at most {MAX_LABEL})"
    return None


def check_label(label: object, where: str = "label") -> str:
    """``label`` stripped of surrounding spaces, or LabelError saying where it came from and which rule it broke."""
    problem = label_problem(label)
    if problem is not None:
        shown = repr(label if not isinstance(label, str) or len(label) <= 60 else label[:60] + "…")
        raise LabelError(f"{where} {shown} {problem}; labels must be 1-{MAX_LABEL} characters of "
                         f"plain text on one line — fix it and try again")
    return label.strip()
