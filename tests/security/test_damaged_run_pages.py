"""One damaged run never breaks a page: Runs, Evaluate and Export show it as damaged, with the reason, and
keep offering the intact runs (the reading of damaged files is core/storage/runs.py's, tested beside this)."""
from __future__ import annotations

import pytest

from accounts import key, make_run, tab, texts

DORA = key("dora")


@pytest.fixture(scope="module")
def dora_runs(shapes_dir):
    """Dora's intact run, and three runs each damaged in one file."""
    healthy = make_run(DORA, shapes_dir)
    torn_config = make_run(DORA, shapes_dir)
    text = (torn_config.path / "config.json").read_text()
    (torn_config.path / "config.json").write_text(text[: len(text) // 2])
    bad_events = make_run(DORA, shapes_dir)
    with open(bad_events.events_file, "ab") as f:
        f.write(b"\xff\xfe not utf-8\n")
    torn_weights = make_run(DORA, shapes_dir)
    torn_weights.best_weights.write_bytes(torn_weights.best_weights.read_bytes()[:6])
    return healthy, {"config.json": torn_config, "events.jsonl": bad_events, "best.safetensors": torn_weights}


def test_the_runs_page_lists_damaged_runs_with_their_reason_and_compares_the_intact_one(dora_runs):
    healthy, damaged = dora_runs
    at = tab("dora", "7_runs")
    table = at.dataframe[0].value
    problems = dict(zip(table["id"], table["problem"]))
    assert not isinstance(problems[healthy.id], str)  # None (NaN in the table's frame): healthy
    for filename, run in damaged.items():
        assert filename in problems[run.id]
    assert "have damaged files" in texts(at)
    compare = at.multiselect(key="runs_compare")
    assert compare.value == [healthy.id] and len(compare.options) == 1  # only intact runs are compared


@pytest.mark.parametrize("page, widget", [("5_evaluate", "eval_run"), ("6_export", "export_run")])
def test_evaluate_and_export_leave_out_damaged_runs_and_say_why(dora_runs, page, widget):
    healthy, damaged = dora_runs
    at = tab("dora", page, job=damaged["best.safetensors"].id)
    assert not at.exception
    choice = at.selectbox(key=widget)
    assert choice.value == healthy.id and len(choice.options) == 1
    shown = texts(at)
    assert f"Run {damaged['best.safetensors'].id[:15]} is damaged" in shown and "truncated" in shown
    for run in damaged.values():
        assert run.id[:15] in shown  # each named, with its reason, in the list of damaged runs
