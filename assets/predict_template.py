"""Predict with a Transfer Studio model bundle, without Transfer Studio.

Usage:  python predict.py IMAGE_OR_FOLDER [...] [--top-k 3]
Prints one JSON line per image: {"path", "label", "confidence", "top_k": [[label, p], ...]}.

Needs only torch, torchvision, pillow and safetensors (plus efficientnet-lite-pytorch for the
efficientnet_lite0 backbone); see requirements.txt. The preprocessing below reproduces the app's:
resize the shorter side, centre-crop a square, centre-crop the input size, normalise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file
from torch import nn

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class TransferNet(nn.Module):
    """Same module names as in the app, so the saved state dict loads as is."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _set_sub(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def build(card: dict) -> TransferNet:
    """The untrained architecture named in the card, with a head of the card's width."""
    name = card["backbone"]
    if name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
    else:
        from torchvision.models import get_model

        net = get_model(name, weights=None)
    old = net.get_submodule(card["head_module"])
    _set_sub(net, card["head_module"], nn.Identity())
    return TransferNet(net, nn.Linear(old.in_features, card["num_classes"]))


def open_rgb(path: Path) -> Image.Image:
    """The image as the person saw it: EXIF orientation applied, transparency on white."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im) or im
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB")


def preprocess(im: Image.Image, pre: dict) -> torch.Tensor:
    """PIL image -> normalised CHW float tensor."""
    from torchvision.transforms.v2 import functional as F

    s = int(pre["resize_size"])
    w, h = im.size
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    interp = Image.BICUBIC if pre.get("interpolation") == "bicubic" else Image.BILINEAR
    im = im.resize((nw, nh), interp)
    left, top = (nw - s) // 2, (nh - s) // 2
    im = im.crop((left, top, left + s, top + s))
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(s, s, 3).permute(2, 0, 1)
    x = F.center_crop(x, [int(pre["crop_size"])])
    mean = torch.tensor(pre["mean"]).view(3, 1, 1)
    std = torch.tensor(pre["std"]).view(3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def images_in(args: list[str]) -> list[Path]:
    """Files as given; folders expanded to the images inside them (sorted)."""
    out = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Predict images with this model bundle.")
    ap.add_argument("images", nargs="+", help="image files or folders")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args(argv)
    card = json.loads((HERE / "model_card.json").read_text(encoding="utf-8"))
    model = build(card)
    model.load_state_dict(load_file(str(HERE / "model.safetensors")))
    model.eval()
    classes, pre = card["classes"], card["preprocessing"]
    k = max(1, min(a.top_k, len(classes)))
    paths = images_in(a.images)
    status = 0
    for i in range(0, len(paths), a.batch_size):
        batch, ok = [], []
        for p in paths[i:i + a.batch_size]:
            try:
                batch.append(preprocess(open_rgb(p), pre))
                ok.append(p)
            except (OSError, ValueError) as e:
                print(json.dumps({"path": str(p), "error": f"cannot read this image ({e}); "
                                  f"expected a JPEG, PNG, WebP, BMP, GIF or TIFF file"}))
                status = 1
        if not batch:
            continue
        with torch.no_grad():
            probs = torch.softmax(model(torch.stack(batch)).float(), dim=1)
        for p, row in zip(ok, probs):
            conf, idx = row.topk(k)
            top = [[classes[j], round(float(c), 6)] for c, j in zip(conf.tolist(), idx.tolist())]
            print(json.dumps({"path": str(p), "label": top[0][0], "confidence": top[0][1], "top_k": top}))
    return status


if __name__ == "__main__":
    sys.exit(main())
