"""Export a trained model to other formats, and batch-predict a zip of images.

Formats (``FORMATS``): ``safetensors`` (weights + card, the app's own file), ``pt`` (one torch.save
bundle), ``torchscript``, ``onnx``, ``int8`` (static quantization checked against fp32 on the validation split, TorchScript; core.results.quantize) and
``bundle`` (a zip with weights, model card in JSON and Markdown, a standalone predict.py and its
requirements).

TorchScript, ONNX and int8 exports take *unnormalised* input: float32 RGB in [0, 1], NCHW, at the
card's crop size, after "resize the shorter side, centre-crop". Mean/std normalisation is inside
the exported graph, so a consumer needs no knowledge of the backbone's statistics; the contract is
written into the card (``card["input"]``) embedded in each file. Exported cards also say how to rebuild
the network without Transfer Studio (``architecture``, ``head_module``, ``packages``, from the backbone's
registry entry; an adapted backbone rebuilds as its ``base_backbone``).

Cards are read from the weights file's header (``core.storage.cards``) and built by ``core.results.model_card``;
a model's tensors are loaded only by the exports that compute with them.

Exports are written to disk (by default ``<run>/exports/``) so that a page can hand an open file to
``st.download_button`` instead of holding a copy of a large model in memory.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import shutil
import statistics
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models import backbones
from core.storage import cards, runs
from core.storage import workspace
from core.storage.cards import weights_file
from core.results import loading as _ex
from core.results import quantize
from core.results.loading import LoadedModel, load_model
from core.results.tta import TTA, mode_of as tta_mode, note as tta_note  # TTA: flip / multi-crop inside a graph
from core.results.model_card import (card_markdown, export_card, full_card, require_classifier, requirements,
                                     run_dir_of, split_of)
from core.i18n import _

FORMATS = ("safetensors", "pt", "torchscript", "onnx", "int8", "bundle")
SUFFIXES = {"safetensors": ".safetensors", "pt": ".pt", "torchscript": ".torchscript.pt", "onnx": ".onnx",
            "int8": ".int8.torchscript.pt", "bundle": ".zip"}
ONNX_OPSET = 17  # broadly supported by onnxruntime, TensorRT and OpenVINO releases of the last years
CARD_FILE = "card.json"  # name of the card inside TorchScript archives (_extra_files)
TEMPLATE = Path(__file__).resolve().parents[2] / "assets" / "predict_template.py"


class Normalised(nn.Module):
    """A TransferNet that takes [0, 1] RGB input and normalises it itself: the exported contract."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


# --- sources -------------------------------------------------------------------------------------

def exports_dir(model_path: str | Path) -> Path:
    """Where exports of this model go by default: ``<run>/exports``, else a per-file workspace folder."""
    run = run_dir_of(Path(model_path))
    if run:
        out = run / "exports"
    else:
        # Two model files may share a backbone (and so a default file name): one folder per source file.
        src = weights_file(model_path).resolve()
        out = workspace.sub("exports") / f"{src.stem}-{hashlib.sha256(str(src).encode()).hexdigest()[:10]}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _stem(backbone: str) -> str:
    """A file-name stem for a backbone: adapted names carry colons and a long run id."""
    base = backbones.base_of(backbone)
    return base if base == backbone else f"{base}-adapted"


def default_path(model_path: str | Path, fmt: str, tta: bool | str = False) -> Path:
    """The file ``export(model_path, fmt, tta=tta)`` writes when no ``out`` is given."""
    _check_fmt(fmt)
    card = cards.read_card(model_path)
    tag = {"none": "", "flip": "-tta", "multicrop": "-multicrop"}[tta_mode(tta)]
    return exports_dir(model_path) / f"{_stem(card['backbone'])}{tag}{SUFFIXES[fmt]}"


def _current(path: Path, src: Path) -> bool:
    """Whether an export on disk is at least as new as the weights it came from."""
    return path.exists() and src.exists() and path.stat().st_mtime >= src.stat().st_mtime


def ready(model_path: str | Path, fmt: str, tta: bool | str = False) -> Path | None:
    """The default export of this model in ``fmt`` (with ``tta`` in its graph) when it is on disk and current with
    its weights, else None."""
    path = default_path(model_path, fmt, tta)
    return path if _current(path, weights_file(model_path)) else None


def existing(model_path: str | Path) -> list[dict]:
    """Exports already on disk for this model, current with its weights: {'format', 'path', 'size_bytes'}."""
    found = ((fmt, ready(model_path, fmt)) for fmt in FORMATS)
    return [{"format": fmt, "path": path, "size_bytes": path.stat().st_size} for fmt, path in found if path]


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(_("unknown export format {fmt!r}; choose one of {formats}").format(
                             fmt=fmt, formats=', '.join(FORMATS)))


def _every_nth(items: list, n: int) -> list:
    """Up to n items spread evenly over the list (keeps classes mixed in sorted lists)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def unit_batch(lm: LoadedModel, paths: list[str]) -> torch.Tensor:
    """Images as the exported contract wants them: float [0, 1] NCHW at the crop size."""
    from core.data.datasets import eval_transform, square_from_file

    pre = lm.preprocessing
    crop = eval_transform(pre)
    u8 = [crop(torch.from_numpy(square_from_file(p, pre)).permute(2, 0, 1)) for p in paths]
    return torch.stack(u8).float() / 255.0


# --- export --------------------------------------------------------------------------------------

def export(model_path: str | Path, fmt: str, out: str | Path | None = None, reuse: bool = True,
           calibration: list[str] | None = None, tta: bool | str = False) -> Path:
    """Write ``model_path`` (run dir, .safetensors or .pt) as ``fmt`` to ``out``; returns the file.

    Without ``out`` the file goes to ``exports_dir(model_path)`` and an export newer than the weights
    is reused. ``calibration`` (image paths) is for ``int8`` when the model has no run directory.
    ``tta`` (torchscript, onnx): the graph averages the probabilities of the image's views (``TTA``): "flip" (or
    True) the image and its mirror, "multicrop" the centre and four corners of the enlarged image.
    """
    _check_fmt(fmt)
    tta = tta_mode(tta)
    if tta != "none" and fmt not in ("torchscript", "onnx"):
        raise ValueError(_("test-time augmentation is built into torchscript and onnx exports; got {fmt!r} — "
                           "export torchscript or onnx with tta, or {fmt} without it").format(fmt=fmt))
    model_path = Path(model_path)
    src = weights_file(model_path)
    if not model_path.exists():
        raise ValueError(_("{model_path} does not exist; pass a run directory, a .safetensors or a .pt model file").format(
                             model_path=model_path))
    if not src.exists():
        raise ValueError(_("{model_path} has no weights yet (expected {name}); train at least one epoch").format(
                             model_path=model_path, name=src.name))
    if cards.read_card(src).get("modality") == "text":  # issue 17: the tokenizer travels with the weights
        from core.results import text_export

        return text_export.export(model_path, fmt, out, reuse)
    if fmt not in ("safetensors", "pt"):  # refused before any work, not after a long trace
        require_classifier(cards.read_card(src), _("{fmt} exports").format(fmt=fmt))
    target = Path(out) if out else default_path(model_path, fmt, tta)
    if out is None and reuse and _current(target, src):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".safetensors" and fmt in ("safetensors", "bundle"):  # the file itself goes out: no tensors loaded
        if fmt == "safetensors":
            runs.atomic_save(target, lambda tmp: shutil.copyfile(src, tmp))
        else:
            _save_bundle(model_path, target)
        return target
    lm = load_model(model_path)
    if fmt == "safetensors":
        _ex.save_safetensors(lm.model, lm.card, target)
    elif fmt == "pt":
        payload = {"format": _ex.FORMAT, "card": json.dumps(lm.card), "state_dict": _ex._state(lm.model)}
        runs.atomic_save(target, lambda tmp: torch.save(payload, tmp))
    elif fmt == "torchscript":
        _save_torchscript(lm, _deployable(lm, tta), target, {"quantization": None, "tta": _tta_note(tta)})
    elif fmt == "onnx":
        _save_onnx(lm, target, tta)
    elif fmt == "int8":
        module, report = _int8(lm, model_path, calibration)
        _save_torchscript(lm, module, target, {"quantization": report})
    else:
        _save_bundle(model_path, target, lm)
    return target


def _deployable(lm: LoadedModel, tta: bool | str = False) -> nn.Module:
    pre = lm.preprocessing
    net = Normalised(copy.deepcopy(lm.model).float().cpu().eval(), pre.mean, pre.std).eval()
    return TTA(net, tta_mode(tta)).eval() if tta_mode(tta) != "none" else net


def _tta_note(tta: bool | str) -> str | None:
    """What the card says about test-time augmentation inside the graph (stored English, like the card)."""
    return tta_note(tta)


def _save_torchscript(lm: LoadedModel, module: nn.Module, target: Path, extra: dict) -> None:
    size = lm.preprocessing.crop_size
    example = torch.rand(1, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape arithmetic are expected
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
        traced = torch.jit.freeze(traced) if extra.get("quantization") is None else traced
    files = {CARD_FILE: json.dumps(export_card(lm.card, **extra))}
    runs.atomic_save(target, lambda tmp: torch.jit.save(traced, tmp, _extra_files=files))


def _avg_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of adaptive average pooling along one axis (as torch: bin i averages the inputs
    floor(i * n_in / n_out) up to ceil((i + 1) * n_in / n_out))."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-(i + 1) * n_in // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class _PoolAsMatmul(nn.Module):
    """AdaptiveAvgPool2d at one known input size, as two matrix products: the ONNX exporter refuses adaptive
    pooling whose output size does not divide the input (VGG-16's 7x7 pool after a 2x2 map at 64 px)."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", _avg_matrix(in_hw[0], out_hw[0]))
        self.register_buffer("cols", _avg_matrix(in_hw[1], out_hw[1]).T.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows @ x @ self.cols


def _onnx_ready(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """Swap (in place) each adaptive average pool the exporter cannot express at this input size; same function."""
    pools = {n: m for n, m in module.named_modules()
             if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size not in (1, (1, 1))}  # 1 divides every size
    if not pools:
        return module  # most backbones: no dry run needed
    seen: dict[str, tuple] = {}

    def record(name: str):
        def hook(_m, inp, out) -> None:  # a hook that returns something would replace the output
            seen[name] = (tuple(inp[0].shape[-2:]), tuple(out.shape[-2:]))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in pools.items()]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    for name, (i, o) in seen.items():
        if i[0] % o[0] or i[1] % o[1]:
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, child, _PoolAsMatmul(i, o))
    return module


def _save_onnx(lm: LoadedModel, target: Path, tta: bool | str = False) -> None:
    import onnx

    size = lm.preprocessing.crop_size
    example = torch.rand(1, 3, size, size)
    buf = io.BytesIO()
    # Not under no_grad: there nn.MultiheadAttention takes its fused fast path (ViT), an operator ONNX lacks.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: the dynamo one needs onnxscript, which is not a dependency.
        torch.onnx.export(_onnx_ready(_deployable(lm, tta), example), (example,), buf, dynamo=False,
                          opset_version=ONNX_OPSET, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    card = onnx.ModelProto()
    entry = card.metadata_props.add()
    entry.key, entry.value = _ex.CARD_KEY, json.dumps(export_card(lm.card, quantization=None, tta=_tta_note(tta)))
    # Protobuf merges concatenated messages (repeated fields append), so the card joins the exported model
    # without parsing and re-serialising every weight (seconds and a second copy in memory on VGG-16).
    data = buf.getvalue() + card.SerializeToString()
    onnx.checker.check_model(data)
    runs.atomic_write_bytes(target, data)


CALIBRATION_IMAGES = 256  # up to this many, spread over the classes of train + validation (no labels are used)
QAT_IMAGES = 512          # training images the quantization-aware fallback learns from (memory: 0.6 GB at 224 px)


def _stratified(items: list[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    """Up to n items taking the classes in turn, each class's items spread over its list."""
    by_class: dict[int, list] = {}
    for it in items:
        by_class.setdefault(it[1], []).append(it)
    per = -(-n // max(len(by_class), 1))
    spread = [_every_nth(v, per) for v in by_class.values()]
    out = [col[i] for i in range(per) for col in spread if i < len(col)]
    return out[:n]


def _int8(lm: LoadedModel, model_path: Path, calibration: list[str] | None) -> tuple[nn.Module, dict]:
    """The int8 module and what it cost: checked against fp32 on the validation split when there is one."""
    split = split_of(model_path)
    images = calibration or ([p for p, _ in _stratified(split.train + split.val, CALIBRATION_IMAGES)] if split else [])
    if not images:
        raise ValueError(_("int8 quantization needs calibration images: export from a run directory (its training "
                           "images are used) or pass calibration=[image paths]"))
    batches = [unit_batch(lm, images[i:i + 32]) for i in range(0, len(images), 32)]
    scheme = ("static int8 (FX graph mode): per-channel weights, BatchNorm folded, histogram-calibrated uint8 "
              "activations; quantization-aware fine-tuning when post-training loses more than 1 point")
    if split is None or not split.val:  # a loose model file: nothing to measure against
        return quantize.ptq(_deployable(lm), batches), {"scheme": scheme, "method": "post-training, all layers",
                                                        "engine": quantize.engine(), "calibration_images": len(images)}
    val = _every_nth(split.val, 400)
    val_xy = (unit_batch(lm, [p for p, _ in val]), torch.tensor([y for _, y in val]))
    train = _every_nth(split.train, QAT_IMAGES)
    train_x, train_y = unit_batch(lm, [p for p, _ in train]), torch.tensor([y for _, y in train])

    def epochs():  # a fixed shuffle per call: the fallback is reproducible
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(len(train_y)))
        return ((train_x[order[i:i + 16]], train_y[order[i:i + 16]]) for i in range(0, len(order), 16))

    module, report = quantize.quantize_to_match(_deployable(lm), batches, val_xy, epochs)
    return module, {"scheme": scheme, **report}


def int8_summary(int8_path: str | Path) -> dict | None:
    """The quantization report an int8 export carries (fp32 and int8 validation accuracy, method), read from
    the file's card without loading the model; None for a file without one."""
    with zipfile.ZipFile(int8_path) as z:
        name = next((n for n in z.namelist() if n.endswith("/extra/" + CARD_FILE)), None)
        return json.loads(z.read(name)).get("quantization") if name else None


# --- loading exports back ------------------------------------------------------------------------

class ExportedModel:
    """A TorchScript / ONNX / int8 export loaded back: ``logits(x)`` on [0, 1] NCHW float input."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.suffix == ".onnx":
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            # the session has parsed the file already: a second parse (onnx.load) costs seconds on VGG-16
            meta = self._session.get_modelmeta().custom_metadata_map
            self.card = json.loads(meta.get(_ex.CARD_KEY, "{}"))
            self._module = None
        else:
            files = {CARD_FILE: ""}
            with zipfile.ZipFile(self.path) as z:  # the engine must be set before the int8 weights unpack
                card_name = next((n for n in z.namelist() if n.endswith("/extra/" + CARD_FILE)), None)
                early = json.loads(z.read(card_name)) if card_name else {}
            engine = (early.get("quantization") or {}).get("engine")
            if engine and engine in torch.backends.quantized.supported_engines:
                torch.backends.quantized.engine = engine
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=files)
            self.card = json.loads(files[CARD_FILE] or "{}")
            self._session = None
        if not self.card:
            raise ValueError(_("{name} carries no Transfer Studio card; was it exported by "
                               "core.results.formats.export?").format(name=self.path.name))
        self.classes = list(self.card["classes"])

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a [0, 1] float batch."""
        if self._session is not None:
            return torch.from_numpy(self._session.run(["logits"], {"image": x.numpy().astype(np.float32)})[0])
        return self._module(x).float()


def compare_outputs(model_path: str | Path, export_path: str | Path, images: list[str]) -> dict:
    """Max absolute logit difference and label agreement between an export and the PyTorch model."""
    lm = load_model(model_path)
    ex = ExportedModel(export_path)
    x = unit_batch(lm, images)
    with torch.no_grad():
        ref = lm.model(_normalise(x, lm)).float()
    got = ex.logits(x)
    return {"max_abs_diff": float((ref - got).abs().max()),
            "max_abs_diff_probs": float((ref.softmax(1) - got.softmax(1)).abs().max()),
            "max_abs_logit": float(ref.abs().max()),
            "agreement": float((ref.argmax(1) == got.argmax(1)).float().mean()), "n": len(images)}


def _normalise(x: torch.Tensor, lm: LoadedModel) -> torch.Tensor:
    pre = lm.preprocessing
    return (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)


def _latency_ms(fn, x: torch.Tensor, repeats: int) -> float:
    """Median wall time of one call, after a warm-up (the JIT optimises on its first calls)."""
    with torch.no_grad():
        for _try in range(2):
            fn(x)
        times = []
        for _rep in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def compare_int8(model_path: str | Path, int8_path: str | Path | None = None, repeats: int = 5,
                 max_images: int = 200) -> dict:
    """fp32 next to int8: size on disk, CPU latency per image (batch 1) and validation accuracy.

    Saved as ``int8_report.json`` beside the int8 file so a page can show it without recomputing.
    """
    model_path = Path(model_path)
    int8_path = Path(int8_path) if int8_path else export(model_path, "int8")
    split = split_of(model_path)
    if split is None or not split.val:
        raise ValueError(_("{model_path} has no validation split; compare from a run directory").format(
                             model_path=model_path))
    lm = load_model(model_path)
    q = ExportedModel(int8_path)
    val = _every_nth(split.val, max_images)
    x = unit_batch(lm, [p for p, _ in val])
    y = torch.tensor([c for _, c in val])
    fp32 = lambda b: lm.model(_normalise(b, lm))
    with torch.no_grad():
        ref = torch.cat([fp32(x[i:i + 32]) for i in range(0, len(x), 32)]).argmax(1)
        got = torch.cat([q.logits(x[i:i + 32]) for i in range(0, len(x), 32)]).argmax(1)
    one = x[:1]
    rep = {"n_val": len(val), "threads": torch.get_num_threads(),
           "fp32": {"file": weights_file(model_path).name, "size_bytes": weights_file(model_path).stat().st_size,
                    "latency_ms": _latency_ms(fp32, one, repeats), "val_accuracy": float((ref == y).float().mean())},
           "int8": {"file": int8_path.name, "size_bytes": int8_path.stat().st_size,
                    "latency_ms": _latency_ms(q.logits, one, repeats), "val_accuracy": float((got == y).float().mean())},
           "agreement": float((ref == got).float().mean())}
    runs.atomic_write_text(int8_path.with_name("int8_report.json"), json.dumps(rep, indent=2))
    return rep


# --- the bundle ----------------------------------------------------------------------------------

def _save_bundle(model_path: Path, target: Path, lm: LoadedModel | None = None) -> None:
    """The zip: the weights (the .safetensors file as it is; ``lm`` rewrites a .pt source), the cards,
    predict.py and its requirements.txt."""
    card = full_card(model_path)
    src = weights_file(model_path)

    def write(tmp: str) -> None:
        # ZIP_STORED for the weights: they barely compress, and storing avoids a second pass over them.
        with zipfile.ZipFile(tmp, "w") as z:
            if src.suffix == ".safetensors":
                z.write(src, "model.safetensors", compress_type=zipfile.ZIP_STORED)
            else:
                z.writestr("model.safetensors", _ex.safetensors_bytes(lm.model, lm.card))
            z.writestr("model_card.json", json.dumps(card, indent=2), compress_type=zipfile.ZIP_DEFLATED)
            z.writestr("MODEL_CARD.md", card_markdown(card), compress_type=zipfile.ZIP_DEFLATED)
            z.write(TEMPLATE, "predict.py", compress_type=zipfile.ZIP_DEFLATED)
            z.writestr("requirements.txt", requirements(card["backbone"]), compress_type=zipfile.ZIP_DEFLATED)

    runs.atomic_save(target, write)


# --- batch prediction ----------------------------------------------------------------------------

def predict_zip(model_path: str | Path, zip_path, top_k: int = 3, batch_size: int = 32) -> str:
    """CSV text of predictions for every image in a zip: file, label, confidence, top-k, error."""
    from core.data.imageio import IMAGE_EXTENSIONS, is_image_name, open_image
    from core.data.ingest import extract_archive

    lm = load_model(model_path)
    k = max(1, min(top_k, len(lm.classes)))
    tmp = Path(tempfile.mkdtemp(prefix="predict-", dir=workspace.sub("uploads")))
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["file", "label", "confidence"] + [c for i in range(1, k + 1) for c in (f"label_{i}", f"p_{i}")]
               + ["error"])
    try:
        skipped = extract_archive(zip_path, tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and is_image_name(p.name))
        if not files:
            raise ValueError(_("the zip holds no images; expected one of {types}").format(
                types=", ".join(sorted(IMAGE_EXTENSIONS))))
        for i in range(0, len(files), batch_size):
            ok, pil = [], []
            for p in files[i:i + batch_size]:
                rel = p.relative_to(tmp).as_posix()
                try:
                    pil.append(open_image(p, min_side=lm.preprocessing.resize_size))
                    ok.append(rel)
                except ValueError as e:
                    w.writerow([rel, "", ""] + [""] * (2 * k) + [str(e)])
            for rel, pred in zip(ok, lm.predict(pil, top_k=k) if pil else []):
                w.writerow([rel, pred["label"], f"{pred['confidence']:.6f}"]
                           + [v for lab, p in pred["top_k"] for v in (lab, f"{p:.6f}")] + [""])
        for s in skipped:
            if is_image_name(s.path):
                w.writerow([s.path, "", ""] + [""] * (2 * k) + [s.reason])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out.getvalue()
