"""Class labels and names as they arrive (CSV cells, folder names, renames): one rule for all.

A label ends up in file names, tables, charts, model cards and other people's screens, so it is
checked on the way in: no control characters or line breaks (they break logs, CSV and Markdown,
and bidi overrides disguise text), not empty, not over-long. Escaping on the way out is the
display's job; this only keeps what is stored plain.
"""
from __future__ import annotations

import unicodedata

from core.data.message import Message, shown
from core.i18n import N_, _

MAX_LABEL = 100
# Format characters that reorder or hide text (Trojan-source style); other Cf characters, such as
# the zero-width joiner inside emoji, are harmless and stay allowed.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class LabelError(ValueError):
    """A label or class name that breaks a rule; the message names it, the rule and the fix."""


def label_problem(label: object) -> str | None:
    """Why ``label`` cannot be a class label (a phrase such as 'is empty': a Message, English as a str), or None
    when it can."""
    if not isinstance(label, str):
        return Message(N_("is a {type}, not text"), type=type(label).__name__)
    if not label.strip():
        return Message(N_("is empty or only spaces"))
    for ch in label:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI:
            if ch in "\r\n\u2028\u2029\x85":
                return Message(N_("contains a line break (U+{code})"), code=f"{ord(ch):04X}")
            return Message(N_("contains a control character (U+{code})"), code=f"{ord(ch):04X}")
    if len(label.strip()) > MAX_LABEL:
        return Message(N_("is {n} characters long (at most {max})"), n=len(label.strip()), max=MAX_LABEL)
    return None


def check_label(label: object, where: str | None = None) -> str:
    """``label`` stripped of surrounding spaces, or LabelError saying where it came from (default: "label") and
    which rule it broke."""
    problem = label_problem(label)
    if problem is not None:
        value = repr(label if not isinstance(label, str) or len(label) <= 60 else label[:60] + "…")
        raise LabelError(_("{where} {label} {problem}; labels must be 1-{max} characters of plain text on one line "
                           "— fix it and try again").format(where=where or _("label"), label=value,
                                                           problem=shown(problem), max=MAX_LABEL))
    return label.strip()
