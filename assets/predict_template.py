"""Predict with a Transfer Studio model bundle, without Transfer Studio.

Usage:  python predict.py IMAGE_OR_FOLDER [...] [--top-k 3] [--max-pixels N]
Prints one JSON line per image: {"path", "label", "confidence", "top_k": [[label, p], ...]}; an image
that cannot be read (damaged, not an image, larger than --max-pixels) gets {"path", "error"} instead,
and the others are still predicted (the exit status is then 1).

Needs only torch, torchvision, pillow and safetensors, plus the packages the backbone itself needs;
see requirements.txt. The network is rebuilt from model_card.json ("architecture": the module, the
callable and its arguments that build the bare network; "head_module": the layer the classifier
replaced), so this script knows no backbone by name. The preprocessing below reproduces the app's:
resize the shorter side, centre-crop a square, centre-crop the input size, normalise.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import warnings
from pathlib import Path

import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file
from torch import nn

try:  # HEIC/HEIF photos (iPhones' camera default): pip install pillow-heif
    import pillow_heif
except ImportError:
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold, also the app's default ceiling


class TooLarge(ValueError):
    """An image whose header announces more pixels than we agree to decode."""


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
    """The untrained architecture the card describes, with a head of the card's width."""
    # e.g. ["torchvision.models", "get_model", "resnet18"]: an adapted backbone is its base network here
    module, call, *args = card["architecture"]
    fn = importlib.import_module(module)
    for attr in call.split("."):
        fn = getattr(fn, attr)
    net = fn(*args)
    old = net.get_submodule(card["head_module"])
    _set_sub(net, card["head_module"], nn.Identity())
    return TransferNet(net, nn.Linear(old.in_features, card["num_classes"]))


def load(card: dict, weights: Path) -> TransferNet:
    """The trained model: built on the meta device (no time spent on random weights the file replaces at once),
    then given the file's tensors."""
    state = load_file(str(weights))
    with torch.device("meta"):
        model = build(card)
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # a buffer the file does not hold
        model = build(card)
        model.load_state_dict(state)
    return model.float().eval()


def open_rgb(path: Path, max_pixels: int = MAX_PIXELS, min_side: int = 0) -> Image.Image:
    """The image as the person saw it: EXIF orientation applied, transparency on white. TooLarge for an
    image above ``max_pixels``, decided from its header before any pixel is decoded. With ``min_side`` a JPEG
    decodes at the smallest 1/2, 1/4 or 1/8 scale whose shorter side stays at least twice ``min_side``, as the
    app decodes it for training and predictions (Pillow's draft)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooLarge(f"too large to decode safely ({e}); downscale it, or pass --max-pixels "
                       f"if you trust the file") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise TooLarge(f"{w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,}; downscale it, "
                           f"or pass --max-pixels if you trust the file")
        scale = 2 * min_side / max(1, min(w, h))
        if min_side and scale <= 0.5:
            im.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))
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


def read_one(path: Path, pre: dict, max_pixels: int) -> tuple[torch.Tensor | None, str | None]:
    """(input tensor, None) for a readable image, (None, what went wrong) for any other file."""
    try:
        return preprocess(open_rgb(path, max_pixels, int(pre["resize_size"])), pre), None
    except TooLarge as e:
        return None, f"image refused: {e}"
    except Exception as e:  # decoders raise OSError, SyntaxError, struct.error, zlib.error...: one bad file
        # must not cost the user the predictions for all the others
        if path.suffix.lower() in (".heic", ".heif") and pillow_heif is None:
            return None, "cannot read HEIC/HEIF photos without pillow-heif: pip install pillow-heif"
        return None, (f"cannot read this image ({type(e).__name__}: {e}); expected a JPEG, PNG, WebP, BMP, "
                      f"GIF, TIFF, HEIC or AVIF file")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Predict images with this model bundle.")
    ap.add_argument("images", nargs="+", help="image files or folders")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                    help=f"largest image (width x height) to decode; default {MAX_PIXELS:,}")
    a = ap.parse_args(argv)
    # Pillow refuses twice its own limit outright: keep it in step with ours when a user raises ours.
    Image.MAX_IMAGE_PIXELS = max(a.max_pixels, MAX_PIXELS)
    card = json.loads((HERE / "model_card.json").read_text(encoding="utf-8"))
    model = load(card, HERE / "model.safetensors")
    classes, pre = card["classes"], card["preprocessing"]
    k = max(1, min(a.top_k, len(classes)))
    paths = images_in(a.images)
    status = 0
    for i in range(0, len(paths), a.batch_size):
        chunk = paths[i:i + a.batch_size]
        read = [read_one(p, pre, a.max_pixels) for p in chunk]
        good = [x for x, err in read if err is None]
        with torch.no_grad():
            probs = iter(torch.softmax(model(torch.stack(good)).float(), dim=1) if good else [])
        for p, (_, err) in zip(chunk, read):  # one line per image, in the order given
            if err is not None:
                print(json.dumps({"path": str(p), "error": err}), flush=True)
                status = 1
                continue
            conf, idx = next(probs).topk(k)
            top = [[classes[j], round(float(c), 6)] for c, j in zip(conf.tolist(), idx.tolist())]
            print(json.dumps({"path": str(p), "label": top[0][0], "confidence": top[0][1], "top_k": top}), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
