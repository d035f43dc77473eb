"""The Review labels page, driven like a user: find suspects, decide with the buttons, apply as a new version."""
from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data import edits as de
from core.data import versions

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def noisy_shapes(shapes_dir) -> str:
    """The shapes sample as a workspace dataset with 3 labels flipped and a label that needs escaping."""
    name = de.unique_name("review-shapes")
    dest = de.root() / name
    shutil.copytree(shapes_dir, dest)
    (dest / "circle").rename(dest / "*circle* [x](y)")
    rng = random.Random(1)
    for f in rng.sample(sorted(dest.rglob("*.png")), 3):
        other = next(d for d in sorted(dest.iterdir()) if d != f.parent)
        f.rename(other / f"flip-{f.name}")
    return name


def _page(ds: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ds"] = ds
    at.run()
    at.switch_page("pages/11_review.py").run()
    assert not at.exception, at.exception
    return at


def test_the_review_page_applies_decisions_as_a_new_version_and_keeps_the_original(noisy_shapes):
    before = _snapshot(de.dataset_dir(noisy_shapes))
    at = _page(noisy_shapes)
    at.selectbox(key="review_size").set_value(64)
    at.button(key="review_find").click().run()
    assert not at.exception, at.exception
    table = at.dataframe(key="review_table").value
    assert len(table) >= 1 and list(table["score"]) == sorted(table["score"], reverse=True)
    first, second = table["path"].iloc[0], table["path"].iloc[1] if len(table) > 1 else None
    at.button(key="review_remove").click().run()  # the first suspect goes, the page moves to the next
    if second is not None:
        at.selectbox(key="review_class").set_value(at.selectbox(key="review_class").options[0])
        at.button(key="review_relabel").click().run()
    assert not at.exception, at.exception
    assert "[x](y)" not in "".join(m.value for m in at.markdown)  # labels are escaped, never a link
    at.button(key="review_apply").click().run()
    assert not at.exception, at.exception

    new = f"{noisy_shapes}@v2"
    assert at.session_state["ds"] == new
    assert _snapshot(de.dataset_dir(noisy_shapes)) == before
    log = versions.read_log(new)
    assert {d["path"]: d["action"] for d in log["decisions"]}[first] == "remove"
    assert not (de.dataset_dir(new) / first).exists()
    if second is not None:
        assert {d["path"]: d["action"] for d in log["decisions"]}[second] == "relabel"


def test_the_review_page_asks_for_a_dataset_first():
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/11_review.py").run()
    assert not at.exception, at.exception
    assert any("needs a dataset" in i.value for i in at.info)
