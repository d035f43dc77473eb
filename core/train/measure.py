"""Measuring a dataset and this machine for the training recipes (core.train.presets): class counts, image sides,
what decoding an image costs, and how fast a backbone runs here. Each is measured on a sample, once."""
from __future__ import annotations

import statistics
import time

DECODE_S = 0.002            # seconds to decode and resize one small image into the cache (when none was timed)
DECODE_TIMED = 3            # images of the dataset timed to estimate its decoding (a phone photo: ~13x the small-image floor)


def dataset_stats(data: str, sample: int = 64) -> dict:
    """Class counts, how many images train and validate, the shorter sides of up to ``sample`` images, and
    ``decode_s``: the seconds one image takes to decode into the cache, timed on a few of them."""
    from PIL import Image

    from core.data import datasets

    index = datasets.load_index(data)
    counts = index.counts()
    step = max(1, len(index.items) // sample)
    sides, paths = [], []
    for item in index.items[::step][:sample]:
        try:
            with Image.open(f"{index.root}/{item.path}") as im:  # the header only: no pixels decoded
                sides.append(min(im.size))
                paths.append(f"{index.root}/{item.path}")
        except OSError:
            continue
    n = len(index.items)
    n_val = sum(it.split == "val" for it in index.items) or round(n * 0.2)
    return {"counts": counts, "sides": sides, "n": n, "n_train": n - n_val, "n_val": n_val,
            "decode_s": decode_seconds(paths[::max(1, len(paths) // DECODE_TIMED)][:DECODE_TIMED])}


def decode_seconds(paths: list[str], side: int = 256) -> float:
    """Seconds per image to decode and square ``paths`` as the cache does (core.data.datasets.ImageCache), on
    the threads it decodes with: the median of the images timed, ``DECODE_S`` when none could be."""
    import os

    from core.data.datasets import square_from_file
    from core.data.imageio import ImageError
    from core.data.preprocess import Preprocessing

    pre, times = Preprocessing(resize_size=side, crop_size=side), []
    for path in paths:
        t0 = time.perf_counter()
        try:
            square_from_file(path, pre)
        except ImageError:
            continue
        times.append(time.perf_counter() - t0)
    threads = min(4, os.cpu_count() or 1)  # as the cache's decoding pool
    # DECODE_S also covers the cache's own work per image (writing, the pool): a floor for tiny images
    return max(DECODE_S, statistics.median(times) / threads) if times else DECODE_S


_RATES: dict[tuple, tuple[float, float]] = {}  # (backbone, size, device, trainable) -> (eval img/s, train img/s)


def throughput(backbone: str, size: int, device: str = "auto", trainable: str = "head") -> tuple[float, float]:
    """(images/s forward in eval mode, images/s forward+backward with ``trainable`` learning), measured once
    per process on a few random images: what an image costs does not depend on its content. On a CPU each is
    measured in the chunks the loop runs there (``core.models.net``: per-image cost depends on the chunk)."""
    import torch

    from core.models import backbones, freezing, net
    from core.train import loop

    dev = loop.pick_device(device)
    key = (backbone, size, str(dev), trainable)
    if key in _RATES:
        return _RATES[key]
    model = backbones.build_model(backbone, 2, pretrained=False).to(dev)
    groups = freezing.plan(backbone, trainable)
    freezing.apply(model, backbone, groups)
    if dev.type == "cpu":  # at most the loop's default batch of 32
        sizes = [min(32, net.cpu_chunk(size * size, budget)) for budget in (net.INFER_PIXELS, net.TRAIN_PIXELS)]
    else:
        sizes = [8, 8]
    fmt = torch.channels_last if dev.type in ("cuda", "cpu") else torch.contiguous_format  # as the loop runs it
    model.to(memory_format=fmt)                                   # (core.train.loop.use_channels_last)

    def timed(fn, batch: int) -> float:
        fn()  # warm-up: first calls pay for kernel selection and allocation
        best = float("inf")
        for _try in range(2):  # the faster of two: other processes on a shared machine only ever slow one down
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return batch / max(best, 1e-6)

    def images(batch: int):
        return torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=fmt)

    def forward(x):
        with torch.no_grad():
            model(x)

    def train_step(x):
        freezing.set_train_mode(model, backbone, groups)
        model(x).sum().backward()
        model.eval()
    x_eval, x_train = images(sizes[0]), images(sizes[1])
    fwd = timed(lambda: (model.eval(), forward(x_eval)), sizes[0])
    trn = fwd if groups == ["head"] else timed(lambda: train_step(x_train), sizes[1])
    _RATES[key] = (fwd, trn)
    return _RATES[key]
