"""Knowledge distillation: the loss, and on real digits that the teacher decides what the student learns."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

from core.techniques import distill
from core.results import loading
from core.techniques import fit

# Chance agreement between two 10-class predictors is about 0.1. Measured with these settings: 0.88
# (student of the digit teacher), 0.54 (student of the shifted teacher, whose own split differs, so it
# trained on some of these validation images), 0.08 between the two students.
MIN_AGREEMENT_WITH_OWN_TEACHER = 0.4
MAX_AGREEMENT_BETWEEN_STUDENTS = 0.25


def test_loss_parts_match_their_definitions():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert distill.distillation_loss(s, t, y, 1.0, 4.0).item() == pytest.approx(ce.item())
    # Pure soft targets: T^2 * KL(p_teacher || p_student), written out by hand.
    T = 2.0
    p_t, p_s = torch.softmax(t / T, 1), torch.softmax(s / T, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean().item() * T * T
    assert distill.distillation_loss(s, t, y, 0.0, T).item() == pytest.approx(kl, rel=1e-5)
    mixed = distill.distillation_loss(s, t, y, 0.3, T).item()
    assert mixed == pytest.approx(0.3 * ce.item() + 0.7 * kl, rel=1e-5)
    assert distill.distillation_loss(t, t, y, 0.0, T).item() == pytest.approx(0.0, abs=1e-6)
    assert not math.isclose(kl, 0.0)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, digits_dir, tiny_config):
    """Two teachers on the same images: one learned the digits, the other a shifted labelling (d -> d+1)."""
    shifted = tmp_path_factory.mktemp("shifted") / "digits"
    for d in range(10):
        shutil.copytree(digits_dir / str(d), shifted / str((d + 1) % 10))
    true = fit(tiny_config(digits_dir, epochs=30, name="teacher"))
    other = fit(tiny_config(shifted, epochs=30, name="shifted teacher"))
    return true["run_dir"], other["run_dir"]


@pytest.fixture(scope="module")
def students(teachers, digits_dir, tiny_config):
    """Students trained on the teachers' soft labels only (alpha=0), at another learning rate.

    Same data, seed and val_fraction as the teachers, hence the same validation images.
    """
    config = tiny_config(digits_dir, epochs=30, lr=0.02)
    a = distill.distill(teachers[0], config, alpha=0.0, temperature=4.0)
    b = distill.distill(teachers[1], config, alpha=0.0, temperature=4.0)
    return a, b


def _val_preds(run_dir, items_from):
    """Top-1 predictions of a run's model on the validation images of ``items_from`` (a run directory)."""
    import json
    from pathlib import Path

    from core.results.metrics import predict_items

    split = json.loads((Path(items_from) / "split.json").read_text())
    return predict_items(loading.load_model(run_dir), [tuple(x) for x in split["val"]]).argmax(1)


def test_the_teacher_decides_what_the_student_learns(teachers, students):
    a, b = students
    assert a["status"] == b["status"] == "finished"
    on = a["run_dir"]
    agree_a = (_val_preds(a["run_dir"], on) == _val_preds(teachers[0], on)).mean()
    agree_b = (_val_preds(b["run_dir"], on) == _val_preds(teachers[1], on)).mean()
    between = (_val_preds(a["run_dir"], on) == _val_preds(b["run_dir"], on)).mean()
    assert agree_a >= MIN_AGREEMENT_WITH_OWN_TEACHER, agree_a
    assert agree_b >= MIN_AGREEMENT_WITH_OWN_TEACHER, agree_b
    assert between <= MAX_AGREEMENT_BETWEEN_STUDENTS, between


def test_run_is_logged_like_training_and_the_student_exports(students, digits_dir, tmp_path):
    from core.storage import runs

    a, _ = students
    run = runs.open_run(a["run_dir"])
    kinds = [e["type"] for e in run.events()]
    assert kinds[-1] == "end" and kinds.count("epoch") == 30 and "step" in kinds
    epochs = [e for e in run.events() if e["type"] == "epoch"]
    assert all(0 <= e["agreement"] <= 1 and "val_acc" in e and "train_loss" in e for e in epochs)
    assert run.config().distill_alpha == 0.0
    loaded = loading.load_model(a["run_dir"])
    assert loaded.card["technique"] == "distill" and loaded.card["alpha"] == 0.0
    image = next((digits_dir / "3").glob("*.png"))
    exported = tmp_path / "student.safetensors"
    exported.write_bytes(loading.safetensors_bytes(loaded.model, loaded.card))
    again = loading.load_model(exported)
    assert torch.equal(loaded.predict_proba([image]), again.predict_proba([image]))


def test_compare_table(teachers, students):
    a, b = students
    rows = distill.compare(teachers[0], {"distilled": a["run_dir"], "from the shifted teacher": b["run_dir"]},
                           latency_repeats=3)
    assert [r["model"] for r in rows] == ["teacher", "distilled", "from the shifted teacher"]
    assert rows[2]["agreement_with_teacher"] <= MAX_AGREEMENT_BETWEEN_STUDENTS
    assert rows[0]["agreement_with_teacher"] == 1.0
    assert rows[1]["agreement_with_teacher"] >= MIN_AGREEMENT_WITH_OWN_TEACHER
    assert rows[0]["accuracy"] > 0.3  # a teacher worth learning from: chance is 0.1
    for r in rows:
        assert r["parameters"] > 1e6 and r["size_mb"] > 1 and r["latency_ms"] > 0
    from core.app import charts

    assert list(charts.distill_comparison(rows).data[0].y) == [r["accuracy"] for r in rows]


def test_augmented_students_and_wrong_classes_are_refused(teachers, shapes_dir, digits_dir, tiny_config):
    with pytest.raises(ValueError, match="augment='none'"):
        distill.distill(teachers[0], tiny_config(digits_dir, augment="light"))
    with pytest.raises(ValueError, match="the teacher knows classes"):
        distill.distill(teachers[0], tiny_config(shapes_dir))
    with pytest.raises(ValueError, match="not a run directory"):
        distill.distill("no-such-run", tiny_config(digits_dir))


def test_cli_refuses_a_missing_teacher(digits_dir, capsys):
    from core import cli

    code = cli.main(["distill", "--teacher", "no-such-run", "--data", str(digits_dir), "--augment", "none"])
    assert code == 2 and "not a run directory" in capsys.readouterr().err
