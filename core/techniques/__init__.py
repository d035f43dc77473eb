"""The techniques of the one training loop, by name: ``RunConfig.technique`` picks one.

Each is a ``core.train.technique.Technique`` subclass supplying its data, head, loss, metrics and
saved files; ``core.train.loop`` gives all of them resume, early stopping, gradual unfreezing,
discriminative learning rates, AMP, channels_last, NaN/OOM handling, torchrun, tracking and events.
Adding a technique: a module here with one subclass, one entry in ``_MODULES`` and in
``core.config.TECHNIQUES``.
"""
from __future__ import annotations

import importlib

from core.config import TECHNIQUES, RunConfig

# name -> module holding its ``TECHNIQUE`` class; imported on demand (each pulls in torch and more)
_MODULES = {"classifier": "core.techniques.classifier", "distill": "core.techniques.distill",
            "multitask": "core.techniques.multitask", "simclr": "core.techniques.simclr"}
assert tuple(_MODULES) == TECHNIQUES, "core.config.TECHNIQUES and the technique registry must name the same ones"


def get(name: str):
    """A fresh instance of the technique called ``name``."""
    if name not in _MODULES:
        raise ValueError(f"technique must be one of {', '.join(_MODULES)}; got {name!r}")
    return importlib.import_module(_MODULES[name]).TECHNIQUE()


def check(config: RunConfig) -> RunConfig:
    """The whole validation a job gets when it starts: the config's fields, the backbone, the technique's
    own parameters (teacher, tasks, sources...)."""
    from core.models import backbones

    backbones.check(config.validate())
    get(config.technique).check(config)
    return config


def fit(config: RunConfig, on_event=None, control=None, run=None, resume: bool = False) -> dict:
    """Train ``config`` with its technique in the one loop (see core.train.loop.fit)."""
    from core.train import loop

    return loop.fit(config, get(config.technique), on_event, control, run, resume)
