"""Helpers of the AppTest page tests: a fresh tab on a page, and the texts, metrics and charts it shows."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 60


def app(page: str | None = None, **query) -> AppTest:
    """A fresh tab (new session) on ``page`` with the given query parameters, already run once."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def plotly(at: AppTest, key_fragment: str) -> list[dict]:
    """Plotly figures on the page whose element id mentions ``key_fragment`` (the widget key)."""
    out = []
    for el in at.get("plotly_chart"):
        if key_fragment in el.proto.id:
            out.append(json.loads(el.proto.spec))
    return out
