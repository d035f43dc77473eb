"""The techniques of the one training loop, by name: ``RunConfig.technique`` picks one.

Each is a ``core.train.technique.Technique`` subclass supplying its data, head, loss, metrics and
saved files; ``core.train.loop`` gives all of them resume, early stopping, gradual unfreezing,
discriminative learning rates, AMP, channels_last, NaN/OOM handling, torchrun, tracking and events.
Adding a technique: a module here with one subclass, one entry in ``_MODULES`` and in
``core.config.TECHNIQUES``.
"""
from __future__ import annotations

import importlib

from core.config import TECHNIQUES, TEXT_TECHNIQUES, RunConfig
from core.i18n import _

# name -> module holding its ``TECHNIQUE`` class; imported on demand (each pulls in torch and more)
_MODULES = {"classifier": "core.techniques.classifier", "distill": "core.techniques.distill",
            "multitask": "core.techniques.multitask", "simclr": "core.techniques.simclr",
            "text": "core.techniques.text_classifier", "text_distill": "core.techniques.text_distill",
            "text_multitask": "core.techniques.text_multitask", "text_pretrain": "core.techniques.text_pretrain"}
assert tuple(_MODULES) == TECHNIQUES, "core.config.TECHNIQUES and the technique registry must name the same ones"


def get(name: str):
    """A fresh instance of the technique called ``name``."""
    if name not in _MODULES:
        raise ValueError(_("technique must be one of {names}; got {name!r}").format(
                             names=', '.join(_MODULES), name=name))
    return importlib.import_module(_MODULES[name]).TECHNIQUE()


def check(config: RunConfig) -> RunConfig:
    """The whole validation a job gets when it starts: the config's fields, the backbone, the technique's
    own parameters (teacher, tasks, sources...)."""
    config.validate()  # the fields first: a refused value is said before torch loads for the backbone's check
    from core.models import backbones

    backbones.check(config)
    _same_modality(config)
    get(config.technique).check(config)
    return config


def _same_modality(config: RunConfig) -> None:
    """A text backbone trains with the text techniques only, and the text techniques with text backbones only."""
    from core.models import text_backbones

    if text_backbones.is_text(config.backbone) != (config.technique in TEXT_TECHNIQUES):
        raise ValueError(_("backbone {backbone!r} and technique {technique!r} do not go together: text backbones "
                           "({names}) train with technique text or another text technique ({text_techniques}), and "
                           "those need one of them").format(backbone=config.backbone, technique=config.technique,
                                          names=', '.join(text_backbones.names()),
                                          text_techniques=', '.join(TEXT_TECHNIQUES)))


def default_text_config(config: RunConfig, explicit=()) -> RunConfig:
    """``config`` as a text run with the default text recipe (issue 17) for every field not in ``explicit`` (those
    the user set): the bundled sentence encoder, head-only on embeddings computed once, a head rate that suits them."""
    import dataclasses

    from core.models import text_backbones

    # val_loss picks the best epoch: on small text sets accuracy saturates early while confidence still improves
    recipe = {"backbone": text_backbones.DEFAULT, "augment": "none", "image_size": 0, "lr": 1e-2, "epochs": 10,
              "early_stopping_metric": "val_loss"}
    return dataclasses.replace(config, technique="text", **{k: v for k, v in recipe.items() if k not in explicit})


def fit(config: RunConfig, on_event=None, control=None, run=None, resume: bool = False) -> dict:
    """Train ``config`` with its technique in the one loop (see core.train.loop.fit)."""
    from core.train import loop

    _same_modality(config)
    return loop.fit(config, get(config.technique), on_event, control, run, resume)
