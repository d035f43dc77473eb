"""Speed mechanisms of the loop (issue 13): progressive resizing and cached augmented views for head-only runs.

They assert what the body sees (image sizes, number of forward passes), never wall-clock time.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.models import backbones
from core.storage import runs


@pytest.fixture
def body_inputs(monkeypatch):
    """Every batch the body of the next model built sees: (a training step, batch size, image side). A frozen body
    stays in eval mode, so a training step is told apart by autograd being on (validation and embedding run
    under no_grad)."""
    seen: list[tuple[bool, int, int]] = []
    real = backbones.build_model

    def spy(*a, **kw):
        model = real(*a, **kw)
        model.body.register_forward_pre_hook(lambda m, inp: seen.append((torch.is_grad_enabled(), inp[0].shape[0],
                                                                          inp[0].shape[-1])))
        return model
    monkeypatch.setattr(backbones, "build_model", spy)
    return seen


def _epochs(res: dict) -> list[dict]:
    return [e for e in runs.open_run(Path(res["run_dir"])).events() if e["type"] == "epoch"]


def test_progressive_resizing_trains_small_first_and_validates_at_full_size(digits_dir, tiny_config, body_inputs):
    from core.techniques import fit

    res = fit(tiny_config(digits_dir, epochs=3, augment="light", progressive_resize=0.5))
    assert res["status"] == "finished"
    assert [e["train_image_size"] for e in _epochs(res)] == [32, 48, 64]
    train_sides = [side for training, _, side in body_inputs if training]
    assert sorted(set(train_sides)) == [32, 48, 64]
    assert {side for training, _, side in body_inputs if not training} == {64}  # validation: always full size


def test_cached_views_embed_each_image_a_fixed_number_of_times(digits_dir, tiny_config, body_inputs):
    from core.techniques import fit

    res = fit(tiny_config(digits_dir, epochs=3, augment="light", cached_views=3))
    start = next(e for e in runs.open_run(Path(res["run_dir"])).events() if e["type"] == "start")
    assert start["cached_features"] is True
    n_train, n_val = start["n_train"], start["n_val"]
    # three views of each training image and one of each validation image, once: not one pass per epoch
    assert sum(n for _, n, _ in body_inputs) == 3 * n_train + n_val
    assert all(not training for training, _, _ in body_inputs)
    assert res["val_accuracy"] > 0.3  # 10 classes: the head learned from the cached views


def test_without_the_new_fields_an_augmented_head_only_run_goes_through_the_body_every_epoch(
        digits_dir, tiny_config, body_inputs):
    from core.techniques import fit

    res = fit(tiny_config(digits_dir, epochs=2, augment="light"))
    start = next(e for e in runs.open_run(Path(res["run_dir"])).events() if e["type"] == "start")
    assert start["cached_features"] is False
    assert sum(n for training, n, _ in body_inputs if training) >= 2 * (start["n_train"] - 16)
    assert [e["train_image_size"] for e in _epochs(res)] == [64, 64]


def test_epoch_image_sizes_grow_to_full_size_in_steps_of_8_pixels():
    from core.config import RunConfig
    from core.train.loop import epoch_image_size

    c = RunConfig(epochs=5, progressive_resize=0.5)
    assert [epoch_image_size(c, 224, e) for e in range(5)] == [112, 144, 168, 192, None]
    assert epoch_image_size(RunConfig(epochs=5), 224, 0) is None  # off by default
    with pytest.raises(ValueError, match="progressive_resize must be in"):
        RunConfig(progressive_resize=0.1).validate()
    with pytest.raises(ValueError, match="cached_views must be an integer"):
        RunConfig(cached_views=-1).validate()
