"""RunConfig: validation names the field and the valid choices; JSON round-trips."""
from __future__ import annotations

import pytest

from core.config import RunConfig
from core.models import backbones


def test_json_round_trip_preserves_every_field():
    c = RunConfig(data="x.zip", backbone="resnet18", trainable="last-2", epochs=7, lr=3e-4, augment="strong",
                  trainable_groups=["layer4"], dataset="bees", technique="multitask", tasks=["a", "b"],
                  task_weights=[1.0, 0.5])
    assert RunConfig.from_json(c.to_json()) == c


@pytest.mark.parametrize("field,value,expected", [
    ("backbone", "resnet1000", "backbone must be one of efficientnet_lite0"),
    ("optimizer", "adam", "optimizer must be one of adamw, sgd; got 'adam'"),
    ("scheduler", "step", "scheduler must be one of cosine, onecycle, constant"),
    ("trainable", "some", "trainable must be one of head, last-N"),
    ("epochs", 0, "epochs must be an integer >= 1; got 0"),
    ("lr", 0.0, "lr must be > 0"),
    ("val_fraction", 0.95, "val_fraction must be in (0, 0.9]"),
    ("image_size", 16, "image_size must be 0"),
])
def test_bad_values_raise_with_the_valid_choices(field, value, expected):
    with pytest.raises(ValueError) as e:
        backbones.check(RunConfig(**{field: value}).validate())
    assert expected in str(e.value)


def test_vit_rejects_other_input_sizes_and_unknown_fields_are_named():
    with pytest.raises(ValueError, match="224-pixel input only"):
        backbones.check(RunConfig(backbone="vit_b_16", image_size=128).validate())
    with pytest.raises(ValueError, match="unknown config field\\(s\\) learning_rate"):
        RunConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="not valid JSON"):
        RunConfig.from_json("{nope")
