"""Multi-task learning: masked loss, two tasks learned from one backbone on digits, export and reload."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from core.results import loading
from core.techniques import multitask
from core.techniques.multitask import MISSING

# Chance: 0.1 for the digit (10 classes), 0.5 for parity. Measured with these settings at the best epoch:
# digit 0.89, parity 0.95 (on the 18-19 validation rows that carry each label).
MIN_DIGIT_ACC = 0.3
MIN_PARITY_ACC = 0.6


def test_masked_rows_do_not_contribute():
    torch.manual_seed(0)
    logits = {"a": torch.randn(4, 3, requires_grad=True), "b": torch.randn(4, 2, requires_grad=True)}
    targets = torch.tensor([[0, MISSING], [MISSING, 1], [2, 0], [MISSING, MISSING]])
    total, parts = multitask.masked_loss(logits, targets, {"a": 1.0, "b": 0.5})
    ce = torch.nn.functional.cross_entropy
    want_a = ce(logits["a"][[0, 2]], torch.tensor([0, 2]))
    want_b = ce(logits["b"][[1, 2]], torch.tensor([1, 0]))
    assert total.item() == pytest.approx(want_a.item() + 0.5 * want_b.item(), rel=1e-6)
    assert parts == pytest.approx({"a": want_a.item(), "b": want_b.item()})
    total.backward()
    # Rows without a label for a task get no gradient from that task's head ...
    assert torch.all(logits["a"].grad[[1, 3]] == 0) and torch.all(logits["b"].grad[[0, 3]] == 0)
    # ... and labelled rows do.
    assert logits["a"].grad[[0, 2]].abs().sum() > 0 and logits["b"].grad[[1, 2]].abs().sum() > 0
    # Changing what a masked row predicts changes nothing.
    moved = {"a": logits["a"].detach().clone(), "b": logits["b"].detach().clone()}
    moved["a"][1] += 100
    moved["b"][0] -= 100
    assert multitask.masked_loss(moved, targets, {"a": 1.0, "b": 0.5})[0].item() == pytest.approx(total.item())


def test_a_task_with_no_label_in_the_batch_is_skipped_not_zero():
    logits = {"a": torch.randn(2, 3), "b": torch.randn(2, 2)}
    total, parts = multitask.masked_loss(logits, torch.tensor([[1, MISSING], [0, MISSING]]), {"a": 1, "b": 1})
    assert parts["b"] != parts["b"]  # NaN marks "no labels", so it never averages in as a perfect score
    assert total.item() == pytest.approx(parts["a"])


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory, digits_dir):
    """Digits with two tasks, digit and parity; every 4th row lacks the digit, every 5th lacks the parity."""
    folder = tmp_path_factory.mktemp("mt") / "digits-mt"
    folder.mkdir()
    rows = []
    for i, p in enumerate(sorted(digits_dir.rglob("*.png"))):
        d = int(p.parent.name)
        (folder / "images").mkdir(exist_ok=True)
        (folder / "images" / p.name).write_bytes(p.read_bytes())
        rows.append([f"images/{p.name}", "" if i % 4 == 0 else str(d),
                     "" if i % 5 == 0 and i % 4 != 0 else ("even" if d % 2 == 0 else "odd")])
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["filename", "digit", "parity"], *rows])
    return folder


def test_read_table_marks_missing_labels(digits_csv):
    table = multitask.read_table(str(digits_csv / "labels.csv"))
    assert table.tasks["parity"] == ["even", "odd"] and table.tasks["digit"] == [str(d) for d in range(10)]
    assert len(table.files) == 120
    assert table.labels["digit"].count(MISSING) == 30 and table.labels["parity"].count(MISSING) == 18
    with pytest.raises(ValueError, match="label columns are digit, parity"):
        multitask.read_table(str(digits_csv / "labels.csv"), ["colour"])


@pytest.fixture(scope="module")
def trained(digits_csv, tiny_config):
    events = []
    result = multitask.fit_multitask(tiny_config(digits_csv / "labels.csv", epochs=30), ["digit", "parity"],
                                     [1.0, 0.5], on_event=events.append)
    return result, events


def test_both_tasks_learn(trained):
    result, events = trained
    assert result["status"] == "finished"
    epochs = [e for e in events if e["type"] == "epoch"]
    assert len(epochs) == 30 and set(epochs[0]["tasks"]) == {"digit", "parity"}
    best = max(epochs, key=lambda e: e["val_acc"])
    assert best["tasks"]["digit"]["val_acc"] >= MIN_DIGIT_ACC, best["tasks"]
    assert best["tasks"]["parity"]["val_acc"] >= MIN_PARITY_ACC, best["tasks"]
    assert 0 <= best["tasks"]["digit"]["val_f1"] <= 1
    start = next(e for e in events if e["type"] == "start")
    assert start["labelled"]["digit"]["train"] + start["labelled"]["digit"]["val"] == 90


def test_export_carries_every_head_and_reloads_identically(trained, digits_csv, tmp_path):
    result, events = trained
    loaded = loading.load_model(result["run_dir"])
    assert loaded.card["kind"] == "multitask" and loaded.card["task_weights"] == {"digit": 1.0, "parity": 0.5}
    assert set(loaded.tasks) == {"digit", "parity"}
    # The reloaded model reproduces the validation accuracy recorded for the best epoch.
    split = json.loads((Path(result["run_dir"]) / "split.json").read_text())
    paths = [p for p, _ in split["val"]]
    labels = torch.tensor([y for _, y in split["val"]])
    probs = loaded.predict_proba(paths)
    best = max((e for e in events if e["type"] == "epoch"), key=lambda e: e["val_acc"])
    for k, t in enumerate(["digit", "parity"]):
        mask = labels[:, k] != MISSING
        acc = float((probs[t].argmax(1)[mask] == labels[mask, k]).float().mean())
        assert acc == pytest.approx(best["tasks"][t]["val_acc"], abs=1e-6)
    for name, payload in (("m.safetensors", loading.safetensors_bytes(loaded.model, loaded.card)),
                          ("m.pt", loading.bundle_bytes(loaded.model, loaded.card))):
        (tmp_path / name).write_bytes(payload)
        again = loading.load_model(tmp_path / name)
        got = again.predict_proba(paths)
        assert all(torch.equal(got[t], probs[t]) for t in got)
    preds = loaded.predict(paths[:2], top_k=2)
    assert set(preds[0]) == {"digit", "parity"} and preds[0]["parity"]["label"] in ("even", "odd")


def test_zip_with_csv_and_images(digits_csv, tmp_path):
    from tests.conftest import zip_folder

    z = zip_folder(digits_csv, tmp_path / "mt.zip", top="upload")
    table = multitask.read_table(str(z), ["parity"])
    assert list(table.tasks) == ["parity"]
    assert len(table.files) == 120 - 18  # rows without a parity label have nothing to learn from
    assert any("no label for any task" in s for s in table.skipped)


def test_task_chart_shows_every_task(trained):
    from core.app import charts

    _, events = trained
    fig = charts.task_curves(events)
    assert sorted(tr.name for tr in fig.data) == ["digit F1", "digit acc", "parity F1", "parity acc"]
    parity = next(tr for tr in fig.data if tr.name == "parity acc")
    assert list(parity.y) == [e["tasks"]["parity"]["val_acc"] for e in events if e["type"] == "epoch"]


def test_cli_trains_and_predicts_every_task(digits_csv, trained, capsys):
    from core import cli

    code = cli.main(["multitask", "--data", str(digits_csv / "labels.csv"), "--tasks", "parity",
                     "--weights", "2", "--image-size", "64", "--epochs", "1", "--augment", "none",
                     "--device", "cpu"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["tasks"] == {"parity": ["even", "odd"]}
    image = str(next((digits_csv / "images").glob("*.png")))
    assert cli.main(["predict", "--model", trained[0]["run_dir"], "--top-k", "1", image]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert set(line["tasks"]) == {"digit", "parity"} and line["tasks"]["parity"]["label"] in ("even", "odd")
    assert cli.main(["multitask", "--data", str(digits_csv / "labels.csv"), "--tasks", "digit,parity",
                     "--weights", "1"]) == 2
    assert "2 tasks" in capsys.readouterr().err
