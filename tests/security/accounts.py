"""Helpers for the sign-in and ownership tests: signed-in tabs, and runs / datasets made on disk directly.

Nothing here trains: a run is a folder with a config, a few events and (when asked) a weights file
whose header carries a model card, which is all the listings read.
"""
from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.config import RunConfig
from core.data import edits as de
from core.storage import cards, owners, runs

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")
ISSUER = "https://idp.example"
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-cookie-secret",
        "client_id": "transfer-studio", "client_secret": "not-a-secret",
        "server_metadata_url": f"{ISSUER}/.well-known/openid-configuration"}
TIMEOUT = 60


def key(subject: str, issuer: str = ISSUER) -> str:
    """The owner key the app derives for a provider subject."""
    return owners.key(issuer, subject)


def user(subject: str | None, **claims) -> dict:
    """What ``st.user`` holds for a signed-in account (the OIDC claims Streamlit keeps)."""
    base = {"is_logged_in": True, "iss": ISSUER, "name": (subject or "").title(),
            "email": f"{subject}@example.com"}
    if subject is not None:
        base["sub"] = subject
    return {**base, **claims}


def tab(subject: str | None = None, page: str | None = None, *, auth: bool = True, who: dict | None = None,
        **query) -> AppTest:
    """A fresh tab of the app (sign-in configured unless ``auth`` is False), signed in as ``subject``."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if auth:
        at.secrets["auth"] = AUTH
        at.user = who if who is not None else (user(subject) if subject else {"is_logged_in": False})
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    """Every text value on the page (main area and sidebar), one per line."""
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success",
                 "text", "code"):
        out += [str(e.value) for e in at.get(kind)]
    return "\n".join(out)


def write_card_file(path: Path, card: dict) -> None:
    """A .safetensors file with no tensors whose header carries ``card`` (what listings and cards read)."""
    header = json.dumps({"__metadata__": {cards.CARD_KEY: json.dumps(card)}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def make_dataset(name: str, source: Path, owner: str | None) -> str:
    """A copy of ``source`` as workspace dataset ``name`` (unique), owned by ``owner``."""
    name = de.unique_name(name)
    shutil.copytree(source, de.root() / name)
    owners.record(de.root() / name, owner)
    return name


def make_run(owner: str | None, data: Path, *, status: str | None = "finished", weights: bool = True,
             name: str = "") -> runs.Run:
    """A run folder as training leaves it: config, a start, one epoch and an end event, a card-only weights file."""
    cfg = RunConfig(data=str(data), backbone="efficientnet_lite0", image_size=64, epochs=1, device="cpu", name=name)
    run = runs.create(cfg, owner=owner)
    t = time.time()
    run.append({"type": "start", "time": t})
    if status is not None:
        run.append({"type": "epoch", "epoch": 1, "epochs": 1, "train_loss": 0.9, "train_acc": 0.6,
                    "val_loss": 0.8, "val_acc": 0.7, "time_s": 1.0, "time": t + 1})
        run.append({"type": "end", "status": status, "time": t + 2})
    if weights:
        write_card_file(run.best_weights, {"backbone": "efficientnet_lite0", "num_classes": 2,
                                           "classes": ["a", "b"], "kind": "classifier"})
    return run


def make_adapted(owner: str | None, data: Path, dataset: str) -> runs.Run:
    """A finished SimCLR run holding an adapted backbone (adapted.safetensors), owned by ``owner``."""
    run = make_run(owner, data, weights=False)
    write_card_file(run.path / "adapted.safetensors", {"backbone": "efficientnet_lite0", "kind": "adapted",
                                                        "dataset": dataset, "metrics": {"epochs": 1, "loss": 1.0}})
    return run
