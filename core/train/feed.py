"""What the loop feeds the model: image samples from the decode cache, cached feature rows and views, loaders,
the forward pass that maps a batch to logits, and the one-pass embedding of a dataset's body features."""
from __future__ import annotations

import torch
from torch import nn

from core.config import RunConfig, progressive_side
from core.data import datasets
from core.models.net import infer
from core.train.technique import Technique

EMBED_BATCH = 64  # images per loader batch when features are computed once (benchmarks/bench_engine.py uses it too)


def body_features(body, x: torch.Tensor) -> torch.Tensor:
    """``body(x)`` as float32 on the CPU; image batches on a CPU go through in chunks (``net.infer``)."""
    return infer(body, x).float().cpu()


class Forward:
    """Maps a loader batch to logits: images through the whole model, or cached features through the head."""

    def __init__(self, model, pre, device, amp_dtype, channels_last, features: bool, prepare=None):
        self.model, self.pre, self.device = model, pre, device
        self.amp_dtype, self.channels_last, self.features = amp_dtype, channels_last, features
        self.prepare = prepare or datasets.normalize  # the technique's (Technique.prepare): images by default
        self.size = None  # progressive resizing: the side training images are resized to this epoch (None = as loaded)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.features:
            return self.model.head(x)
        if self.size and x.shape[-1] != self.size:  # on the device, from the decoded crop: no second decode
            x = nn.functional.interpolate(x.float(), size=(self.size, self.size), mode="bilinear",
                                          antialias=True, align_corners=False)
        x = self.prepare(x, self.pre)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return infer(self.model, x)  # in chunks on a CPU when nothing learns (validation)


@torch.no_grad()
def evaluate(forward: Forward, loader, criterion=None) -> dict:
    """Loss, accuracy and per-sample probabilities over a loader (model in eval mode by the caller)."""
    losses, probs, labels = [], [], []
    for x, y in loader:
        logits = forward(x).float()
        y = y.to(logits.device)
        if criterion is not None:
            losses.append(nn.functional.cross_entropy(logits, y, reduction="sum").item())
        probs.append(torch.softmax(logits, 1).cpu())
        labels.append(y.cpu())
    p = torch.cat(probs) if probs else torch.zeros(0, 1)
    t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    n = max(len(t), 1)
    return {"loss": sum(losses) / n, "acc": float((p.argmax(1) == t).float().mean()) if len(t) else 0.0,
            "probs": p, "labels": t}


@torch.no_grad()
def embed(model, loader, pre, device, on_progress=None,
          channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Body features for every image of a loader (body in eval mode): the cached-features fast path."""
    model.body.eval()
    feats, labels, done = [], [], 0
    for x, y in loader:
        x = datasets.normalize(x.to(device), pre)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats.append(body_features(model.body, x))
        labels.append(y)
        done += len(y)
        if on_progress:
            on_progress(done)
    return torch.cat(feats), torch.cat(labels)


def loader(dataset, batch_size, shuffle, config, device, seed=0, generator: torch.Generator | None = None,
            drop_last: bool = False):
    # One generator per run drives shuffling and worker seeds; it is saved in last.pt so a resumed
    # run draws the same batches as an uninterrupted one.
    g = generator
    if g is None:
        g = torch.Generator()
        g.manual_seed(seed)
    kw = {}
    # Cached features are already tensors in memory: worker processes would only add start-up and IPC.
    if config.num_workers > 0 and not isinstance(dataset, (torch.utils.data.TensorDataset, Rows)):
        kw = {"num_workers": config.num_workers, "persistent_workers": True}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g,
                                       pin_memory=device.type == "cuda", drop_last=drop_last, **kw)


class Samples(torch.utils.data.Dataset):
    """(image view, {target: row}) pairs from the decode-once cache."""

    def __init__(self, paths: list[str], targets: dict[str, torch.Tensor], cache, transform):
        self.paths, self.targets, self.cache, self.transform = paths, targets, cache, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(self.cache.get(self.paths[i])), {k: v[i] for k, v in self.targets.items()}


class Rows(torch.utils.data.Dataset):
    """(cached feature row, {target: row}) pairs: the head-only fast path."""

    def __init__(self, feats: torch.Tensor, targets: dict[str, torch.Tensor]):
        self.feats, self.targets = feats, targets

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int):
        return self.feats[i], {k: v[i] for k, v in self.targets.items()}


class Views(Rows):
    """(one of an image's cached views, {target: row}): each epoch draws one view per image (``set_epoch``)."""

    def __init__(self, feats: torch.Tensor, targets: dict[str, torch.Tensor], seed: int):
        super().__init__(feats, targets)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)  # reproducible, and the same on resume
        self.pick = torch.randint(self.feats.shape[1], (len(self.feats),), generator=g)

    def __getitem__(self, i: int):
        return self.feats[i, self.pick[i]], {k: v[i] for k, v in self.targets.items()}


def epoch_image_size(config: RunConfig, full: int, epoch: int) -> int | None:
    """The side of training images in ``epoch`` (0-based) under progressive resizing; None = full size."""
    return progressive_side(config.progressive_resize, config.epochs, full, epoch)


def to_device(y: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in y.items()}


def chunks(x: torch.Tensor, y: dict, size: int):
    """(x, y) in pieces of ``size`` samples: a batch that does not fit goes through in chunks."""
    ys = {k: v.split(size) for k, v in y.items()}
    for i, xc in enumerate(x.split(size)):
        yield xc, {k: v[i] for k, v in ys.items()}


def drop_short_batch(technique: Technique, n_train: int, batch_size: int) -> bool:
    """Whether training drops the short last batch: always for techniques that need it, else whenever the
    training set fills more than one batch (never down to zero steps)."""
    # A 2-image last batch with trainable BatchNorm gives a loss spike at every epoch end (issue 16); fastai
    # and the PyTorch reference scripts drop it. Under DDP each rank's shard holds ceil(n / world) >= its
    # per-rank batch whenever n > batch_size, so every rank still takes at least one step.
    return technique.drop_last or n_train > batch_size


def per_rank_batch(batch_size: int, world: int) -> int:
    """Under DDP each of ``world`` processes takes this many samples per step, so the global batch (and with
    it the number of steps and the learning-rate schedule) stays what one process would use."""
    return max(1, -(-batch_size // world))


@torch.no_grad()
def embed_rows(model, loader, pre, device, on_progress, channels_last: bool,
                prepare=None) -> dict[str, torch.Tensor]:
    """Body features (under "_x") and the targets of every sample of a loader, in order."""
    model.body.eval()
    rows: dict[str, list] = {"_x": []}
    done = 0
    for x, y in loader:
        x = (prepare or datasets.normalize)(x.to(device), pre)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        rows["_x"].append(body_features(model.body, x))
        for k, v in y.items():
            rows.setdefault(k, []).append(v)
        done += len(x)
        on_progress(done)
    return {k: torch.cat(v) for k, v in rows.items()}
