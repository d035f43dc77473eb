"""Every export format loads back and reproduces the PyTorch model's outputs on the same images."""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import registry_entries
from core.results import formats, model_card, quantize
from core.storage import workspace
from core.results.loading import load_model


@pytest.fixture(scope="module")
def run_dir(shapes_dir, tiny_config):
    """One trained run (EfficientNet-Lite0, 64 px, head only, 2 epochs) shared by this file."""
    from core.techniques import fit

    # lr 0.01 keeps logits near +-10: at +-50 fp32 rounding alone (PyTorch vs float64) nears 1e-4.
    res = fit(tiny_config(shapes_dir, epochs=2))
    assert res["status"] == "finished"
    return Path(res["run_dir"])


@pytest.fixture(scope="module")
def val_paths(run_dir):
    split = json.loads((run_dir / "split.json").read_text())
    return [p for p, _ in split["val"]]


def test_unknown_format_names_the_choices(run_dir):
    with pytest.raises(ValueError, match="choose one of safetensors, pt, torchscript, onnx, int8, bundle"):
        formats.export(run_dir, "tflite")


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_weight_files_reload_to_identical_predictions(run_dir, val_paths, tmp_path, fmt):
    out = formats.export(run_dir, fmt, tmp_path / f"m.{fmt}")
    ref = load_model(run_dir).predict_proba(val_paths)
    got = load_model(out).predict_proba(val_paths)
    assert torch.equal(ref, got)
    assert load_model(out).classes == ["circle", "square", "triangle"]


def test_torchscript_matches_pytorch_and_carries_its_input_contract(run_dir, val_paths):
    out = formats.export(run_dir, "torchscript")
    assert out.parent == run_dir / "exports"  # on disk under the run, ready to stream to a download
    cmp = formats.compare_outputs(run_dir, out, val_paths)
    assert cmp["max_abs_diff"] <= 1e-4 and cmp["agreement"] == 1.0
    ex = formats.ExportedModel(out)
    assert ex.card["input"]["range"] == [0.0, 1.0] and ex.card["input"]["height"] == 64
    # a second call reuses the file instead of tracing again
    mtime = out.stat().st_mtime_ns
    assert formats.export(run_dir, "torchscript").stat().st_mtime_ns == mtime
    listed = {e["format"]: e for e in formats.existing(run_dir)}
    assert listed["torchscript"]["path"] == out and listed["torchscript"]["size_bytes"] == out.stat().st_size


def test_onnx_matches_pytorch_within_1e4_with_a_dynamic_batch(run_dir, val_paths, tmp_path):
    import onnx

    out = formats.export(run_dir, "onnx", tmp_path / "m.onnx")
    proto = onnx.load(str(out))
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"
    assert proto.opset_import[0].version == formats.ONNX_OPSET
    assert len(val_paths) > 1  # traced with batch 1, run with the whole validation set at once
    cmp = formats.compare_outputs(run_dir, out, val_paths)
    assert cmp["max_abs_diff"] <= 1e-4, cmp
    assert cmp["agreement"] == 1.0
    assert formats.ExportedModel(out).classes == load_model(run_dir).classes


def test_int8_is_smaller_and_close_to_fp32(run_dir, val_paths):
    rep = formats.compare_int8(run_dir, repeats=2)
    assert rep["int8"]["size_bytes"] < 0.5 * rep["fp32"]["size_bytes"]
    assert rep["int8"]["latency_ms"] > 0 and rep["fp32"]["latency_ms"] > 0
    assert rep["agreement"] >= 0.8, rep  # 6 validation images: at most one flipped prediction
    assert abs(rep["int8"]["val_accuracy"] - rep["fp32"]["val_accuracy"]) <= 0.2, rep
    saved = json.loads((run_dir / "exports" / "int8_report.json").read_text())
    assert saved["int8"]["size_bytes"] == rep["int8"]["size_bytes"]
    ex = formats.ExportedModel(run_dir / "exports" / "efficientnet_lite0.int8.torchscript.pt")
    assert ex.card["quantization"]["calibration_images"] > 0
    # the quantized graph really holds int8 weights
    assert "quantized" in str(ex._module.graph)


def test_exports_of_a_loose_model_file_go_to_a_folder_of_their_own(run_dir, val_paths, tmp_path):
    loose = formats.export(run_dir, "safetensors", tmp_path / "downloaded.safetensors")
    out = formats.export(loose, "torchscript")
    assert out.parent.parent == workspace.sub("exports") and out.parent.name.startswith("downloaded-")
    assert formats.compare_outputs(loose, out, val_paths[:2])["max_abs_diff"] <= 1e-4
    with pytest.raises(ValueError, match="int8 quantization needs calibration images"):
        formats.export(loose, "int8")
    with pytest.raises(ValueError, match="does not exist; pass a run directory"):
        formats.export(tmp_path / "missing.safetensors", "onnx")


def test_quantization_rewrites_compute_the_same_float_function():
    from core.models.backbones import build_model

    torch.manual_seed(0)
    net = formats.Normalised(build_model("efficientnet_lite0", 3, pretrained=False).eval(), (0.5,) * 3, (0.25,) * 3)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        import copy

        rewritten = quantize.quantizable(copy.deepcopy(net))
        custom = lambda mod: [m for m in mod.modules() if isinstance(m, torch.nn.Conv2d) and type(m) is not torch.nn.Conv2d]
        assert custom(net) and not custom(rewritten)
        assert torch.equal(rewritten(x), ref)


def test_bundle_predict_py_runs_standalone_and_agrees(run_dir, val_paths, tmp_path):
    out = formats.export(run_dir, "bundle", tmp_path / "bundle.zip")
    dest = tmp_path / "unzipped"
    with zipfile.ZipFile(out) as z:
        assert set(z.namelist()) == {"model.safetensors", "model_card.json", "MODEL_CARD.md", "predict.py",
                                     "requirements.txt"}
        z.extractall(dest)
    card = json.loads((dest / "model_card.json").read_text())
    assert card["classes"] == ["circle", "square", "triangle"]
    assert np.array(card["evaluation"]["confusion"]).sum() == len(val_paths)
    assert sum(card["data"]["val_per_class"].values()) == len(val_paths)
    assert "efficientnet-lite-pytorch" in card["versions"]["exported_with"]
    assert "efficientnet-lite-pytorch" in (dest / "requirements.txt").read_text()
    md = (dest / "MODEL_CARD.md").read_text()
    assert "Confusion matrix" in md and "circle" in md
    bomb, broken = tmp_path / "bomb.png", tmp_path / "broken.jpg"
    bomb.write_bytes(_png_claiming(20_000, 20_000))  # 400 megapixels announced by a 70-byte file
    broken.write_bytes(b"not a jpeg at all")
    # a photo-sized JPEG: predict.py decodes it reduced exactly as the app does (core.data.imageio, min_side)
    photo = tmp_path / "photo.jpg"
    big = np.asarray(Image.open(val_paths[1]).convert("RGB").resize((1800, 1800), Image.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-40, 40, big.shape)
    Image.fromarray((big + noise).clip(0, 255).astype(np.uint8)).save(photo, quality=85)
    heic = tmp_path / "IMG_0001.HEIC"  # an iPhone's format: pillow-heif, which predict.py registers when installed
    Image.open(val_paths[2]).convert("RGB").save(heic, "HEIF", quality=90)
    val_paths = [val_paths[0], str(photo), str(heic), *val_paths[1:]]
    given = [val_paths[0], str(bomb), str(broken), *val_paths[1:]]
    # a clean interpreter in the extracted folder: nothing from this repo on the path
    proc = subprocess.run([sys.executable, "-I", str(dest / "predict.py"), *given, "--top-k", "2"],
                          cwd=dest, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # some images failed, and the others were still predicted
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in rows] == given  # one line per image, in the order given
    assert "too large" in rows[1]["error"] and "--max-pixels" in rows[1]["error"]
    assert "cannot read this image" in rows[2]["error"]
    rows = rows[:1] + rows[3:]
    ref = load_model(run_dir).predict(val_paths, top_k=2)
    assert [r["label"] for r in rows] == [r["label"] for r in ref]
    assert np.allclose([r["confidence"] for r in rows], [r["confidence"] for r in ref], atol=1e-4)


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header announces width x height pixels, as a decompression bomb's does."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR: signature (8), length (4), type (4), then w, h
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the chunk's CRC covers type and data
    return bytes(data)


def test_cli_export_writes_the_file(run_dir, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "cli.safetensors"
    assert main(["export", "--model", str(run_dir), "--format", "safetensors", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(out)
    assert load_model(out).classes == load_model(run_dir).classes
    assert main(["export", "--model", str(run_dir), "--format", "h5", "--out", str(out)]) == 2
    assert "choose one of" in capsys.readouterr().err


def test_predict_zip_csv_matches_the_model_and_reports_bad_files(run_dir, val_paths, tmp_path):
    zpath = tmp_path / "batch.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in val_paths:
            z.write(p, f"imgs/{Path(p).name}")
        z.writestr("imgs/broken.png", b"not a png at all")
    text = formats.predict_zip(run_dir, zpath, top_k=2)
    rows = list(csv.DictReader(io.StringIO(text)))
    by_file = {r["file"]: r for r in rows}
    assert len(rows) == len(val_paths) + 1
    assert by_file["imgs/broken.png"]["error"] and not by_file["imgs/broken.png"]["label"]
    ref = load_model(run_dir).predict(val_paths, top_k=2)
    for p, r in zip(val_paths, ref):
        row = by_file[f"imgs/{Path(p).name}"]
        assert row["label"] == r["label"] == row["label_1"]
        assert abs(float(row["confidence"]) - r["confidence"]) < 1e-5
    assert list((workspace.sub("uploads")).glob("predict-*")) == []  # temp extraction cleaned up


# --- results of the trained run: top losses, confusion cells, a later test set -------------------

def test_confusion_cells_and_top_losses_agree_with_the_report(run_dir):
    from core.results import metrics

    rep = metrics.evaluate_run(run_dir)
    n = len(rep["classes"])
    for i in range(n):
        for j in range(n):
            cell = metrics.cell_items(rep, i, j)
            assert len(cell) == rep["confusion"][i][j]
            assert all(it["true_class"] == rep["classes"][i] and it["pred_class"] == rep["classes"][j] for it in cell)
    losses = metrics.top_losses(rep)
    assert [it["loss"] for it in losses] == sorted((it["loss"] for it in losses), reverse=True)
    for it in losses:
        assert it["loss"] == pytest.approx(-np.log(max(it["p_true"], 1e-7)), rel=1e-6)
    assert all(it["pred"] != it["label"] for it in metrics.misclassified(rep))
    with pytest.raises(ValueError, match=r"true_idx must be a class index in 0..2; got 3"):
        metrics.cell_items(rep, 3, 0)


def test_evaluate_on_a_later_test_set_matches_classes_by_name(run_dir, shapes_dir, tmp_path):
    import shutil

    from conftest import zip_folder
    from core.results import metrics

    test = tmp_path / "test"
    for cls in ("square", "circle"):  # no triangles: a class the model knows but the test set lacks
        shutil.copytree(shapes_dir / cls, test / cls)
    (test / "hexagon").mkdir()
    for p in sorted((shapes_dir / "triangle").glob("*.png"))[:3]:
        shutil.copy(p, test / "hexagon" / p.name)
    rep = metrics.evaluate_on(run_dir, zip_folder(test, tmp_path / "test.zip"))
    assert rep["unknown_classes"] == {"hexagon": 3} and rep["n_ignored"] == 3
    assert rep["missing_classes"] == ["triangle"]
    assert rep["classes"] == ["circle", "square", "triangle"] and rep["n_evaluated"] == 20
    lm = load_model(run_dir)
    paths = [it["path"] for it in rep["items"]]
    assert [lm.classes[it["label"]] for it in rep["items"]] == [Path(p).parent.name for p in paths]
    assert [lm.classes[it["pred"]] for it in rep["items"]] == [r["label"] for r in lm.predict(paths)]
    assert rep["accuracy"] == pytest.approx(np.mean([it["pred"] == it["label"] for it in rep["items"]]))
    only_unknown = tmp_path / "other"
    for cls in ("ant", "bee"):
        shutil.copytree(shapes_dir / "circle", only_unknown / cls)
    with pytest.raises(ValueError, match="none of the test set's classes"):
        metrics.evaluate_on(run_dir, only_unknown)


# --- every registry entry (and an adapted backbone) exports and rebuilds elsewhere ------------------

CLASSES = ["ant", "bee", "cat"]
# Each bundle's predict.py runs in one clean interpreter (-I, nothing of this repo on the path), one after the
# other: a fresh interpreter per bundle would pay torch's import (about 8 s here) ten times over.
DRIVER = """
import contextlib, io, json, runpy, sys, traceback
image, out = sys.argv[1], {}
for folder in sys.argv[2:]:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            main = runpy.run_path(folder + "/predict.py", run_name="bundle")["main"]  # HERE is that folder
            status = main([image, "--top-k", "3"])
        out[folder] = {"status": status, "lines": buf.getvalue().splitlines()}
    except BaseException:
        out[folder] = {"status": None, "error": traceback.format_exc()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    """Two noise images of different shapes (the crop and resize both matter)."""
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(48, 40), (40, 56)]):
        out.append(str(folder / f"noise{i}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out[-1])
    return out


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """name -> a .safetensors model (3 classes, 32 px; ViT at its fixed 224) with its card, written once."""
    from core.config import RunConfig
    from core.models import backbones
    from core.results import loading

    folder, made = tmp_path_factory.mktemp("registry-models"), {}

    def make(name: str) -> Path:
        if name not in made:
            spec = backbones.get(name)
            config = RunConfig(data="sample:shapes", backbone=name, image_size=0 if spec.fixed_size else 32)
            torch.manual_seed(0)
            model = backbones.build_model(name, len(CLASSES), pretrained=spec.source == "adapted").eval()
            made[name] = folder / f"{formats._stem(name)}.safetensors"
            loading.save_safetensors(model, loading.make_card(config, CLASSES, backbones.preprocessing_for(config)),
                                     made[name])
        return made[name]
    return make


@pytest.mark.parametrize("entry", registry_entries(), indirect=True)
def test_onnx_matches_pytorch_in_onnxruntime_for_every_entry(entry, model_file, images, tmp_path):
    out = formats.export(model_file(entry), "onnx", tmp_path / "m.onnx")
    cmp = formats.compare_outputs(model_file(entry), out, images)  # both images in one batch
    assert cmp["max_abs_diff"] <= 1e-4 * max(1.0, cmp["max_abs_logit"]), cmp
    assert cmp["agreement"] == 1.0
    card = formats.ExportedModel(out).card
    assert card["backbone"] == entry and card["classes"] == CLASSES


@pytest.fixture(scope="module")
def bundle_runs(model_file, images, adapted_backbone, tmp_path_factory) -> dict:
    """name -> what each entry's bundle printed for the first image, all bundles run by one DRIVER process."""
    root = tmp_path_factory.mktemp("bundles")
    names = [n for n in registry_entries() if n != "adapted"] + [adapted_backbone]
    folders = {}
    for name in names:
        folders[name] = root / formats._stem(name)
        with zipfile.ZipFile(formats.export(model_file(name), "bundle", root / f"{formats._stem(name)}.zip")) as z:
            z.extractall(folders[name])
    proc = subprocess.run([sys.executable, "-I", "-c", DRIVER, images[0], *map(str, folders.values())],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout.splitlines()[-1])
    return {name: done[str(folder)] for name, folder in folders.items()}


@pytest.mark.parametrize("entry", registry_entries(), indirect=True)
def test_the_bundle_predict_py_rebuilds_every_entry_and_agrees(entry, bundle_runs, model_file, images):
    from core.models import backbones

    got = bundle_runs[entry]
    assert got["status"] == 0, got.get("error") or got["lines"]
    row = json.loads(got["lines"][0])
    ref = load_model(model_file(entry)).predict(images[:1], top_k=3)[0]
    assert row["label"] == ref["label"]
    assert np.allclose([p for _, p in row["top_k"]], [p for _, p in ref["top_k"]], atol=1e-4)
    spec = backbones.get(entry)
    assert model_card.requirements(entry).splitlines()[5:] == list(spec.packages)  # after torch, torchvision, ...


def test_a_card_is_read_from_the_header_once_per_file_version(model_file, tmp_path, monkeypatch):
    from core.storage import cards

    path = tmp_path / "m.safetensors"
    path.write_bytes(model_file("resnet18").read_bytes())
    first = cards.read_card(path)
    first["classes"].append("dog")  # a caller's change stays its own
    reads = []
    monkeypatch.setattr(cards, "_read_card_file", lambda p: reads.append(p) or {"classes": ["new"]})
    assert cards.read_card(path)["classes"] == CLASSES and reads == []  # same file version: no read at all
    path.write_bytes(path.read_bytes())  # rewritten: a new mtime, so the card is read again
    os.utime(path, ns=(1, 1))
    assert cards.read_card(path)["classes"] == ["new"] and len(reads) == 1


def test_the_export_step_reads_cards_without_loading_a_tensor(run_dir, tmp_path, monkeypatch):
    from core.app import services
    from core.results import loading, metrics

    metrics.evaluate_run(run_dir)  # what the Evaluate step leaves behind (evaluation.json)
    services.export_files(run_dir)  # builds the .pt bundle once

    def no_tensors(path):
        raise AssertionError(f"tensors of {path} were loaded")
    monkeypatch.setattr(loading, "_read", no_tensors)
    # what the Export page calls on every rerun, and the zip bundle (its weights file is copied as it is)
    assert services.export_files(run_dir)["safetensors"] == run_dir / "best.safetensors"
    for fmt in ("torchscript", "onnx", "int8", "bundle"):
        services.export_ready(run_dir, fmt)  # a built export, or None: either way from the header alone
    assert "Confusion matrix" in services.card_markdown(run_dir)
    with zipfile.ZipFile(formats.export(run_dir, "bundle", tmp_path / "b.zip")) as z:
        assert json.loads(z.read("model_card.json"))["architecture"][0] == "efficientnet_lite_pytorch"


def test_graph_exports_of_a_multitask_model_are_refused_before_any_work(tmp_path):
    from safetensors.torch import save

    from core.storage import cards

    path = tmp_path / "multi.safetensors"
    card = {"format": cards.FORMAT, "kind": "multitask", "backbone": "resnet18", "tasks": {"a": ["x", "y"]}}
    path.write_bytes(save({"unused": torch.zeros(1)}, metadata={cards.CARD_KEY: json.dumps(card)}))
    for fmt in ("onnx", "torchscript", "int8", "bundle"):
        with pytest.raises(ValueError, match=f"{fmt} exports describe one classifier, and this is a multitask model"):
            formats.export(path, fmt, tmp_path / f"out.{fmt}")
    with pytest.raises(ValueError, match="multi-task model ships as its .safetensors or .pt file"):
        model_card.full_card(path)
