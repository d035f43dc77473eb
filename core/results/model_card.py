"""Model cards: the card an export carries, its input contract, and the full card (evaluation, data, versions)
as JSON and as an inert Markdown page. Split out of core.results.formats, which writes the files.

Cards are read from the weights file's header (``core.storage.cards``); tensors are loaded only when a run's
evaluation is not cached yet.
"""
from __future__ import annotations

import html
import importlib.metadata
import json
import re
from pathlib import Path

from core.data.preprocess import Preprocessing
from core.models import backbones
from core.storage import cards
from core.storage.cards import weights_file
from core.results import loading as _ex
from core.i18n import _, ngettext


def run_dir_of(model_path: Path) -> Path | None:
    """The run directory behind a model path, when there is one (for split, metrics, exports/)."""
    p = Path(model_path)
    cand = p if p.is_dir() else p.parent
    return cand if (cand / "config.json").exists() and weights_file(cand).exists() else None


def split_of(model_path: Path):
    """The run's train/validation split behind a model path, or None for a loose model file."""
    run = run_dir_of(model_path)
    if run is None or not (run / "split.json").exists():
        return None
    from core.data.datasets import Split

    return Split.from_dict(json.loads((run / "split.json").read_text()))


def input_contract(card: dict) -> dict:
    """What an exported graph of the model with this card expects as input and returns."""
    pre = Preprocessing.from_dict(card["preprocessing"])
    return {"name": "image", "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0], "channels": "RGB",
            "height": pre.crop_size, "width": pre.crop_size,
            "steps": [f"resize the shorter side to {pre.resize_size} px ({pre.interpolation})",
                      f"centre-crop {pre.resize_size}x{pre.resize_size}, then {pre.crop_size}x{pre.crop_size}",
                      "scale to [0, 1]; mean/std normalisation is inside the model"],
            "output": {"name": "logits", "shape": ["batch", len(card["classes"])],
                       "meaning": "unnormalised scores; softmax gives probabilities; index i is classes[i]"}}


def require_classifier(card: dict, what: str) -> None:
    """Refuse (naming the way out) a multi-task or adapted-backbone card where one classifier is needed."""
    kind = cards.card_kind(card)
    if kind != "classifier":
        raise ValueError(_("{what} describe one classifier, and this is a {kind} model: a multi-task model ships "
                           "as its .safetensors or .pt file (core.results.loading.load_model predicts every "
                           "task); an adapted backbone is fine-tuned into a classifier first").format(
                             what=what, kind=kind))


def export_card(card: dict, **extra) -> dict:
    """The card an export carries: the model's own, its input contract, and the registry's facts to rebuild it."""
    require_classifier(card, _("exported graphs, the bundle and the full model card"))
    spec = backbones.get(card["backbone"])  # an adapted backbone resolves to its base's facts
    return {**card, "input": input_contract(card), "head_module": spec.head,
            "base_backbone": backbones.base_of(card["backbone"]), "architecture": list(spec.architecture),
            "packages": list(spec.packages), **extra}


def _dist_name(requirement: str) -> str:
    """The distribution a pip requirement names: "efficientnet-lite-pytorch==0.1.0" -> "efficientnet-lite-pytorch"."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def lib_versions(backbone: str) -> dict:
    """Library versions an export records: the core ones, the bundle's and the backbone's own packages."""
    out = _ex.versions()
    extra = tuple(_dist_name(r) for r in backbones.get(backbone).packages)
    for dist in ("pillow", "safetensors", "numpy", "scikit-learn", "onnx", "onnxruntime") + extra:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def requirements(backbone: str) -> str:
    """requirements.txt of a bundle's predict.py: only what it imports, at least the versions used, and the
    backbone's own packages as its registry entry pins them."""
    v = lib_versions(backbone)
    base = lambda s: s.split("+")[0]
    lines = [f"torch>={base(v['torch'])}", f"torchvision>={base(v['torchvision'])}",
             f"pillow>={v.get('pillow', '9.0')}", f"safetensors>={v.get('safetensors', '0.4')}",
             "pillow-heif>=0.18"]  # HEIC/HEIF photos, as the app reads them
    lines += list(backbones.get(backbone).packages)
    return "\n".join(lines) + "\n"


def full_card(model_path: str | Path) -> dict:
    """The card with evaluation (metrics, confusion matrix), data summary and library versions. Reads the
    card from the weights file's header: tensors are loaded only when the run's evaluation is not cached yet."""
    model_path = Path(model_path)
    own = cards.read_card(model_path)
    card = export_card(own)
    card["versions"] = {"trained_with": own.get("versions", {}), "exported_with": lib_versions(card["backbone"])}
    run = run_dir_of(model_path)
    split = split_of(model_path)
    if run is not None and split is not None:
        from core.results.metrics import evaluate_run

        rep = evaluate_run(run)
        card["evaluation"] = {k: rep[k] for k in ("accuracy", "per_class", "averages", "confusion", "classes")}
        card["evaluation"]["on"] = f"validation split, {len(split.val)} images"
        count = lambda items: {c: sum(1 for _, y in items if y == i) for i, c in enumerate(split.classes)}
        extra = json.loads((run / "split.json").read_text())
        card["data"] = {"source": own.get("config", {}).get("data"), "n_train": len(split.train),
                        "n_val": len(split.val), "train_per_class": count(split.train),
                        "val_per_class": count(split.val), "content_hash": extra.get("content_hash"),
                        "skipped_files": len(extra.get("skipped", []))}
    return card


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")


def md_text(text) -> str:
    """User data (class names, paths) as inert Markdown text: no link, image, HTML or table break."""
    s = html.escape(" ".join(str(text).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s)


def card_markdown(card: dict) -> str:
    """The model card as a readable Markdown page in the current language (user-given names are escaped; the
    JSON card's field names and the training configuration stay English)."""
    pre, cfg = card["preprocessing"], card.get("config", {})
    n = card["num_classes"]
    lines = [ngettext("# Model card: {backbone} for {n} class", "# Model card: {backbone} for {n} classes", n).format(
                 backbone=card["backbone"], n=n), "",
             _("Exported by Transfer Studio."), "", _("## Classes"), "",
             ", ".join(md_text(c) for c in card["classes"]), "", _("## Input"), "",
             _("- resize the shorter side to {resize} px ({interpolation}), centre-crop {crop}x{crop}").format(
                 resize=pre["resize_size"], interpolation=pre["interpolation"], crop=pre["crop_size"]),
             _("- normalise with mean {mean} and std {std} (predict.py does this)").format(mean=pre["mean"],
                                                                                         std=pre["std"]), ""]
    ev = card.get("evaluation")
    if ev:
        n_val = (card.get("data") or {}).get("n_val")
        on = ev["on"] if n_val is None else ngettext("validation split, {n} image", "validation split, {n} images",
                                                     n_val).format(n=n_val)
        lines += [_("## Evaluation ({on})").format(on=on), "",
                  _("Accuracy: **{accuracy:.4f}**").format(accuracy=ev["accuracy"]), "",
                  _("| class | precision | recall | F1 | support |"), "|---|---|---|---|---|"]
        lines += [f"| {md_text(r['class'])} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                  for r in ev["per_class"]]
        for name, a in ev["averages"].items():
            lines.append(_("| *{name} avg* | {precision:.3f} | {recall:.3f} | {f1:.3f} | |").format(
                name=name, precision=a["precision"], recall=a["recall"], f1=a["f1"]))
        lines += ["", _("Confusion matrix (rows: true class, columns: predicted):"), "",
                  _("| true \\ pred |") + " " + " | ".join(md_text(c) for c in ev["classes"]) + " |",
                  "|---" * (len(ev["classes"]) + 1) + "|"]
        lines += [f"| {md_text(c)} | " + " | ".join(str(v) for v in row) + " |"
                  for c, row in zip(ev["classes"], ev["confusion"])]
        lines.append("")
    elif card.get("metrics"):
        lines += [_("## Metrics"), ""] + [f"- {k}: {v}" for k, v in card["metrics"].items()] + [""]
    d = card.get("data")
    if d:
        lines += [_("## Data"), "", _("- source: {source}").format(source=md_text(d["source"])),
                  _("- {n_train} training and {n_val} validation images; {skipped} files skipped at ingestion").format(
                      n_train=d["n_train"], n_val=d["n_val"], skipped=d["skipped_files"]),
                  _("- content hash: `{hash}`").format(hash=d["content_hash"]), "",
                  _("| class | train | val |"), "|---|---|---|"]
        lines += [f"| {md_text(c)} | {d['train_per_class'][c]} | {d['val_per_class'][c]} |" for c in d["train_per_class"]]
        lines.append("")
    lines += [_("## Training configuration"), "", "```json", json.dumps(cfg, indent=2, sort_keys=True), "```", "",
              _("## Library versions"), "", "```json", json.dumps(card.get("versions", {}), indent=2), "```", "",
              _("## Use"), "", "```", "pip install -r requirements.txt", "python predict.py IMAGE_OR_FOLDER --top-k 3",
              "```", ""]
    return "\n".join(lines)
