"""Deleting runs: only whole runs of this workspace, never one that is training; the Runs page asks first."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.storage import runs
from core.config import RunConfig

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")


def _run() -> runs.Run:
    run = runs.create(RunConfig(data="sample:shapes"))
    run.append({"type": "start", "time": 0.0})
    return run


def test_delete_removes_the_run_and_refuses_active_or_foreign_ids(tmp_path):
    keep, gone = _run(), _run()
    with pytest.raises(ValueError, match="still training; stop it first"):
        runs.delete(gone.id, active_ids={gone.id})
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    for bad in (f"../{outside.name}", str(outside), "", "no-such-run"):
        with pytest.raises(ValueError, match="not a run of this workspace"):
            runs.delete(bad)
    assert outside.exists() and gone.path.exists()
    runs.delete(gone.id)
    assert not gone.path.exists() and keep.path.exists()
    assert gone.id not in {r.id for r in runs.list_runs()}


def test_runs_page_deletes_only_after_confirmation(tmp_path, monkeypatch):
    # a workspace of its own: runs appearing from other tests' jobs would change the list under the widget
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path))
    run = _run()
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/7_runs.py").run()
    at.selectbox(key="runs_pick").set_value(run.id).run()
    assert at.button(key="runs_delete").disabled  # nothing happens without the confirmation
    at.checkbox(key="runs_delete_confirm").check().run()
    assert at.checkbox(key="runs_delete_confirm").value, "confirmation did not stick"
    assert at.selectbox(key="runs_pick").value == run.id, at.selectbox(key="runs_pick").value
    at.button(key="runs_delete").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not run.path.exists()
    listed = list(at.dataframe[0].value["id"]) if at.dataframe else []
    assert run.id not in listed
