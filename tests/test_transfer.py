"""Transfer learning works: ImageNet features beat random initialisation on the same small budget."""
from __future__ import annotations

from core.data.datasets import make_sample
from core.techniques import fit

MARGIN = 0.25  # absolute validation-accuracy points


def test_pretrained_frozen_body_beats_random_init_trained_fully(tmp_path, tiny_config):
    # 15 digits per class: 120 to train, 30 to validate; 4 epochs for both runs, seed 0.
    data = make_sample("digits", tmp_path / "digits15", per_class=15)
    common = dict(image_size=96, epochs=4, batch_size=16, seed=0)
    pre = fit(tiny_config(data, trainable="head", lr=0.01, **common))
    scratch = fit(tiny_config(data, trainable="all", pretrained=False, lr=0.003, **common))
    assert pre["status"] == scratch["status"] == "finished"
    assert pre["val_accuracy"] >= scratch["val_accuracy"] + MARGIN, (pre["val_accuracy"], scratch["val_accuracy"])
    assert pre["val_accuracy"] > 0.4  # well above the 0.1 of chance on 10 classes
