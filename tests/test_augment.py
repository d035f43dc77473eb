"""Augmentation presets, custom settings and the preview grid (core/augment.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import augment
from core.data import datasets
from core.data.augment import AugmentSettings, augment_preview, settings_for
from core.data.preprocess import Preprocessing
from core.config import RunConfig
from core.data.imageio import open_image

PRE = Preprocessing(resize_size=72, crop_size=64)
OFF = (72 - 64) // 2  # centre-crop offset


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A noisy, asymmetric RGB image (mirror and rotations all differ from the original)."""
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    arr[:, :30] = [250, 20, 20]  # a red band on the left makes the mirror image clearly different
    path = tmp_path_factory.mktemp("aug") / "photo.png"
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def crop(photo) -> np.ndarray:
    """The deterministic centre crop the validation path would produce."""
    sq = datasets.to_square(open_image(photo), PRE)
    return sq[OFF:OFF + 64, OFF:OFF + 64]


def arrays(images) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def test_identity_settings_give_exactly_the_centre_crop(photo, crop):
    s = AugmentSettings(flip=False, rotation=0, color_jitter=0, scale_min=1.0, policy="none")
    assert s.is_identity
    outs = arrays(augment_preview(photo, PRE, s, n=6, seed=3))
    assert len(outs) == 6
    for out in outs:
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        assert np.array_equal(out, crop)


def test_flip_only_gives_the_crop_or_its_mirror_and_both_occur(photo, crop):
    outs = arrays(augment_preview(photo, PRE, AugmentSettings(flip=True), n=16, seed=0))
    mirror = crop[:, ::-1]
    plain = [np.array_equal(o, crop) for o in outs]
    flipped = [np.array_equal(o, mirror) for o in outs]
    assert all(p or f for p, f in zip(plain, flipped))
    assert any(plain) and any(flipped)


@pytest.mark.parametrize("settings", [
    AugmentSettings(rotation=30),
    AugmentSettings(color_jitter=1.0),
    AugmentSettings(scale_min=0.2),
    AugmentSettings(policy="randaugment"),
    AugmentSettings(policy="trivialaugment"),
], ids=["rotation", "jitter", "scale", "randaugment", "trivialaugment"])
def test_each_random_setting_changes_the_image_but_keeps_the_size(photo, crop, settings):
    outs = arrays(augment_preview(photo, PRE, settings, n=8, seed=1))
    assert all(o.shape == (64, 64, 3) for o in outs)
    changed = [not np.array_equal(o, crop) for o in outs]
    if settings.policy == "none":
        # rotation angle, jitter factors and crop boxes are continuous draws: every sample differs
        assert all(changed)
    else:
        # a policy may draw the identity op for some samples, never for all of them
        assert sum(changed) >= 4


def test_rotation_leaves_dark_corners_that_the_plain_crop_does_not_have(photo, crop):
    outs = arrays(augment_preview(photo, PRE, AugmentSettings(rotation=45), n=8, seed=2))
    # the crop is brighter than black in its corner; a 45-degree-range rotation fills some corners with 0
    assert crop[0, 0].sum() > 0
    assert any(o[0, 0].sum() == 0 or o[0, -1].sum() == 0 or o[-1, 0].sum() == 0 or o[-1, -1].sum() == 0
               for o in outs)


def test_preview_is_reproducible_per_seed_and_leaves_the_global_rng_alone(photo):
    import torch

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = arrays(augment_preview(photo, PRE, "strong", n=6, seed=5))
    assert torch.equal(torch.rand(3), expected_next)
    b = arrays(augment_preview(photo, PRE, "strong", n=6, seed=5))
    c = arrays(augment_preview(photo, PRE, "strong", n=6, seed=6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len({x.tobytes() for x in a}) > 1  # the n samples differ from each other


def test_preview_accepts_a_pil_image_bytes_and_a_runconfig(photo, crop):
    cfg = RunConfig(augment="custom", aug_flip=False, aug_scale_min=1.0, image_size=64)
    from core.models.backbones import preprocessing_for

    from_cfg = arrays(augment_preview(photo.read_bytes(), preprocessing_for(cfg), cfg, n=2))
    # image_size=64 on efficientnet_lite0 (256/224) resizes to 73 before the 64 crop: same shape,
    # and still deterministic because the custom settings are the identity
    assert from_cfg[0].shape == (64, 64, 3) and np.array_equal(from_cfg[0], from_cfg[1])
    from_pil = arrays(augment_preview(Image.open(photo), PRE, "none", n=1))
    assert np.array_equal(from_pil[0], crop)


def test_presets_are_named_bundles_of_the_custom_fields():
    assert settings_for("none").is_identity
    assert settings_for("light") == AugmentSettings(flip=True, scale_min=0.6)
    assert settings_for("strong").policy == "trivialaugment"
    # the config's custom defaults are the light preset, so switching to custom changes nothing
    assert settings_for(RunConfig(augment="custom")) == settings_for("light")
    for name, s in augment.PRESETS.items():
        cfg = RunConfig(augment="custom", **s.to_config_fields())
        assert settings_for(cfg) == s, name
    # with a preset selected, the aug_* fields are ignored
    assert settings_for(RunConfig(augment="none", aug_rotation=90.0)).is_identity


def test_train_transform_uses_custom_fields_from_the_config(photo, crop):
    import torch

    square = torch.from_numpy(datasets.to_square(open_image(photo), PRE)).permute(2, 0, 1)
    ident = datasets.train_transform(PRE, RunConfig(augment="custom", aug_flip=False, aug_scale_min=1.0))
    assert np.array_equal(ident(square).permute(1, 2, 0).numpy(), crop)
    assert np.array_equal(datasets.train_transform(PRE, "none")(square).permute(1, 2, 0).numpy(), crop)
    with pytest.raises(ValueError, match="needs the aug_\\* settings"):
        datasets.train_transform(PRE, "custom")
    with pytest.raises(ValueError, match="none, light, strong, custom; got 'heavy'"):
        datasets.train_transform(PRE, "heavy")


@pytest.mark.parametrize("field,value,message", [
    ("aug_rotation", -5.0, r"aug_rotation must be a number in \[0, 180\]; got -5.0"),
    ("aug_color_jitter", 1.5, r"aug_color_jitter must be a number in \[0, 1\]"),
    ("aug_scale_min", 0.01, r"aug_scale_min must be a number in \[0.05, 1\]"),
    ("aug_policy", "autoaugment", "aug_policy must be one of none, randaugment, trivialaugment; got 'autoaugment'"),
    ("aug_flip", "yes", "aug_flip must be true or false"),
    ("augment", "heavy", "augment must be one of none, light, strong, custom; got 'heavy'"),
])
def test_config_rejects_bad_augmentation_values_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{field: value}).validate()


def test_config_round_trips_custom_augmentation():
    cfg = RunConfig(augment="custom", aug_rotation=15.0, aug_color_jitter=0.5, aug_policy="randaugment").validate()
    back = RunConfig.from_json(cfg.to_json())
    assert settings_for(back) == AugmentSettings(flip=True, rotation=15.0, color_jitter=0.5, scale_min=0.6,
                                                 policy="randaugment")


def test_importing_augment_does_not_import_torch():
    code = "import sys, core.data.augment, core.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=True)
    assert out.stdout.strip() == "False"
