"""The quick path (issue 16): full training batches, a smoothed loss that tracks, and the one-screen page."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image


def _split_folders(root: Path, n_train: int, n_val: int = 6) -> Path:
    """Two classes of tiny solid-colour PNGs in train/ and val/ folders (``n_train`` training images)."""
    rng = random.Random(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            cls = ("dark", "light")[i % 2]
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            base = 40 if cls == "dark" else 210
            colour = tuple(base + rng.randrange(-30, 30) for _ in range(3))
            Image.new("RGB", (24, 24), colour).save(folder / f"{cls}_{i:03d}.png")
    return root


def _batch_sizes(config) -> tuple[list[int], dict]:
    """Train ``config`` and record how many samples each training loss saw, plus the start event."""
    from core.techniques.classifier import Classifier
    from core.train import loop

    sizes, start = [], {}

    class Recording(Classifier):
        def loss(self, out, y):
            sizes.append(len(out))
            return super().loss(out, y)

    loop.fit(config, Recording(), on_event=lambda e: start.update(e) if e.get("type") == "start" else None)
    return sizes, start


def test_194_images_at_batch_32_train_six_full_steps_per_epoch(tmp_path, tiny_config):
    data = _split_folders(tmp_path / "d", 194)
    sizes, start = _batch_sizes(tiny_config(data, image_size=32, batch_size=32, epochs=2))
    assert start["n_train"] == 194
    assert start["steps_per_epoch"] == 6
    assert len(sizes) == 12 and min(sizes) == 32  # the 2-image remainder is never a step of its own


def test_20_images_at_batch_32_still_train_one_step(tmp_path, tiny_config):
    data = _split_folders(tmp_path / "d", 20)
    sizes, start = _batch_sizes(tiny_config(data, image_size=32, batch_size=32, epochs=1))
    assert start["steps_per_epoch"] == 1 and sizes == [20]


def test_the_short_batch_is_dropped_only_when_more_than_one_batch_exists():
    from core.techniques.classifier import Classifier
    from core.techniques.simclr import SimCLR
    from core.train.loop import drop_short_batch

    assert drop_short_batch(Classifier(), 194, 32)
    assert not drop_short_batch(Classifier(), 32, 32)
    assert not drop_short_batch(Classifier(), 5, 32)
    assert drop_short_batch(SimCLR(), 5, 32)  # contrastive techniques keep their own rule


@pytest.mark.slow
def test_two_ddp_processes_also_train_194_images_in_six_steps_per_epoch(tmp_path):
    import os
    import subprocess
    import sys

    from core.storage import runs

    data = _split_folders(tmp_path / "d", 194)
    repo = Path(__file__).resolve().parents[1]
    args = ["--data", str(data), "--image-size", "32", "--epochs", "1", "--batch-size", "32", "--trainable", "last-1",
            "--augment", "none", "--device", "cpu", "--out", str(tmp_path / "runs")]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "core", "train", *args], cwd=repo, env=dict(os.environ, OMP_NUM_THREADS="1"),
                       capture_output=True, text=True, timeout=500)
    assert p.returncode == 0, p.stderr[-3000:]
    run = runs.open_run(json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])["run_dir"])
    events = run.events()
    # 97 images per rank in batches of 16: six full steps, the 1-image remainder dropped as one process drops its 2
    assert next(e for e in events if e["type"] == "start")["steps_per_epoch"] == 6
    assert sum(e["type"] == "step" for e in events) == 6


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_ddp_rank_keeps_at_least_one_full_step_when_one_process_drops(world):
    from core.train.loop import per_rank_batch

    for batch in (8, 32, 33):
        for n in range(batch + 1, 4 * batch):
            shard = -(-n // world)  # DistributedSampler pads every rank to ceil(n / world) samples
            assert shard // per_rank_batch(batch, world) >= 1, (n, batch, world)


def test_the_smoothed_loss_starts_at_the_first_value_and_tracks_a_step_within_15_steps():
    from core.app import charts

    raw = [2.0] * 50 + [0.5] * 50
    beta = charts.smoothing_beta(len(raw))
    line = charts.smoothed(raw, beta)
    assert line[0] == pytest.approx(2.0)
    assert line[49] == pytest.approx(2.0)  # bias correction: a constant stays itself, no ramp up from zero
    assert abs(line[50 + 15] - 0.5) < 0.1 * 1.5  # within 10 % of the jump after 15 steps
    assert line[50 + 2] > 0.6  # and it is still a smoothing, not the raw line


def test_the_smoothing_window_grows_with_the_run_but_stays_between_2_and_50_steps():
    from core.app import charts

    assert charts.smoothing_beta(30) == 0.5
    assert charts.smoothing_beta(100) == pytest.approx(0.8)
    assert charts.smoothing_beta(100_000) == 0.98


def test_the_loss_chart_draws_the_smoothed_line_from_step_events():
    from core.app import charts

    events = [{"type": "step", "step": i + 1, "total_steps": 4, "loss": v} for i, v in enumerate([3.0, 1.0, 1.0, 1.0])]
    fig = charts.step_loss(events)
    assert list(fig.data[1].y)[0] == pytest.approx(3.0)
    assert list(fig.data[1].y)[-1] < 1.3


# --- the one-screen page (AppTest) -------------------------------------------------------------------

def _quick_page(**query):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=90)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("pages/0_quick.py").run()
    assert not at.exception, at.exception
    return at


def test_the_quick_page_uploads_trains_predicts_and_offers_the_download(shapes_dir, tmp_path):
    from conftest import wait_for_run, zip_folder
    from core.results.loading import load_model
    from core.storage import runs

    at = _quick_page()
    assert any("No images yet" in i.value for i in at.info)
    archive = zip_folder(shapes_dir, tmp_path / "quick shapes.zip", top="quick-shapes")
    at.file_uploader(key="quick_zip").set_value(("quick shapes.zip", archive.read_bytes(), "application/zip")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ds = at.session_state["ds"]
    assert ds.startswith("quick-shapes")
    settings = next(c.value for c in at.caption if c.value.startswith("Settings:"))
    shown = re.search(r"image size \*\*(\d+) px\*\*", settings)
    assert shown and shown.group(1) in ("96", "224")  # native 96 px, or 224 where the budget affords upsampling

    at.button(key="quick_train").click().run()
    job = at.session_state["job"]
    assert at.query_params["job"] == job
    assert wait_for_run(job, timeout=180) == "finished"
    at.run()
    assert not at.exception
    assert any("quick_chart_loss" in el.proto.id for el in at.get("plotly_chart"))

    img = sorted((shapes_dir / "triangle").iterdir())[0]
    at.file_uploader(key="eval_upload").set_value([(img.name, img.read_bytes(), "image/png")]).run()
    run = runs.open_run(job)
    expected = load_model(run.path).predict([img])[0]["label"]
    assert any(f"**{expected}**" in md.value for md in at.markdown)
    (link,) = [el for el in at.get("link_button") if "quick_download" in el.proto.id]
    assert "/download/" in link.proto.url

    # an ordinary run: its config is what the page showed, and the guided Train step opens it
    cfg = run.config()
    assert (cfg.image_size, cfg.trainable, cfg.dataset) == (int(shown.group(1)), "head", ds)
    assert run.result()["classes"] == ["circle", "square", "triangle"]
    guided = at.switch_page("pages/4_train.py").run()
    assert not guided.exception
    assert any(m.label == "Epoch" and m.value.endswith(f"/ {cfg.epochs}") for m in guided.metric)


def test_the_quick_page_says_what_is_missing_before_any_upload():
    at = _quick_page()
    assert all(b.key != "quick_train" for b in at.button)
    assert any("upload a .zip or a folder" in i.value for i in at.info)
