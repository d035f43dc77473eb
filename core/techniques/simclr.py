"""Self-supervised domain adaptation (SimCLR): adapt a pretrained body to the user's own images.

``pretrain`` shows the network two random views of every image and trains it, through a small
projection head, to tell which views come from the same image (NT-Xent loss, Chen et al. 2020).
No labels are used, so unlabelled images count too. The projection head is thrown away; the
adapted body is saved in the run directory as ``adapted.safetensors`` with a card
(``"kind": "adapted"``, base backbone, dataset) and becomes the backbone
``adapted:<base>:<run id>``, which ``core.models.backbones`` resolves like a registry entry, so it
fine-tunes like any other through ``RunConfig.backbone``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from core.models import backbones
from core.data import datasets
from core.results import loading
from core.storage import runs
from core.config import RunConfig
from core.data.imageio import is_image_name
from core.i18n import N_, _
from core.train.technique import Data, Technique

ADAPTED_FILE = backbones.ADAPTED_FILE


# --- the objective -------------------------------------------------------------------------------

def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent: for each of the 2N embeddings, cross-entropy of picking its pair among the other 2N-1."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(_("nt_xent expects two (N, D) tensors of the same shape; got {shape} and {shape2}").format(
                             shape=tuple(z1.shape), shape2=tuple(z2.shape)))
    if len(z1) < 2:
        raise ValueError(_("nt_xent needs at least 2 images per batch (the other images are the negatives)"))
    n = len(z1)
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # an embedding is not its own candidate
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return nn.functional.cross_entropy(sim, target)


def _pair_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Share of views whose most similar other view is their own pair: a readable progress signal."""
    n = len(z1)
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return float((sim.argmax(1) == target).float().mean())


class ProjectionHead(nn.Module):
    """The 2-layer MLP SimCLR puts between the body and the loss; discarded after pretraining."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def view_transform(pre: backbones.Preprocessing):
    """SimCLR's augmentation on uint8 CHW tensors: random resized crop, flip, colour jitter, grayscale."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(pre.crop_size, scale=(0.2, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ])


# --- data ----------------------------------------------------------------------------------------

def _source_name(source: str) -> str:
    s = str(source)
    if s.startswith("sample:"):
        return s.split(":", 1)[1]
    p = Path(s)
    return p.stem if p.suffix.lower() == ".zip" else p.name


def image_paths(sources: list[str]) -> list[str]:
    """Every image under the sources (folders, .zip files, sample:NAME); labels and layout are ignored."""
    out: list[str] = []
    for src in sources:
        root = datasets.resolve(src)
        found = sorted(str(p) for p in root.rglob("*")
                       if p.is_file() and is_image_name(p.name)
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not found:
            raise ValueError(_("no images found in {src!s}; pretraining needs a folder or .zip holding images "
                               "(labels are not needed)").format(src=src))
        out.extend(found)
    return out


# --- the technique -------------------------------------------------------------------------------

def pretrain(base_backbone: str, sources: list[str] | str, epochs: int = 5, batch_size: int = 32,
             temperature: float = 0.2, lr: float = 3e-4, image_size: int = 0, trainable: str = "all",
             projection_dim: int = 128, seed: int = 0, device: str = "auto", name: str = "",
             on_event=None, control=None, run: runs.Run | None = None) -> runs.Run:
    """Adapt ``base_backbone`` to the images of ``sources`` with SimCLR; returns the run (see module doc)."""
    from core import techniques

    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise ValueError(_("pretrain needs at least one image source (a folder, a .zip or sample:NAME)"))
    dataset = " + ".join(_source_name(s) for s in sources)
    config = RunConfig(data=sources[0], backbone=base_backbone, image_size=image_size, trainable=trainable,
                       epochs=epochs, batch_size=batch_size, lr=lr, scheduler="cosine", augment="none",
                       seed=seed, device=device, name=name or f"SimCLR on {dataset}", technique="simclr",
                       sources=sources, dataset=dataset, simclr_temperature=temperature,
                       simclr_projection_dim=projection_dim)
    techniques.check(config)
    run = run or runs.create(config)
    techniques.fit(config, on_event, control, run)
    return run


class TwoViewTransform:
    """Two independent random views of one image, stacked: (2, C, H, W)."""

    def __init__(self, view):
        self.view = view

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.view(img), self.view(img)])


class SimCLR(Technique):
    """Contrastive adaptation of the body; the head is a projection head thrown away afterwards."""

    name = "simclr"
    kind = "adapted"
    best_file = backbones.ADAPTED_FILE
    validates = False  # no labels, so no validation split: epochs are judged by the contrastive loss
    drop_last = True   # a last batch of one image has no negatives
    per_sample_loss = False  # each view's loss compares it with every other image of the batch
    stopped_message = N_("stopped by the user; the body from the best finished epoch is kept (if any)")

    def check(self, config: RunConfig) -> None:
        if str(config.backbone).startswith(backbones.ADAPTED_PREFIX):
            raise ValueError(_("start from a registry backbone ({names}), not an adapted one; got {backbone!r}").format(
                                 names=', '.join(backbones.names()), backbone=config.backbone))
        if not config.simclr_temperature > 0:
            raise ValueError(_("simclr_temperature must be > 0 (SimCLR uses 0.1-0.5); got {simclr_temperature!r}").format(
                                 simclr_temperature=config.simclr_temperature))
        if not 8 <= config.simclr_projection_dim <= 4096:
            raise ValueError(_("simclr_projection_dim must be in 8..4096; got {simclr_projection_dim!r}").format(
                                 simclr_projection_dim=config.simclr_projection_dim))
        if config.trainable == "head" and not config.trainable_groups:
            raise ValueError(_("trainable='head' would adapt nothing (the head is thrown away after pretraining); "
                               "use 'all' or 'last-N'"))
        if config.batch_size < 2:
            raise ValueError(_("batch_size must be an integer >= 2 (the other images are the negatives); got "
                               "{batch_size!r}").format(batch_size=config.batch_size))

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        self.run_id, self.base, self.temperature = run.path.name, config.backbone, config.simclr_temperature
        sources = config.sources or [config.data]
        self.dataset = config.dataset or " + ".join(_source_name(s) for s in sources)
        split_file = run.path / "split.json"
        if resume and split_file.exists():
            paths = json.loads(split_file.read_text())["train"]
        else:
            paths = image_paths(sources)
            if len(paths) < 2:
                raise ValueError(_("found {n} image; contrastive pretraining needs at least 2").format(n=len(paths)))
            runs.atomic_write_text(split_file, json.dumps({"sources": sources, "train": paths, "val": []}))
        return Data(paths, {}, info={"n_images": len(paths), "sources": sources, "dataset": self.dataset,
                                     "temperature": self.temperature})

    def build(self, config: RunConfig, data: Data) -> nn.Module:
        net = backbones.build_model(config.backbone, 1, pretrained=config.pretrained)
        net.head = ProjectionHead(backbones.feature_dim(net), config.simclr_projection_dim)
        return net

    def train_transform(self, pre, config: RunConfig):
        return TwoViewTransform(view_transform(pre))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, 0], x[:, 1]])  # every first view, then every second view

    def loss(self, out, y):
        z1, z2 = out.float().chunk(2)
        return nt_xent(z1, z2, self.temperature), {"pair_acc": _pair_accuracy(z1.detach(), z2.detach()),
                                                    "batches": 1.0}

    def step_metrics(self, nums: dict) -> dict:
        return self.train_metrics(nums)

    def train_metrics(self, sums: dict) -> dict:
        return {"pair_acc": sums.get("pair_acc", 0.0) / max(sums.get("batches", 0.0), 1.0)}

    def score(self, config: RunConfig, metrics: dict) -> float:
        return -metrics["train_loss"]

    def card(self, config: RunConfig, pre, metrics: dict) -> dict:
        return {"format": loading.FORMAT, "kind": "adapted", "backbone": config.backbone,
                "name": backbones.adapted_name(config.backbone, self.run_id), "dataset": self.dataset,
                "sources": config.sources or [config.data], "preprocessing": pre.to_dict(),
                "config": config.to_dict(), "versions": loading.versions(),
                "metrics": {"loss": metrics.get("train_loss"), "pair_acc": metrics.get("pair_acc"),
                            "epochs": metrics.get("epoch")}}

    def export_state(self, state: dict) -> dict:
        return {k[len("body."):]: v for k, v in state.items() if k.startswith("body.")}

    def result(self, best_metrics: dict) -> dict:
        return {"backbone_name": backbones.adapted_name(self.base, self.run_id),
                "loss": best_metrics.get("train_loss"), "pair_acc": best_metrics.get("pair_acc")}


TECHNIQUE = SimCLR
