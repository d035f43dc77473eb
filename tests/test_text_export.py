"""Exports of a text classifier: safetensors with its tokenizer, ONNX with dynamic lengths checked in onnxruntime,
and the bundle's standalone predict.py (issue 17)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from core import techniques
from core.config import RunConfig
from core.data import text
from core.results import formats, loading, text_export

TEXTS = ["we ate pizza and pasta", "the storm is coming tonight", "who won the tennis final"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> str:
    data = text.make_sample(tmp_path_factory.mktemp("tx") / "topics.csv", per_class=12)
    config = techniques.default_text_config(RunConfig(data=str(data), device="cpu", epochs=2, max_length=16),
                                            explicit={"epochs", "max_length"})
    return techniques.fit(config)["run_dir"]


def _preds(model_path) -> list[dict]:
    return loading.load_model(model_path).predict(TEXTS, top_k=2)


def test_a_safetensors_export_carries_its_tokenizer_and_predicts_like_the_run(text_run, tmp_path):
    path = formats.export(text_run, "safetensors", tmp_path / "m.safetensors")
    assert (tmp_path / loading.TOKENIZER_DIR / "tokenizer.json").is_file()
    assert (tmp_path / loading.TOKENIZER_DIR / "config.json").is_file()
    ours, theirs = _preds(text_run), _preds(path)
    assert [p["label"] for p in ours] == [p["label"] for p in theirs]
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(ours, theirs)) < 1e-6


def test_the_onnx_export_has_dynamic_batch_and_sequence_and_matches_torch(text_run, tmp_path):
    import onnx

    path = formats.export(text_run, "onnx", tmp_path / "m.onnx")
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "sequence"]
    check = text_export.check_onnx(loading.load_model(text_run), path,
                                   texts=TEXTS + ["a much longer text than any of the others, to reach more tokens"])
    assert check["max_abs_diff"] < 1e-3


def test_the_bundle_predict_py_runs_alone_offline_and_agrees_with_load_model(text_run, tmp_path):
    bundle = formats.export(text_run, "bundle", tmp_path / "b.zip")
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "b")
    assert {"model.safetensors", "predict.py", "requirements.txt", "MODEL_CARD.md", "model_card.json",
            "tokenizer/tokenizer.json"} <= names
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "predict.py", *TEXTS, "--top-k", "2"], cwd=tmp_path / "b", env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    ours = _preds(text_run)
    assert [r["label"] for r in rows] == [p["label"] for p in ours]
    assert max(abs(r["confidence"] - p["confidence"]) for r, p in zip(rows, ours)) < 1e-5


def test_an_image_only_format_is_refused_for_a_text_model_naming_the_alternatives(text_run, tmp_path):
    with pytest.raises(ValueError, match="use onnx for a graph"):
        formats.export(text_run, "torchscript", tmp_path / "m.pt")
