"""Training-engine benchmark: every number is a ratio of two runs measured here, side by side.

    python benchmarks/bench_engine.py [--per-class 100] [--image-size 96] [--repeats 2]

(a) a 10-epoch head-only run on cached features vs one inference pass over the same images, and vs
    the same run recomputing the backbone every epoch (cache_features=False);
(b) fine-tuning throughput, every layer trainable, vs a plain PyTorch loop (torchvision ImageFolder,
    DataLoader, the classic loop) on the same model, data, batch size and thread count;
(c) the app's path (core.jobs.manager.JobManager running the job in a child process, a thread polling
    snapshot() every second) vs the same config headless (`python -m core train --config FILE`);
(d) on a CUDA GPU only: absolute fine-tuning images/s with and without AMP;
(e) issue 13's speed recipe: a head-only run with light augmentation on cached views (cached_views=2) vs one
    inference pass, and fastai as an optional peer row: its ``fine_tune(3)`` (1 frozen + 3 unfrozen epochs) vs
    the engine's same schedule with the "best" recipe's mechanics (BatchNorm statistics kept, one group unfrozen
    per epoch, progressive resizing as the recipes do), on the same files, body, batch size and threads.
    fastai is not a dependency: install it apart (``pip install --no-deps --target DIR fastai==2.8.12 fastcore
    fastprogress==1.0.3 fasttransform fastdownload plum-dispatch beartype matplotlib contourpy cycler fonttools
    kiwisolver``: fastai 2.8.12 imports with torch 2.14.1; fastprogress 1.1 would pull in a web framework) and
    pass ``--fastai-path DIR``; without it the row says "fastai not installed".

The dataset is the generated "shapes" sample (Pillow-drawn, three classes). Each measurement is
repeated and the fastest kept, interleaving the two sides, so background load hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, torch threads "
            f"{torch.get_num_threads()}, GPU {gpu}, torch {torch.__version__}, load average at start {load:.1f}")


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def best_of(repeats: int, *fns) -> list[tuple[float, object]]:
    """Run the functions interleaved ``repeats`` times; the fastest time (and its output) of each."""
    best: list = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            dt, out = timed(fn)
            if best[i] is None or dt < best[i][0]:
                best[i] = (dt, out)
    return best


def inference_pass(config) -> int:
    """One forward pass over every image of the run (train + val), model already built: the floor.

    It reads the same decoded images and runs with the same batch size and memory format as the engine's
    embedding pass, so whatever makes that pass faster makes the floor faster too.
    """
    import torch

    from core.models import backbones
    from core.data import datasets
    from core.train import loop

    pre = backbones.preprocessing_for(config)
    split = datasets.split(datasets.load_index(config.data), config.val_fraction, config.seed)
    paths = [p for p, _ in split.train + split.val]
    cache = datasets.ImageCache(paths, pre)
    device = loop.pick_device(config.device)  # the engine's device (the floor ran on the CPU before)
    model = backbones.build_model(config.backbone, len(split.classes), pretrained=True).eval().to(device)
    channels_last = loop.use_channels_last(config, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ds = datasets.CachedDataset(split.train + split.val, cache, datasets.eval_transform(pre))
    loader = torch.utils.data.DataLoader(ds, batch_size=loop.EMBED_BATCH)

    def run() -> int:
        n = 0
        with torch.no_grad():
            for x, _ in loader:
                x = datasets.normalize(x.to(device), pre)
                model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
                n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n
    return run


def plain_loop(config, epochs: int):
    """The classic PyTorch recipe on the same files: ImageFolder + DataLoader + train/validate loop."""
    import torch
    from torchvision import datasets as tv_datasets, transforms as T

    from core.data import datasets
    from core.models import backbones

    pre = backbones.preprocessing_for(config)
    split = datasets.split(datasets.load_index(config.data), config.val_fraction, config.seed)
    root = datasets.resolve(config.data)
    norm = T.Normalize(pre.mean, pre.std)
    train_tf = T.Compose([T.Resize(pre.resize_size), T.CenterCrop(pre.resize_size),
                          T.RandomResizedCrop(pre.crop_size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(),
                          T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize(pre.resize_size), T.CenterCrop(pre.crop_size), T.ToTensor(), norm])
    full_train = tv_datasets.ImageFolder(str(root), transform=train_tf)
    full_val = tv_datasets.ImageFolder(str(root), transform=val_tf)
    where = {str(Path(p).resolve()): i for i, (p, _) in enumerate(full_train.samples)}
    train = torch.utils.data.Subset(full_train, [where[str(Path(p).resolve())] for p, _ in split.train])
    val = torch.utils.data.Subset(full_val, [where[str(Path(p).resolve())] for p, _ in split.val])

    def run() -> dict:
        torch.manual_seed(config.seed)
        model = backbones.build_model(config.backbone, len(split.classes), pretrained=True)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        crit = torch.nn.CrossEntropyLoss()
        tl = torch.utils.data.DataLoader(train, batch_size=config.batch_size, shuffle=True,
                                         num_workers=config.num_workers)
        vl = torch.utils.data.DataLoader(val, batch_size=64, num_workers=config.num_workers)
        t0 = time.perf_counter()
        for _ in range(epochs):
            model.train()
            for x, y in tl:
                opt.zero_grad()
                loss = crit(model(x), y)
                loss.backward()
                opt.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in vl:
                    correct += int((model(x).argmax(1) == y).sum())
        return {"loop_s": time.perf_counter() - t0, "val_acc": correct / len(val)}
    return run, len(split.train)


def engine_loop(config):
    """fit() with the loop time taken between its start and end events (model build and caches excluded)."""
    from core.techniques import fit

    def run() -> dict:
        marks = {}

        def on_event(ev: dict) -> None:
            if ev["type"] in ("start", "end"):
                marks[ev["type"]] = ev["time"]
        result = fit(config, on_event)
        return {"loop_s": marks["end"] - marks["start"], "val_acc": result["val_accuracy"]}
    return run


def via_jobs(config, mode: str = "process"):
    """The app's path: JobManager.start, a second thread polling snapshot() every second, as a page does.

    ``mode`` "process" is what the app does (a child ``python -m core`` process per job); "thread" is
    the earlier design (a worker thread of the server process), kept for comparison."""
    from core.jobs.manager import JobManager

    def run() -> dict:
        jm = JobManager(max_running=1, mode=mode)
        job = jm.start(config)
        polls = []

        def poll() -> None:
            while job.snapshot()["status"] in ("queued", "running", "paused"):
                polls.append(1)
                time.sleep(1.0)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        job.thread.join()  # timed up to here: the poller's sleep does not round the result up
        status = job.snapshot()["status"]
        poller.join()
        return {"status": status, "polls": len(polls), "train_s": _train_seconds(job.run.path)}
    return run


def headless_cli(config):
    """The same config headless, as a user runs it: ``python -m core train --config FILE`` in a fresh process."""
    def run() -> dict:
        folder = Path(tempfile.mkdtemp(prefix="ts-bench-cli-"))
        (folder / "config.json").write_text(config.to_json())
        out = subprocess.run([sys.executable, "-m", "core", "train", "--config", str(folder / "config.json")],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"headless run failed: {out.stderr[-2000:]}")
        return {"train_s": _train_seconds(json.loads(out.stdout.strip().splitlines()[-1])["run_dir"])}
    return run


def _train_seconds(run_dir) -> float:
    """Seconds between the run's 'start' and 'end' events: training as the run itself logged it."""
    from core.storage import runs

    ev = runs.Run(Path(run_dir)).events()
    t = {e["type"]: e["time"] for e in ev if e["type"] in ("start", "end")}
    return t["end"] - t["start"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=100, help="images per class of the shapes sample (3 classes; default 100)")
    ap.add_argument("--image-size", type=int, default=96, help="network input side in pixels, 32..1024 (default 96)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per row; the best is kept (default 2)")
    ap.add_argument("--finetune-epochs", type=int, default=2, help="epochs of the fine-tuning rows (default 2)")
    ap.add_argument("--only", default="abcde", help="sections to run, e.g. 'c' (default all: abcde)")
    ap.add_argument("--fastai-path", default=os.environ.get("FASTAI_PATH", ""),
                    help="folder where fastai was installed with pip --target (section e's peer row; default $FASTAI_PATH or empty = skip the row)")
    a = ap.parse_args()

    home = tempfile.mkdtemp(prefix="ts-bench-engine-")
    os.environ["TRANSFER_STUDIO_HOME"] = home
    import torch

    from core.config import RunConfig
    from core.data.datasets import make_sample
    from core.techniques import fit

    root = make_sample("shapes", Path(home) / "shapes", per_class=a.per_class)
    n_images = 3 * a.per_class
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = dict(data=str(root), backbone="efficientnet_lite0", image_size=a.image_size, batch_size=32, lr=1e-3,
                device=device, seed=0, num_workers=0)
    print(f"machine: {machine()}")
    print(f"data: shapes sample, {n_images} images ({a.per_class} per class), input {a.image_size} px, "
          f"batch 32, EfficientNet-Lite0 (ImageNet weights), device {device}; best of {a.repeats}")
    rows = []

    def row(name: str, value: float, target: str, detail: str) -> None:
        rows.append({"measure": name, "ratio": round(value, 3), "target": target, "detail": detail})
        print(f"{name:<58} {value:7.3f}x   target {target:<8} {detail}", flush=True)

    fit(RunConfig(**base, epochs=1, augment="none"))  # warm-up: decode cache, index cache, weights file
    if "a" in a.only:
        section_a(a, base, row)
    if "b" in a.only:
        section_b(a, base, row)
    if "c" in a.only:
        section_c(a, base, row)
    if "d" in a.only and device == "cuda":
        section_d(base, rows, n_train=int(round(n_images * 0.8)))
    if "e" in a.only:
        section_e(a, base, row)
    print("json: " + json.dumps(rows))


def section_a(a, base, row) -> None:
    """Head-only training on cached features against its floor and against recomputing."""
    from core.config import RunConfig
    from core.techniques import fit

    head = RunConfig(**base, epochs=10, trainable="head", augment="none", cache_features=True)
    slow = RunConfig(**base, epochs=10, trainable="head", augment="none", cache_features=False)
    infer = inference_pass(head)
    (t_inf, n_inf), (t_head, r_head) = best_of(a.repeats, infer, lambda: fit(head))
    (t_slow, r_slow), = best_of(1, lambda: fit(slow))
    row("(a1) 10-epoch head-only run / one inference pass", t_head / t_inf, "<= 1.3",
        f"{t_head:.2f}s vs {t_inf:.2f}s for {n_inf} images (whole fit(): data, model, embedding, 10 epochs, "
        f"validation, checkpoints)")
    row("(a2) speed-up of cached features over recomputing", t_slow / t_head, ">= 5",
        f"{t_slow:.2f}s vs {t_head:.2f}s; val acc {r_slow['val_accuracy']:.3f} vs {r_head['val_accuracy']:.3f}")


def section_b(a, base, row) -> None:
    """Fine-tuning throughput, every layer trainable, light augmentation in both."""
    from core.config import RunConfig

    ft = RunConfig(**base, epochs=a.finetune_epochs, trainable="all", augment="light", scheduler="constant",
                   weight_decay=1e-4, amp=False)
    plain, n_train = plain_loop(ft, a.finetune_epochs)
    (_, p_out), (_, e_out) = best_of(a.repeats, plain, engine_loop(ft))
    ips_plain = n_train * a.finetune_epochs / p_out["loop_s"]
    ips_engine = n_train * a.finetune_epochs / e_out["loop_s"]
    row("(b) fine-tuning images/s, engine / plain PyTorch loop", ips_engine / ips_plain, ">= 1.0",
        f"{ips_engine:.1f} vs {ips_plain:.1f} img/s over {a.finetune_epochs} epochs of {n_train} images "
        f"(train + validation each epoch; the engine also writes last.pt every epoch)")


def section_c(a, base, row) -> None:
    """The app's overhead over headless: the same config through the app's job path and through the CLI."""
    from core.config import RunConfig
    from core.techniques import fit

    app_cfg = RunConfig(**base, epochs=3, trainable="last-1", augment="light")
    (t_cli, cli_out), (t_app, app_out), (_, fit_s), (_, thread_out) = best_of(
        a.repeats, headless_cli(app_cfg), via_jobs(app_cfg), lambda: _train_seconds(fit(app_cfg)["run_dir"]),
        via_jobs(app_cfg, "thread"))
    row("(c1) app path (job process + 1 s polling) / headless CLI", t_app / t_cli, "< 1.03",
        f"{t_app:.2f}s vs {t_cli:.2f}s wall, both including process start-up; {app_out['polls']} snapshot "
        f"polls, job {app_out['status']}")
    row("(c2) training time logged by the run: app / headless CLI", app_out["train_s"] / cli_out["train_s"],
        "< 1.03", f"{app_out['train_s']:.2f}s vs {cli_out['train_s']:.2f}s from the runs' start to end events")
    # For the record: the earlier design trained in a worker thread of the server process, where
    # PyTorch's OpenMP pool runs slower than on a process's main thread.
    row("(c3) former in-thread app path / fit on this process's main thread", thread_out["train_s"] / fit_s,
        "(info)", f"{thread_out['train_s']:.2f}s vs {fit_s:.2f}s of logged training")


def section_d(base, rows, n_train: int) -> None:
    """CUDA only: absolute fine-tuning throughput with and without AMP."""
    import torch

    from core.config import RunConfig

    for amp in (False, True):
        cfg = RunConfig(**{**base, "image_size": 224}, epochs=2, trainable="all", augment="light", amp=amp)
        out = engine_loop(cfg)()
        ips = n_train * 2 / out["loop_s"]
        print(f"(d) fine-tuning on {torch.cuda.get_device_name(0)} at 224 px, amp={amp}: {ips:.0f} images/s")
        rows.append({"measure": f"(d) images/s amp={amp}", "value": round(ips, 1)})


def fastai_fine_tune(config, fastai_path: str, epochs: int = 3):
    """fastai's ``fine_tune(epochs)`` on the same files and the same EfficientNet-Lite0 body, or None when fastai
    cannot be imported. Its loop time runs from the first batch to the last validation."""
    if fastai_path:
        sys.path.append(fastai_path)  # appended: torch and the rest still come from this environment
    try:
        from fastai.vision.all import (CrossEntropyLossFlat, ImageDataLoaders, Learner, Resize, accuracy,
                                       aug_transforms, params)
    except ImportError as e:
        print(f"fastai not installed ({e}); pass --fastai-path (see the module docstring)")
        return None
    import torch

    from core.data import datasets
    from core.models import backbones

    root = datasets.resolve(config.data)
    size = config.image_size

    def run() -> dict:
        torch.manual_seed(config.seed)
        dls = ImageDataLoaders.from_folder(root, valid_pct=config.val_fraction, seed=config.seed, bs=config.batch_size,
                                           item_tfms=Resize(size), batch_tfms=aug_transforms(size=size),
                                           num_workers=0)
        model = backbones.build_model(config.backbone, len(dls.vocab), pretrained=True)
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                        splitter=lambda m: [params(m.body), params(m.head)])
        t0 = time.perf_counter()
        with learn.no_bar(), learn.no_logging():
            learn.fine_tune(epochs, base_lr=config.lr)
        loop_s = time.perf_counter() - t0
        with learn.no_bar():
            return {"loop_s": loop_s, "val_acc": float(learn.validate()[1])}
    return run


def section_e(a, base, row) -> None:
    """Issue 13's speed targets: cached augmented views, and the fine-tune recipe against fastai's."""
    from core.config import RunConfig
    from core.techniques import fit
    from core.train import presets

    head = RunConfig(**base, epochs=10, trainable="head", augment="light", cached_views=2)
    (t_inf, n_inf), (t_head, r_head) = best_of(a.repeats, inference_pass(head), lambda: fit(head))
    row("(e1) head-only, light augmentation (cached_views=2) / one inference pass", t_head / t_inf, "<= 3",
        f"{t_head:.2f}s vs {t_inf:.2f}s for {n_inf} images; val acc {r_head['val_accuracy']:.3f}")
    # the "best" preset's fine-tuning mechanics: the body's BatchNorm keeps its statistics (body_eval), one group
    # more per epoch after the frozen one (gradual unfreezing), early epochs at lower resolution
    ours = RunConfig(**base, epochs=4, trainable="all", unfreeze_after=1, unfreeze_mode="gradual", body_eval=True,
                     augment="light", progressive_resize=presets.PROGRESSIVE)
    peer = fastai_fine_tune(ours, a.fastai_path)
    if peer is None:
        row("(e2) fine-tune 1+3 epochs, engine / fastai fine_tune(3)", float("nan"), "<= 0.35", "fastai not installed")
        return
    (_, f_out), (_, e_out) = best_of(a.repeats, peer, engine_loop(ours))
    row("(e2) fine-tune 1+3 epochs, engine / fastai fine_tune(3)", e_out["loop_s"] / f_out["loop_s"], "<= 0.35",
        f"{e_out['loop_s']:.2f}s vs {f_out['loop_s']:.2f}s; val acc {e_out['val_acc']:.3f} vs {f_out['val_acc']:.3f} "
        f"(engine: unfreeze_after 1, gradual, body_eval, progressive_resize {presets.PROGRESSIVE})")


if __name__ == "__main__":
    main()
