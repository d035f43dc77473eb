"""The torch-free parts of the engine that pages use by name, re-exported: with ``core.app.services`` (which
wraps everything that needs torch, behind lazy imports) this is the pages' whole doorway to the engine.

Pages import from ``core.app`` only (``from core.app.engine import edits as de``); tests/test_pages.py fails
on a page that imports any other core module, and on a page import that loads torch. So ``__all__`` below
is the complete list of engine modules and names a page may touch: add to it, never around it.
"""
from __future__ import annotations

from core import i18n
from core.config import AUGMENTS
from core.data import edits, imageio, ingest
from core.data.augment import POLICIES, PRESETS
from core.storage import downloads, locks, owners, runs, workspace
from core.train import events, tracking

__all__ = ["AUGMENTS", "POLICIES", "PRESETS", "downloads", "edits", "events", "i18n", "imageio", "ingest", "locks",
           "owners", "runs", "tracking", "workspace"]
