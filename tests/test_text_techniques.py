"""The techniques for text through the one loop (issue 17): distillation into a smaller encoder, multi-task heads
over several label columns, continued masked-language-model pretraining on the user's own texts."""
from __future__ import annotations

import dataclasses
import io
import json
import math
from contextlib import redirect_stdout

import pytest
import torch

from core import cli, techniques
from core.config import RunConfig
from core.data import text, text_tasks
from core.models import text_backbones
from core.results import loading
from core.storage import runs
from core.techniques import text_distill, text_multitask, text_pretrain
from core.train.control import Control

SMALL = dict(device="cpu", max_length=32, batch_size=16)


def _config(data, **kw) -> RunConfig:
    given = {**SMALL, **kw, "data": str(data)}
    return techniques.default_text_config(RunConfig(**given), explicit=set(given))


def _epochs(run_dir) -> list[dict]:
    with open(f"{run_dir}/events.jsonl") as f:
        return [e for e in map(json.loads, f) if e["type"] == "epoch"]


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    return text.make_sample(tmp_path_factory.mktemp("text-techniques") / "topics.csv", per_class=16)


@pytest.fixture(scope="module")
def teacher(topics):
    """A fine-tuned text classifier (head on the bundled all-MiniLM-L6-v2): the teacher of the students."""
    result = techniques.fit(_config(topics, epochs=4))
    assert result["status"] == "finished"
    return result["run_dir"]


@pytest.fixture(scope="module")
def students(topics, teacher):
    """(distilled, labels-only) MiniLM-L3 students: same data, seed and recipe; only alpha differs."""
    config = _config(topics, backbone=text_backbones.TRUNCATED, epochs=40)
    distilled = text_distill.distill(teacher, config, alpha=0.5, temperature=4.0)
    alone = text_distill.distill(teacher, config, alpha=1.0, temperature=4.0)
    return distilled["run_dir"], alone["run_dir"]


def test_a_distilled_text_student_is_smaller_predicts_and_names_its_teacher(teacher, students):
    big, small = loading.load_model(teacher), loading.load_model(students[0])
    n = lambda m: sum(p.numel() for p in m.model.parameters())  # noqa: E731
    assert n(small) < 0.8 * n(big)
    assert len(small.model.body.model.encoder.layer) == 3 < len(big.model.body.model.encoder.layer)
    assert small.card["distilled_from"]["teacher"] == teacher
    assert small.card["distilled_from"]["backbone"] == text_backbones.DEFAULT
    preds = small.predict(["The pizza and the pasta were delicious.", "The tennis final went to five sets."])
    assert [p["label"] for p in preds] == ["food", "sports"]


def test_distillation_brings_the_student_closer_to_the_teacher_than_labels_alone(teacher, students):
    split = text.TextSplit.from_dict(json.loads(open(f"{students[0]}/split.json").read()))
    texts = [t for t, _ in split.val]
    p_teacher = loading.load_model(teacher).predict_proba(texts)

    def kl(run_dir) -> float:  # KL(teacher || student) on the validation texts, both at temperature 1
        p = loading.load_model(run_dir).predict_proba(texts)
        return float((p_teacher * (p_teacher.log() - p.clamp_min(1e-9).log())).sum(1).mean())

    distilled, alone = kl(students[0]), kl(students[1])
    assert distilled < 0.6 * alone, (distilled, alone)


def test_a_text_student_needs_a_finished_text_teacher(topics, tmp_path):
    config = dataclasses.replace(_config(topics, backbone=text_backbones.TRUNCATED), technique="text_distill",
                                 teacher=str(tmp_path))
    with pytest.raises(ValueError, match="no weights yet"):
        techniques.check(config)


def test_text_multitask_reports_every_column_and_its_heads_predict_both(tmp_path):
    data = text_tasks.make_multitask_sample(tmp_path / "reviews.csv", per_class=16)
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["multitask", "--data", str(data), "--device", "cpu", "--max-length", "32",
                         "--batch-size", "16", "--epochs", "8"])
    assert code == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["technique"] == "text_multitask"
    assert set(result["tasks"]) == {"topic", "sentiment"}
    last = next(e for e in _epochs(result["run_dir"]) if e["epoch"] == result["best_epoch"])["tasks"]
    assert set(last) == {"topic", "sentiment"} and all(0 <= last[t]["val_f1"] <= 1 for t in last)
    assert last["topic"]["val_acc"] >= 0.8 and last["sentiment"]["val_acc"] >= 0.7

    model = text_multitask.load(result["run_dir"])  # from the saved file: both heads, in the tasks' order
    split = json.loads(open(f"{result['run_dir']}/split.json").read())
    preds = model.predict([t for t, _ in split["val"]])
    for k, task in enumerate(split["tasks"]):
        truth = [split["tasks"][task][y[k]] for _, y in split["val"]]
        hits = sum(p[task]["label"] == t for p, t in zip(preds, truth)) / len(truth)
        assert hits == pytest.approx(last[task]["val_acc"], abs=1e-6), task  # the saved heads are the best epoch's

    # load_model and the CLI's predict know it too: every task per text, in input order
    assert loading.load_model(result["run_dir"]).predict(["a text"])[0].keys() == {"topic", "sentiment"}
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["predict", "--model", result["run_dir"], "--text", split["val"][0][0],
                         "--text", split["val"][1][0]]) == 0
    lines = [json.loads(x) for x in out.getvalue().strip().splitlines()]
    assert [x["text"] for x in lines] == [split["val"][0][0], split["val"][1][0]]
    assert [{t: v["label"] for t, v in x["tasks"].items()} for x in lines] == \
        [{t: v["label"] for t, v in p.items()} for p in preds[:2]]
    assert [x["tasks"]["topic"]["confidence"] for x in lines] == pytest.approx(
        [p["topic"]["confidence"] for p in preds[:2]], abs=1e-5)


def test_text_multitask_names_the_columns_when_a_task_is_missing(tmp_path):
    data = text_tasks.make_multitask_sample(tmp_path / "reviews.csv", per_class=4)
    with pytest.raises(ValueError, match="its label columns are topic, sentiment"):
        text_tasks.read_tasks(data, ["mood"])


def test_mlm_pretraining_lowers_the_loss_on_the_users_text_and_the_encoder_trains_a_classifier(topics, tmp_path):
    corpus = tmp_path / "notes.txt"  # unlabelled: one text per line
    corpus.write_text("\n".join(r.text for r in text.read(topics).rows), encoding="utf-8")
    run = text_pretrain.pretrain(text_backbones.DEFAULT, str(corpus), epochs=2, batch_size=16, lr=1e-4,
                                 trainable="last-2", max_length=32, device="cpu")
    losses = [e["val_loss"] for e in _epochs(run.path)]
    assert len(losses) == 2 and losses[1] < losses[0] < math.log(30522)  # below a uniform guess over the vocabulary
    name = run.result()["backbone_name"]
    assert name == text_backbones.adapted_name(text_backbones.DEFAULT, run.path.name)
    assert any(r["name"] == name for r in text_backbones.list_adapted())

    result = techniques.fit(_config(topics, backbone=name, epochs=4))
    assert result["status"] == "finished" and result["val_accuracy"] >= 0.75
    from safetensors.torch import load_file

    adapted = load_file(str(run.path / text_backbones.ADAPTED_FILE))
    key = "model.encoder.layer.5.attention.self.query.weight"  # a block that learned (trainable last-2)
    body = loading.load_model(result["run_dir"]).model.body.state_dict()
    base = text_backbones.build_body(text_backbones.DEFAULT).state_dict()
    assert torch.equal(body[key], adapted[key]) and not torch.equal(adapted[key], base[key])


def test_a_stopped_mlm_run_resumes_to_the_uninterrupted_result(tmp_path):
    corpus = text.make_sample(tmp_path / "small.csv", per_class=8)  # its texts; the labels are not read
    config = RunConfig(data=str(corpus), sources=[str(corpus)], backbone=text_backbones.DEFAULT, device="cpu",
                       technique="text_pretrain", trainable="last-1", epochs=3, batch_size=8, lr=1e-4, max_length=24,
                       augment="none", cache_features=False, early_stopping_metric="val_loss")
    whole = techniques.fit(config)
    ctl = Control()
    run = runs.create(config)
    stop_after_2 = lambda ev: ctl.stop() if ev["type"] == "epoch" and ev["epoch"] == 2 else None  # noqa: E731
    assert techniques.fit(config, stop_after_2, ctl, run)["status"] == "stopped"
    techniques.fit(config, run=runs.open_run(run.path), resume=True)
    a, b = _epochs(whole["run_dir"]), _epochs(run.path)
    assert [e["epoch"] for e in b] == [1, 2, 3]
    # the masks drawn in epoch 3 come from the restored random state: the same tokens are masked as without a stop
    assert b[2]["train_loss"] == pytest.approx(a[2]["train_loss"], abs=1e-4)
    assert b[2]["val_loss"] == pytest.approx(a[2]["val_loss"], abs=1e-4)
