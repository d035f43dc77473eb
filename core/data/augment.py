"""Training-time augmentation: named presets and custom settings, built as torchvision v2 transforms.

Every transform here works on uint8 CHW tensors taken from the decode-once cache (a square at the
backbone's resize size) and returns a uint8 CHW tensor at its crop size; normalisation happens later,
in batches on the device.

A preset is only a name for a bundle of the same settings a user can set by hand with
``augment="custom"`` and the ``aug_*`` config fields, so the preview, the trainer and the saved
config always agree on what "light" means.

Importing this module does not import torch (the UI imports it); torch and torchvision are
imported inside the functions that need them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import POLICIES, AugmentSettings
from core.i18n import _

if TYPE_CHECKING:  # only for annotations: the real import pulls in torch
    from core.data.preprocess import Preprocessing

__all__ = [
    "POLICIES",
    "PRESETS",
    "AugmentSettings",
    "augment_preview",
    "build",
    "settings_for",
]

# Colour jitter at strength 1.0: the magnitudes torchvision's reference recipes use for ImageNet.
_JITTER_AT_FULL = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}


PRESETS: dict[str, AugmentSettings] = {
    "none": AugmentSettings(),
    "light": AugmentSettings(flip=True, scale_min=0.6),
    # TrivialAugment already varies colour, contrast and geometry; adding jitter on top overdoes it.
    # (Random erasing, once part of "strong", was dropped so that every preset is a custom setting.)
    "strong": AugmentSettings(flip=True, scale_min=0.25, policy="trivialaugment"),
}


def settings_for(source: Any) -> AugmentSettings:
    """The settings meant by a preset name, an AugmentSettings, or a RunConfig (its augment + aug_* fields)."""
    if isinstance(source, AugmentSettings):
        return source.validate()
    if isinstance(source, str):
        if source in PRESETS:
            return PRESETS[source]
        if source == "custom":
            raise ValueError(_("augment='custom' needs the aug_* settings; pass the RunConfig "
                               "(or an AugmentSettings) instead of the name"))
        raise ValueError(_("{field} must be one of {choices}; got {value}").format(
            field="augment", choices=", ".join([*PRESETS, "custom"]), value=repr(source)))
    name = getattr(source, "augment", None)
    if name is None:
        raise ValueError(f"expected a preset name, an AugmentSettings or a RunConfig; "
                         f"got {type(source).__name__}")
    if name != "custom":
        return settings_for(name)
    return AugmentSettings(
        flip=source.aug_flip, rotation=source.aug_rotation, color_jitter=source.aug_color_jitter,
        scale_min=source.aug_scale_min, policy=source.aug_policy,
    ).validate()


def build(pre: "Preprocessing", source: Any):
    """A v2 transform: uint8 CHW square at ``pre.resize_size`` -> uint8 CHW at ``pre.crop_size``."""
    from torchvision.transforms import v2

    s = settings_for(source)
    c = pre.crop_size
    steps = []
    if s.rotation > 0:
        # Rotating the larger square before cropping keeps most of the black corners out of the crop.
        steps.append(v2.RandomRotation(float(s.rotation), interpolation=v2.InterpolationMode.BILINEAR))
    if s.scale_min < 1.0:
        steps.append(v2.RandomResizedCrop(c, scale=(float(s.scale_min), 1.0), antialias=True))
    else:
        steps.append(v2.CenterCrop(c))
    if s.flip:
        steps.append(v2.RandomHorizontalFlip())
    if s.color_jitter > 0:
        steps.append(v2.ColorJitter(**{k: v * s.color_jitter for k, v in _JITTER_AT_FULL.items()}))
    if s.policy == "randaugment":
        steps.append(v2.RandAugment())
    elif s.policy == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    return steps[0] if len(steps) == 1 else v2.Compose(steps)


def augment_preview(image: Any, pre: "Preprocessing | None", source: Any, n: int = 8,
                    seed: int = 0) -> list:
    """``n`` augmented versions of one image as PIL images (reproducible for a given seed).

    ``image`` is a path, bytes, a binary file or a PIL image; ``pre`` is a Preprocessing (None: ImageNet's
    224-pixel recipe; callers with a RunConfig pass ``core.models.backbones.preprocessing_for(config)``);
    ``source`` is what `settings_for` accepts.
    """
    import torch
    from PIL import Image

    from core.data.preprocess import to_square
    from core.data.imageio import open_image

    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
        raise ValueError(f"n must be an integer in [1, 64]; got {n!r}")
    if pre is None:
        from core.data.preprocess import Preprocessing

        pre = Preprocessing()  # ImageNet's recipe at 224 px
    if isinstance(image, Image.Image):
        pil = image.convert("RGB")
    else:
        pil = open_image(Path(image) if isinstance(image, str) else image, min_side=pre.resize_size)
    transform = build(pre, source)
    square = torch.from_numpy(to_square(pil, pre)).permute(2, 0, 1).contiguous()
    # v2 transforms draw from torch's global generator; fork it so the preview neither depends on
    # nor disturbs the random state of anything else running in this process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        outs = [transform(square) for _ in range(n)]
    return [Image.fromarray(o.permute(1, 2, 0).numpy()) for o in outs]
