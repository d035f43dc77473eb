"""Exports of a text classifier (issue 17): safetensors with the tokenizer and card, pt, ONNX, and the bundle.

``core.results.formats.export`` hands text models here. The encoder's tokenizer and config files travel in a
``tokenizer/`` folder beside the weights (``core.results.loading.load_text`` reads it), so an export predicts
with no registry and no network. The ONNX graph takes ``input_ids`` (int64, batch x sequence, padded with the
card's ``pad_id``; both axes dynamic) and returns logits; padding is masked inside the graph. Each ONNX export is
checked in onnxruntime against torch on texts of different lengths before it is kept.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

from core.i18n import _, ngettext
from core.models import text_backbones
from core.results import loading
from core.storage import runs, workspace
from core.storage.cards import read_card, weights_file

TEXT_FORMATS = ("safetensors", "pt", "onnx", "bundle")
SUFFIXES = {"safetensors": ".safetensors", "pt": ".pt", "onnx": ".onnx", "bundle": ".zip"}
ONNX_OPSET = 17
CHECK_TEXTS = ("a short one", "a somewhat longer sentence to check the dynamic sequence length of the graph",
               "third text", "")


def is_text_model(model_path: str | Path) -> bool:
    """Whether a run directory or model file holds a text classifier (read from the card, no tensors)."""
    return read_card(model_path).get("modality") == "text"


def default_path(model_path: str | Path, fmt: str) -> Path:
    """``<run>/exports/<backbone><suffix>``, or a per-file workspace folder for a loose model file."""
    model_path = Path(model_path)
    run = model_path if model_path.is_dir() else None
    if run is None:
        src = weights_file(model_path).resolve()
        folder = workspace.sub("exports") / f"{src.stem}-{hashlib.sha256(str(src).encode()).hexdigest()[:10]}"
    else:
        folder = run / "exports"
    return folder / f"{read_card(model_path)['backbone']}{SUFFIXES[fmt]}"


def export(model_path: str | Path, fmt: str, out: str | Path | None = None, reuse: bool = True) -> Path:
    """Write a text model as ``fmt`` to ``out`` (default: ``default_path``); returns the file."""
    if fmt not in TEXT_FORMATS:
        raise ValueError(_("a text classifier exports as {formats}; got {fmt!r} (TorchScript and int8 are "
                           "image-only for now: use onnx for a graph)").format(formats=", ".join(TEXT_FORMATS),
                                                                              fmt=fmt))
    model_path = Path(model_path)
    src = weights_file(model_path)
    target = Path(out) if out else default_path(model_path, fmt)
    if out is None and reuse and target.exists() and target.stat().st_mtime >= src.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lm = loading.load_model(model_path)
    if fmt == "safetensors":
        loading.save_safetensors(lm.model, lm.card, target)
        save_tokenizer(lm, target.parent / loading.TOKENIZER_DIR)
    elif fmt == "pt":
        payload = {"format": loading.FORMAT, "card": json.dumps(lm.card), "state_dict": loading._state(lm.model)}
        runs.atomic_save(target, lambda tmp: torch.save(payload, tmp))
        save_tokenizer(lm, target.parent / loading.TOKENIZER_DIR)
    elif fmt == "onnx":
        check = save_onnx(lm, target)
        runs.atomic_write_text(check_file(target), json.dumps(check))
    else:
        save_bundle(lm, target)
    return target


def ready(model_path: str | Path, fmt: str) -> Path | None:
    """The default export of a text model in ``fmt`` when it is on disk and at least as new as its weights."""
    path, src = default_path(model_path, fmt), weights_file(model_path)
    if fmt in ("safetensors", "pt") and not (path.parent / loading.TOKENIZER_DIR / "tokenizer.json").exists():
        return None  # the tokenizer travels with these two: without it the export is not complete
    return path if path.exists() and path.stat().st_mtime >= src.stat().st_mtime else None


def check_file(onnx_path: Path) -> Path:
    """Where the onnxruntime check of an ONNX export is kept: ``<file>.check.json`` beside it."""
    return onnx_path.with_name(onnx_path.name + ".check.json")


def onnx_check(onnx_path: str | Path) -> dict | None:
    """The onnxruntime-vs-torch check recorded when an ONNX export was written ({max_abs_diff, batches}), if any."""
    f = check_file(Path(onnx_path))
    return json.loads(f.read_text()) if f.exists() else None


def tokenizer_zip(model_path: str | Path) -> Path:
    """``<backbone>-tokenizer.zip`` beside the safetensors export: its ``tokenizer/`` folder, to unzip beside the
    downloaded .safetensors file (made, with that export, when missing or older than the weights)."""
    weights = export(model_path, "safetensors")
    folder = weights.parent / loading.TOKENIZER_DIR
    target = weights.with_name(f"{weights.stem}-tokenizer.zip")
    if target.exists() and target.stat().st_mtime >= weights.stat().st_mtime:
        return target

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.iterdir()):
                z.write(f, f"{loading.TOKENIZER_DIR}/{f.name}")
    runs.atomic_save(target, write)
    return target


def save_tokenizer(lm, folder: Path) -> None:
    """The tokenizer and the encoder's config (to rebuild the architecture) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    lm.tokenizer.save_pretrained(str(folder))
    lm.model.body.model.config.save_pretrained(str(folder))


class _Graph(torch.nn.Module):
    """The classifier as the ONNX graph sees it: token ids in, logits out (padding masked inside)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids)


def save_onnx(lm, target: Path) -> dict:
    """ONNX with dynamic batch and sequence axes, checked in onnxruntime against torch; returns the check."""
    import onnx

    model = _Graph(lm.model).eval()
    example = text_backbones.tokenize(lm.tokenizer, ["an example text for tracing", "short"], lm.max_length)
    tmp = Path(tempfile.mkdtemp(prefix="onnx-", dir=workspace.sub("uploads"))) / "model.onnx"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on transformers' shape checks; check_onnx is the proof
            torch.onnx.export(model, (example,), str(tmp), input_names=["input_ids"], output_names=["logits"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        proto = onnx.load(str(tmp))
        card = {**lm.card, "input": {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"],
                                     "pad_id": lm.model.body.pad_id, "max_length": lm.max_length,
                                     "tokenizer": lm.card["preprocessing"]["tokenizer"]}}
        onnx.helper.set_model_props(proto, {loading.CARD_KEY: json.dumps(card)})
        onnx.save(proto, str(tmp))
        check = check_onnx(lm, tmp)
        if check["max_abs_diff"] > 1e-3:
            raise RuntimeError(_("the ONNX graph disagrees with torch by {diff:.2e} (at most 1e-3 expected); keep "
                                 "the safetensors export and report this model's backbone").format(
                                     diff=check["max_abs_diff"]))
        runs.atomic_save(target, lambda t: shutil.copyfile(tmp, t))
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return check


def check_onnx(lm, path: Path, texts=CHECK_TEXTS) -> dict:
    """Largest |logit difference| between onnxruntime and torch, per batch of texts of different lengths."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (list(texts), list(texts[:1])):  # two batch sizes and two sequence lengths
        ids = text_backbones.tokenize(lm.tokenizer, batch, lm.max_length)
        with torch.no_grad():
            ref = lm.model(ids).float().numpy()
        got = sess.run(["logits"], {"input_ids": ids.numpy()})[0]
        worst = max(worst, float(abs(ref - got).max()))
    return {"max_abs_diff": worst, "batches": 2}


def save_bundle(lm, target: Path) -> None:
    """The zip: model.safetensors, tokenizer/, model_card.json, MODEL_CARD.md, predict.py, requirements.txt."""
    with tempfile.TemporaryDirectory(dir=workspace.sub("uploads")) as d:
        save_tokenizer(lm, Path(d) / "tokenizer")
        card = {**lm.card, "pad_id": lm.model.body.pad_id}

        def write(tmp: str) -> None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("model.safetensors", loading.safetensors_bytes(lm.model, lm.card),
                           compress_type=zipfile.ZIP_STORED)
                for f in sorted((Path(d) / "tokenizer").iterdir()):
                    z.write(f, f"tokenizer/{f.name}")
                z.writestr("model_card.json", json.dumps(card, indent=2))
                z.writestr("MODEL_CARD.md", card_markdown(card))
                z.writestr("predict.py", PREDICT_PY)
                z.writestr("requirements.txt", requirements())
        runs.atomic_save(target, write)


def requirements() -> str:
    """What the bundle's predict.py imports, at least the versions used here."""
    import importlib.metadata as md

    v = lambda d: md.version(d).split("+")[0]  # noqa: E731
    return (f"torch>={v('torch')}\ntransformers>={v('transformers')}\ntokenizers>={v('tokenizers')}\n"
            f"safetensors>={v('safetensors')}\n")


def card_markdown(card: dict) -> str:
    """A short Markdown model card for a text classifier (user-given names escaped)."""
    from core.results.model_card import md_text

    cfg, m = card.get("config", {}), card.get("metrics", {})
    n = card["num_classes"]
    return "\n".join([
        ngettext("# Model card: {backbone} text classifier for {n} class",
                 "# Model card: {backbone} text classifier for {n} classes", n).format(backbone=card["backbone"], n=n),
        "", _("Exported by Transfer Studio."), "", _("## Classes"), "", ", ".join(md_text(c) for c in card["classes"]),
        "", _("## Input"), "",
        _("- text, tokenised by `{tokenizer}` (files in tokenizer/), cut at {max_length} tokens; the sentence "
          "embedding is the mean over real tokens").format(tokenizer=card["preprocessing"]["tokenizer"],
                                                          max_length=card["preprocessing"]["max_length"]), "",
        _("## Metrics (validation split)"), "", *[f"- {k}: {v}" for k, v in m.items()], "",
        _("## Training configuration"), "", "```json", json.dumps(cfg, indent=2, sort_keys=True), "```", "",
        _("## Use"), "", "```", "pip install -r requirements.txt", 'python predict.py "some text" --top-k 3',
        "python predict.py --file texts.txt   # one text per line", "```", ""])


PREDICT_PY = '''"""Classify texts with this exported model; needs only torch, transformers and safetensors (no network).

    python predict.py "some text" "another text" --top-k 3
    python predict.py --file texts.txt          # one text per line; blank lines are skipped

Prints one JSON line per text, in input order: {"text", "label", "confidence", "top_k"}.
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

HERE = Path(__file__).resolve().parent


def load():
    card = json.loads((HERE / "model_card.json").read_text(encoding="utf-8"))
    config = AutoConfig.from_pretrained(HERE / "tokenizer", local_files_only=True)
    encoder = AutoModel.from_config(config, add_pooling_layer=False)
    state = load_file(str(HERE / "model.safetensors"))
    encoder.load_state_dict({k[len("body.model."):]: v for k, v in state.items() if k.startswith("body.model.")},
                            strict=False)  # position_ids is a buffer some versions do not save
    head = torch.nn.Linear(state["head.weight"].shape[1], state["head.weight"].shape[0])
    head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    tok = AutoTokenizer.from_pretrained(HERE / "tokenizer", local_files_only=True)
    return card, encoder.eval(), head.eval(), tok


@torch.no_grad()
def predict(texts, card, encoder, head, tok, top_k=3):
    enc = tok(texts, padding=True, truncation=True, max_length=card["preprocessing"]["max_length"],
              return_tensors="pt")
    mask = enc["attention_mask"]
    hidden = encoder(input_ids=enc["input_ids"], attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    probs = torch.softmax(head((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)), dim=1)
    k = min(top_k, len(card["classes"]))
    for text, row in zip(texts, probs):
        p, i = row.topk(k)
        top = [[card["classes"][j], round(float(q), 6)] for q, j in zip(p.tolist(), i.tolist())]
        yield {"text": text, "label": top[0][0], "confidence": top[0][1], "top_k": top}


def main():
    ap = argparse.ArgumentParser(description="Classify texts with this exported model.")
    ap.add_argument("texts", nargs="*", help="texts to classify")
    ap.add_argument("--file", help="a UTF-8 file with one text per line")
    ap.add_argument("--top-k", type=int, default=3, help="classes to list per text (default 3)")
    a = ap.parse_args()
    texts = list(a.texts)
    if a.file:
        texts += [line for line in Path(a.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        ap.error("give texts to classify, or --file FILE")
    card, encoder, head, tok = load()
    for i in range(0, len(texts), 64):
        for row in predict(texts[i:i + 64], card, encoder, head, tok, a.top_k):
            print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
'''
