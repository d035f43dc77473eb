"""Text classification through the one loop: the text backbone registry, transfer from the pretrained encoder,
resume, the CLI contract and load-back (issue 17)."""
from __future__ import annotations

import json
import time

import pytest
import torch

from core import cli, techniques
from core.config import RunConfig
from core.data import text
from core.models import backbones, freezing, text_backbones
from core.results import loading
from core.storage import runs
from core.train.control import Control


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    """(training CSV, held-out CSV whose topic words never appear in training): 4 topics."""
    d = tmp_path_factory.mktemp("topics")
    return text.make_sample(d / "topics.csv", per_class=16), text.make_sample(d / "held_out.csv", 12, held_out=True)


def _config(data, **kw) -> RunConfig:
    base = dict(data=str(data), device="cpu", max_length=16, batch_size=16, epochs=3)
    return techniques.default_text_config(RunConfig(**{**base, **kw}), explicit=set(kw) | set(base))


@pytest.mark.parametrize("name", text_backbones.names())
def test_every_text_backbone_embeds_offline_or_fails_fast_naming_the_bundled_one(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = text_backbones.get(name)
    if spec.source == "bundled":
        body = text_backbones.build_body(name).eval()
        ids = text_backbones.tokenize(name, ["a cat sat on the mat", "stock markets fell sharply", "hi"], 32)
        with torch.no_grad():
            emb = body(ids)
        assert emb.shape == (3, spec.dim)
        assert torch.nn.functional.cosine_similarity(emb[0], emb[1], dim=0) < 0.9
        return
    if text_backbones.weights_status(name) == "cached":
        pytest.skip(f"{name} is in this machine's Hugging Face cache")
    t0 = time.time()
    with pytest.raises(text_backbones.TextWeightsUnavailable, match=text_backbones.DEFAULT):
        text_backbones.build_body(name)
    assert time.time() - t0 < 10


def test_padding_does_not_change_a_text_s_embedding():
    body = text_backbones.build_body(text_backbones.DEFAULT).eval()
    alone = text_backbones.tokenize(text_backbones.DEFAULT, ["short one"], 32)
    padded = text_backbones.tokenize(text_backbones.DEFAULT, ["short one", "a much longer sentence than the first"], 32)
    with torch.no_grad():
        assert torch.allclose(body(alone)[0], body(padded)[0], atol=1e-5)


def test_text_layer_groups_drive_the_freezing_presets_and_discriminative_rates():
    name = text_backbones.DEFAULT
    assert backbones.group_names(name) == ["embeddings", *(f"block{i}" for i in range(1, 7)), "head"]
    assert freezing.plan(name, "last-2") == ["block5", "block6", "head"]
    model = text_backbones.build_model(name, 3, pretrained=False)
    counts = backbones.param_counts(name, model)  # raises unless every parameter sits in exactly one group
    assert counts["embeddings"] > counts["block1"] > counts["head"] > 0
    used = freezing.apply(model, name, ["block6", "head"])
    assert used["trainable"] == counts["block6"] + counts["head"]
    lrs = [g["lr"] for g in freezing.param_groups(model, name, ["block5", "block6", "head"], 1e-3, decay=0.5)]
    assert lrs == [1e-3, 5e-4, 2.5e-4]


def test_an_image_technique_with_a_text_backbone_is_refused_by_name():
    config = RunConfig(data="x.csv", backbone=text_backbones.DEFAULT)
    with pytest.raises(ValueError, match="train with technique text"):
        techniques.check(config)


def test_the_pretrained_encoder_transfers_to_unseen_synonyms_and_random_init_does_not(topics):
    train_csv, held_out = topics
    rows = text.read(held_out).rows
    acc = {}
    for pretrained in (True, False):
        result = techniques.fit(_config(train_csv, pretrained=pretrained, epochs=8))
        events = runs.open_run(result["run_dir"]).events()
        assert next(e for e in events if e["type"] == "start")["cached_features"]  # head-only: encoded once
        preds = loading.load_model(result["run_dir"]).predict([r.text for r in rows])
        acc[pretrained] = sum(p["label"] == r.label for p, r in zip(preds, rows)) / len(rows)
    assert acc[True] >= 0.75, acc
    assert acc[True] - acc[False] >= 0.3, acc


def test_a_stopped_text_run_resumes_to_the_uninterrupted_result(topics):
    config = _config(topics[0], trainable="last-1", seed=2)
    whole = techniques.fit(config)
    ctl = Control()
    run = runs.create(config)
    stop_after_2 = lambda ev: ctl.stop() if ev["type"] == "epoch" and ev["epoch"] == 2 else None  # noqa: E731
    assert techniques.fit(config, stop_after_2, ctl, run)["status"] == "stopped"
    resumed = techniques.fit(config, run=runs.open_run(run.path), resume=True)
    a = {e["epoch"]: e for e in runs.open_run(whole["run_dir"]).events() if e["type"] == "epoch"}
    b = {e["epoch"]: e for e in run.events() if e["type"] == "epoch"}
    assert sorted(b) == [1, 2, 3]
    for k in ("train_loss", "val_loss"):
        assert abs(a[3][k] - b[3][k]) < 1e-4, (k, a[3][k], b[3][k])
    assert resumed["best_epoch"] == whole["best_epoch"]


def test_the_cli_trains_a_text_table_by_its_columns_and_predicts_texts_in_order(topics, tmp_path, capsys):
    assert cli.main(["train", "--data", str(topics[0]), "--device", "cpu", "--epochs", "2", "--max-length", "16"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["technique"] == "text" and result["classes"] == ["food", "sports", "technology", "weather"]
    config = runs.open_run(result["run_dir"]).config()
    assert config.backbone == text_backbones.DEFAULT and config.epochs == 2 and config.max_length == 16
    lines = tmp_path / "texts.txt"
    lines.write_text("a report about the football\n\nthe storm is coming\n", encoding="utf-8")
    assert cli.main(["predict", "--model", result["run_dir"], "--text", "we ate pizza", "--texts-file", str(lines),
                     "--top-k", "2"]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [o["text"] for o in out] == ["we ate pizza", "a report about the football", "the storm is coming"]
    assert all(set(o) == {"text", "label", "confidence", "top_k"} and len(o["top_k"]) == 2 for o in out)
    assert [o["label"] for o in out] == ["food", "sports", "weather"]
    assert cli.main(["predict", "--model", result["run_dir"], "some.png"]) == 2
    assert "is a text classifier" in capsys.readouterr().err


def test_load_model_predicts_a_list_of_texts_and_refuses_a_bare_string(topics):
    run_dir = techniques.fit(_config(topics[0], epochs=2))["run_dir"]
    model = loading.load_model(run_dir)
    preds = model.predict(["the pasta was great", "heavy rain tonight"], top_k=3)
    assert len(preds) == 2 and all(len(p["top_k"]) == 3 for p in preds)
    with pytest.raises(TypeError, match="wrap the one text in a list"):
        model.predict("the pasta was great")
    with pytest.raises(ValueError, match="a text classifier predicts without it"):
        model.predict(["the pasta was great"], tta="flip")


def test_an_offline_hub_text_backbone_fails_the_run_with_the_alternative(topics, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if text_backbones.weights_status("bert_base_uncased") == "cached":
        pytest.skip("bert-base-uncased is cached here")
    config = _config(topics[0], backbone="bert_base_uncased")
    with pytest.raises(text_backbones.TextWeightsUnavailable, match="pick a text backbone available offline"):
        techniques.fit(config)


@pytest.mark.parametrize("bad, message", [({"augment": "light"}, "a text run takes augment none"),
                                          ({"probe_init": True, "trainable": "last-1"}, "needs head-only training")])
def test_image_only_settings_are_refused_for_a_text_run_by_name(topics, bad, message):
    config = techniques.default_text_config(RunConfig(data=str(topics[0]), **bad), explicit=set(bad))
    with pytest.raises(ValueError, match=message):
        techniques.check(config)
