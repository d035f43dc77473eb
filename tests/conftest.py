"""Shared fixtures: every test session gets its own workspace; small real datasets made offline."""
from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _workspace(tmp_path_factory):
    """Point the engine's workspace at a temp folder for the whole session (caches are shared)."""
    home = tmp_path_factory.mktemp("ts-home")
    old = os.environ.get("TRANSFER_STUDIO_HOME")
    os.environ["TRANSFER_STUDIO_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("TRANSFER_STUDIO_HOME", None)
    else:
        os.environ["TRANSFER_STUDIO_HOME"] = old


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn digits as class folders of PNGs, 12 per class (120 images)."""
    from core.data.datasets import make_sample

    return make_sample("digits", tmp_path_factory.mktemp("digits") / "digits", per_class=12)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """Pillow-drawn circles, squares and triangles, 10 per class."""
    from core.data.datasets import make_sample

    return make_sample("shapes", tmp_path_factory.mktemp("shapes") / "shapes", per_class=10)


def zip_folder(folder: Path, dest: Path, top: str | None = None) -> Path:
    """Zip a folder's files, optionally under one top-level folder name."""
    with zipfile.ZipFile(dest, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                arc = p.relative_to(folder).as_posix()
                z.write(p, f"{top}/{arc}" if top else arc)
    return dest


@pytest.fixture(scope="session")
def tiny_config():
    """A fast CPU config factory: small input, few epochs."""
    from core.config import RunConfig

    def make(data, **kw) -> RunConfig:
        base = dict(data=str(data), backbone="efficientnet_lite0", image_size=64, epochs=1, batch_size=16,
                    augment="none", device="cpu", lr=0.01)
        base.update(kw)
        return RunConfig(**base)
    return make


def wait_for_run(run_id: str, timeout: float = 120) -> str:
    """Block until a run has an end event; return its status."""
    from core.storage import runs

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = runs.open_run(run_id).status()
        if status in ("finished", "failed", "stopped"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end within {timeout} s")


@pytest.fixture(scope="session")
def adapted_backbone() -> str:
    """An adapted backbone as SimCLR pretraining leaves it (a resnet18 body with its card, in a run of the
    session's workspace), made in a second without training: its name, ``adapted:resnet18:<run id>``."""
    import torch

    from core.config import RunConfig
    from core.models import backbones
    from core.results import loading
    from core.storage import runs

    config = RunConfig(data="sample:shapes", backbone="resnet18")
    run = runs.create(config)
    torch.manual_seed(1)
    body = backbones.build_model("resnet18", None, pretrained=False).body
    name = backbones.adapted_name("resnet18", run.id)
    card = {"format": loading.FORMAT, "kind": "adapted", "backbone": "resnet18", "name": name, "dataset": "shapes",
            "sources": [config.data], "preprocessing": backbones.preprocessing_for(config).to_dict(),
            "config": config.to_dict(), "versions": loading.versions(), "metrics": {"loss": 1.0, "epochs": 1}}
    loading.save_safetensors(body, card, run.path / backbones.ADAPTED_FILE)
    return name


def registry_entries() -> list[str]:
    """What registry-wide tests run over: every registry name, and "adapted" (an adapted backbone, resolved by
    the ``entry`` fixture: use ``@pytest.mark.parametrize("entry", registry_entries(), indirect=True)``)."""
    from core.models import backbones

    return backbones.names() + ["adapted"]


@pytest.fixture
def entry(request) -> str:
    """The backbone name behind a registry_entries() parameter."""
    return request.getfixturevalue("adapted_backbone") if request.param == "adapted" else request.param


# --- the browser tests' server and page (tests/browserkit.py) -------------------------------------

@pytest.fixture()
def server(tmp_path):
    """A Streamlit server of the app with its own workspace: (url, home)."""
    import browserkit

    with browserkit.serving(tmp_path) as served:
        yield served


@pytest.fixture()
def browser_page():
    """A page of headless Chromium (the system's: Playwright cannot download one here)."""
    import browserkit
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browserkit.CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                                          "--disable-dev-shm-usage", "--no-first-run"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()
        browser.close()


# --- the page tests' dataset and finished run ----------------------------------------------------

@pytest.fixture(scope="module")
def shapes_ds(shapes_dir) -> str:
    """The 30-image shapes sample as a workspace dataset."""
    import shutil

    from core.data import edits as de

    name = de.unique_name("pages-shapes")
    shutil.copytree(shapes_dir, de.root() / name)
    return name


@pytest.fixture(scope="module")
def trained_run(shapes_ds, tiny_config) -> str:
    """A finished one-epoch run on the shapes dataset, trained through the engine directly."""
    from core.data import edits as de
    from core.techniques import fit

    result = fit(tiny_config(de.dataset_dir(shapes_ds), epochs=1))
    assert result["status"] == "finished"
    return Path(result["run_dir"]).name
