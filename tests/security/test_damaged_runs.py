"""A damaged file in one run is reported by Run.problem() and never makes a reader raise."""
from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import save_file

from core.config import RunConfig
from core.storage import cards, runs


def _run(epochs: int = 2) -> runs.Run:
    run = runs.create(RunConfig(data="sample:shapes", name="ok"))
    run.append({"type": "start", "time": time.time()})
    for e in range(epochs):
        run.append({"type": "epoch", "epoch": e, "val_acc": 0.5 + e / 10, "time": time.time()})
    return run


def _weights(run: runs.Run) -> None:
    card = json.dumps({"classes": ["a", "b"], "backbone": "x"})
    save_file({"w": torch.zeros(64, 64)}, str(run.best_weights), metadata={cards.CARD_KEY: card})


def test_a_healthy_run_has_no_problem_and_its_summary_says_so():
    run = _run()
    _weights(run)
    assert run.problem() is None
    row = run.summary()
    assert row["problem"] is None and row["epochs_done"] == 2 and row["best_val_acc"] == pytest.approx(0.6)


@pytest.mark.parametrize("line, reason", [
    (b"\xff\xfe{not utf8}", "line 3 is not valid UTF-8"),
    (b"[1, 2, 3]", "line 3 is not a JSON object"),
    (b"\"just a string\"", "line 3 is not a JSON object"),
    (b"{\"type\": \"epoch\", \"epo", "line 3 is not valid JSON"),
])
def test_a_bad_event_line_is_skipped_and_named_by_problem(line, reason):
    run = _run(1)
    with open(run.events_file, "ab") as f:
        f.write(line + b"\n")
    run.append({"type": "epoch", "epoch": 1, "val_acc": 0.9, "time": time.time()})
    assert reason in (run.problem() or ""), run.problem()
    assert [e["type"] for e in run.events()] == ["start", "epoch", "epoch"]
    assert run.status() == "interrupted"
    assert run.summary()["best_val_acc"] == pytest.approx(0.9)


def test_a_line_torn_by_a_crash_is_not_damage_and_the_next_append_starts_clean():
    run = _run(1)
    with open(run.events_file, "ab") as f:
        f.write(b'{"type": "epoch", "ep')  # the process died mid-write
    assert run.problem() is None and len(run.events()) == 2
    run.append({"type": "end", "status": "stopped", "time": time.time()})
    assert run.problem() is None
    assert [e["type"] for e in run.events()] == ["start", "epoch", "end"]
    assert run.status() == "stopped"


def test_a_truncated_config_is_reported_and_config_raises_a_clear_value_error():
    run = _run()
    text = (run.path / "config.json").read_text()
    (run.path / "config.json").write_text(text[: len(text) // 2])
    assert run.problem() == "config.json is truncated or not valid JSON"
    with pytest.raises(ValueError, match=f"run {run.id}: config.json cannot be used"):
        run.config()
    row = run.summary()  # the listing still gets a row
    assert row["backbone"] is None and row["epochs_done"] == 2
    assert run.id in {r.id for r in runs.list_runs()}


def test_config_that_is_not_utf8_or_not_an_object_is_damage_too():
    run = _run()
    (run.path / "config.json").write_bytes(b"\xff\xfe\x00")
    assert "config.json" in run.problem()
    with pytest.raises(ValueError, match="not valid UTF-8"):
        run.config()
    (run.path / "config.json").write_text("[1]")
    assert "config.json" in run.problem()


def test_truncated_best_weights_are_reported():
    run = _run()
    _weights(run)
    data = run.best_weights.read_bytes()
    run.best_weights.write_bytes(data[: len(data) - 1000])
    assert "best.safetensors is truncated" in run.problem()
    run.best_weights.write_bytes(data[:5])
    assert "best.safetensors is too short" in run.problem()


def test_a_damaged_result_json_reads_as_no_result():
    run = _run()
    (run.path / "result.json").write_text('{"val_acc": 0.')
    assert run.result() is None
    assert "result.json is truncated" in run.problem()


def test_resume_is_offered_only_for_an_intact_last_checkpoint_of_an_unfinished_run():
    run = _run()
    assert not run.resumable()  # no last.pt
    torch.save({"epoch": 2, "model": {"w": torch.ones(8)}}, run.last_ckpt)
    assert run.resumable()
    data = run.last_ckpt.read_bytes()
    run.last_ckpt.write_bytes(data[: len(data) // 2])
    assert not run.resumable()
    torch.save({"epoch": 2}, run.last_ckpt)
    run.append({"type": "end", "status": "failed", "error": "No space left on device", "time": time.time()})
    assert run.resumable(), "a run that failed on a full disk with an intact last.pt can resume"
    run.append({"type": "end", "status": "finished", "time": time.time()})
    assert not run.resumable()


@pytest.mark.parametrize("damage", ["weights", "config", "split"])
def test_the_pages_doorway_refuses_a_damaged_run_with_a_clear_message(damage):
    from core.app import services

    run = _run()
    _weights(run)
    runs.atomic_write_text(run.path / "split.json", json.dumps({"classes": ["a", "b"], "train": [], "val": []}))
    target = {"weights": run.best_weights, "config": run.path / "config.json", "split": run.path / "split.json"}[damage]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    calls = [lambda: services.evaluate_run(run.path), lambda: services.export_files(run.path),
             lambda: services.card_markdown(run.path), lambda: services.export_format(run.path, "pt")]
    for call in calls:
        with pytest.raises(ValueError, match=f"run {run.id} is damaged \\(.*\\) and cannot be"):
            call()


def test_a_bad_event_line_does_not_stop_evaluation_or_export_checks():
    run = _run()
    _weights(run)
    with open(run.events_file, "ab") as f:
        f.write(b"\xff\n")
    assert run.problem() and run.problem(runs.MODEL_FILES) is None
    assert run.require_intact() is run


def test_a_failed_run_that_was_resumed_reads_by_its_latest_attempt():
    run = _run(1)
    run.append({"type": "end", "status": "failed", "time": time.time()})
    assert run.status() == "failed"
    run.append({"type": "start", "time": time.time(), "resumed": True})
    assert run.status() == "interrupted"  # resumed, then killed before its own end event
    run.append({"type": "end", "status": "finished", "time": time.time()})
    assert run.status() == "finished"
