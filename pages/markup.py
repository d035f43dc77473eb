"""Escaping user data on the way out: class labels, dataset and run names are shown as text, never as markup."""
from __future__ import annotations

import re

# What can make Markdown out of plain text: brackets (links, images, colour directives), code and star
# emphasis, math, the start of a bare URL or e-mail (GFM autolinks), and block markers at a line's start.
# Underscores stay: identifiers such as efficientnet_lite0 are full of them, and inside a word they are text.
_MD_INLINE = re.compile(r"([\\`*\[\]~$@])|:(?=//)|(?<=[wW]{3})\.")
_MD_BLOCK = re.compile(r"^(\s*\d*)([#+\-.)])")  # "# x", "- x", "+ x", "1. x", "1) x" open blocks


def md(text: object) -> str:
    """``text`` as literal Markdown: no link, image, HTML, heading, list, code span or math survives.

    For every place that renders Markdown (st.markdown / write / caption / info / warning / error /
    success, widget labels, radio options, image captions). HTML characters become entities, line
    breaks become spaces (a label cannot open a block of its own), and Markdown marks get a backslash.
    Ordinary punctuation (. , : ( ) ') is left alone, so messages read the same in tests and logs.
    """
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = " ".join(s.splitlines())
    s = _MD_INLINE.sub(lambda m: "\\" + m.group(0), s)
    return _MD_BLOCK.sub(lambda m: m.group(1) + "\\" + m.group(2), s)
