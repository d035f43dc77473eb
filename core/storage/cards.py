"""Model cards: the JSON that travels inside every weights file, read without loading a tensor.

A ``.safetensors`` file starts with an 8-byte header length and a JSON header whose ``__metadata__``
holds the card under ``CARD_KEY``; reading it costs one small read however large the weights are.
A ``.pt`` bundle is a pickle-free dict (``torch.load(weights_only=True)``) and is read whole.
"""
from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

from core.i18n import _

CARD_KEY = "transfer_studio_card"
FORMAT = "transfer-studio/1"
BEST_FILE = "best.safetensors"
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit on the header size


class DamagedFile(ValueError):
    """A weights file that exists but cannot be read (truncated, not the expected format)."""


def weights_file(path: str | Path) -> Path:
    """A run directory's best weights, or the file itself."""
    p = Path(path)
    return p / BEST_FILE if p.is_dir() else p


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a .safetensors file, from its header alone."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise DamagedFile(_("{name} is too short to be a .safetensors file (truncated?)").format(name=path.name))
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER:
            raise DamagedFile(_("{name} has an impossible header size ({n} bytes); the file is damaged").format(
                name=path.name, n=n))
        head = f.read(n)
        size = path.stat().st_size
    if len(head) < n:
        raise DamagedFile(_("{name} is truncated (its header says {n} bytes, the file has {size})").format(
            name=path.name, n=n, size=size))
    try:
        header = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DamagedFile(_("{name} has a damaged header (not JSON)").format(name=path.name)) from None
    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    if ends and 8 + n + max(ends) > size:
        raise DamagedFile(_("{name} is truncated: its tensors need {need} bytes, the file has {size}").format(
            name=path.name, need=8 + n + max(ends), size=size))
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


_cards: dict[tuple, str] = {}  # (path, inode, mtime_ns, size) -> the card as JSON text
_cards_lock = threading.Lock()
_CACHED_CARDS = 256


def read_card(path: str | Path) -> dict:
    """The model card of a run directory, a .safetensors export or a .pt bundle (ValueError saying why not).

    Remembered per file version (inode, mtime, size; weights are replaced atomically, never edited in place):
    a page asks for the same card several times per rerun, and a .pt bundle is otherwise read whole each time.
    Every call returns a fresh dict, so a caller may change it freely."""
    path = weights_file(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ValueError(_("{path} does not exist; pass a run directory or a .safetensors / .pt export").format(
            path=path)) from None
    key = (str(path.resolve()), st.st_ino, st.st_mtime_ns, st.st_size)
    text = _cards.get(key)
    if text is None:
        text = json.dumps(_read_card_file(path))
        with _cards_lock:
            if len(_cards) >= _CACHED_CARDS:
                _cards.pop(next(iter(_cards)))  # the oldest entry
            _cards[key] = text
    return json.loads(text)


def _read_card_file(path: Path) -> dict:
    if path.suffix == ".safetensors":
        meta = safetensors_metadata(path)
        if CARD_KEY not in meta:
            raise ValueError(_("{name} has no Transfer Studio model card in its metadata; was it exported by "
                               "Transfer Studio?").format(name=path.name))
        try:
            card = json.loads(meta[CARD_KEY])
        except json.JSONDecodeError:
            raise DamagedFile(_("{name} carries a damaged model card (not JSON)").format(name=path.name)) from None
        if not isinstance(card, dict):
            raise DamagedFile(_("{name} carries a model card that is not a JSON object").format(name=path.name))
        return card
    if path.suffix == ".pt":
        import torch  # only bundles need it

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated zip, a pickle that weights_only refuses
            raise DamagedFile(_("{name} cannot be read ({error}); the file is damaged").format(
                name=path.name, error=type(e).__name__)) from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(_("{name} is not a Transfer Studio bundle (expected format {format})").format(
                name=path.name, format=FORMAT))
        return json.loads(obj["card"])
    raise ValueError(_("unsupported model file {name}; expected .safetensors or .pt").format(name=path.name))


def card_kind(card: dict) -> str:
    """What a weights file holds: "classifier" (the default), "multitask" (one head per task) or "adapted"
    (a backbone body adapted by self-supervised pretraining, no head)."""
    return str(card.get("kind", "classifier"))
