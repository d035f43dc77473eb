"""How an image becomes a network's input: resize the shorter side, centre crop, normalise."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input: resize shorter side, centre crop, normalise."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" | "bicubic"

    def to_dict(self) -> dict:
        return {"resize_size": self.resize_size, "crop_size": self.crop_size, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(int(d["resize_size"]), int(d["crop_size"]), tuple(d["mean"]), tuple(d["std"]),
                   d.get("interpolation", "bilinear"))

    def at_size(self, image_size: int) -> "Preprocessing":
        """The same recipe for another input side (0 = unchanged), keeping the resize/crop ratio."""
        if not image_size:
            return self
        return replace(self, crop_size=image_size, resize_size=round(image_size * self.resize_size / self.crop_size))


def _pil_interp(name: str) -> int:
    return Image.BICUBIC if name == "bicubic" else Image.BILINEAR


def to_square(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Resize the shorter side to ``resize_size`` and centre-crop a square: HxWx3 uint8."""
    s = pre.resize_size
    w, h = img.size
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    img = img.resize((nw, nh), _pil_interp(pre.interpolation))
    left, top = (nw - s) // 2, (nh - s) // 2
    return np.array(img.crop((left, top, left + s, top + s)), dtype=np.uint8)
