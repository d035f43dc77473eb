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

import dataclasses
import json
import re
import time
from pathlib import Path

import torch
from torch import nn

from core.models import backbones
from core.data import datasets
from core.results import loading
from core.models import freezing
from core.storage import runs
from core.config import RunConfig
from core.data.imageio import is_image_name
from core.train.loop import Control, logged_run, pick_device, seed_everything

ADAPTED_FILE = backbones.ADAPTED_FILE


# --- the objective -------------------------------------------------------------------------------

def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent: for each of the 2N embeddings, cross-entropy of picking its pair among the other 2N-1."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent expects two (N, D) tensors of the same shape; got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if len(z1) < 2:
        raise ValueError("nt_xent needs at least 2 images per batch (the other images are the negatives)")
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


class TwoViews(torch.utils.data.Dataset):
    """Two independent random views of each cached image."""

    def __init__(self, paths: list[str], cache: datasets.ImageCache, transform):
        self.paths, self.cache, self.transform = paths, cache, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = self.cache.get(self.paths[i])
        return self.transform(img), self.transform(img)


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
            raise ValueError(f"no images found in {src!s}; pretraining needs a folder or .zip holding images "
                             f"(labels are not needed)")
        out.extend(found)
    return out


# --- pretraining ---------------------------------------------------------------------------------

def pretrain(base_backbone: str, sources: list[str] | str, epochs: int = 5, batch_size: int = 32,
             temperature: float = 0.2, lr: float = 3e-4, image_size: int = 0, trainable: str = "all",
             projection_dim: int = 128, seed: int = 0, device: str = "auto", name: str = "",
             on_event=None, control: Control | None = None, run: runs.Run | None = None) -> runs.Run:
    """Adapt ``base_backbone`` to the images of ``sources`` with SimCLR; returns the run (see module doc)."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise ValueError("pretrain needs at least one image source (a folder, a .zip or sample:NAME)")
    if str(base_backbone).startswith(backbones.ADAPTED_PREFIX):
        raise ValueError(f"start from a registry backbone ({', '.join(backbones.names())}), "
                         f"not an adapted one; got {base_backbone!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (SimCLR uses 0.1-0.5); got {temperature!r}")
    if trainable == "head":
        raise ValueError("trainable='head' would adapt nothing (the head is thrown away after pretraining); "
                         "use 'all' or 'last-N'")
    if not (isinstance(batch_size, int) and batch_size >= 2):
        raise ValueError(f"batch_size must be an integer >= 2 (the other images are the negatives); got {batch_size!r}")
    dataset = " + ".join(_source_name(s) for s in sources)
    config = RunConfig(data=sources[0], backbone=base_backbone, image_size=image_size, trainable=trainable,
                       epochs=epochs, batch_size=batch_size, lr=lr, scheduler="cosine", augment="none",
                       seed=seed, device=device, name=name or f"SimCLR on {dataset}",
                       extra={"kind": "adapted", "technique": "simclr", "sources": sources, "dataset": dataset,
                              "temperature": temperature, "projection_dim": projection_dim}).validate()
    control = control or Control()
    run = run or runs.create(config)

    logged_run(run, on_event, lambda emit: _pretrain(config, run, emit, control),
               "stopped by the user; the body from the last finished epoch is kept (if any)")
    return run


def fit_config(config: RunConfig, on_event=None, control: Control | None = None, run: runs.Run | None = None,
               resume: bool = False) -> dict:
    """Same call as trainer.fit, for job runners: sources, temperature and projection size from ``config.extra``."""
    if resume:
        raise ValueError("a pretraining run cannot be resumed; start it again")
    extra = config.extra
    run = pretrain(config.backbone, extra.get("sources") or [config.data], epochs=config.epochs,
                   batch_size=config.batch_size, temperature=float(extra.get("temperature", 0.2)), lr=config.lr,
                   image_size=config.image_size, trainable=config.trainable,
                   projection_dim=int(extra.get("projection_dim", 128)), seed=config.seed, device=config.device,
                   name=config.name, on_event=on_event, control=control, run=run)
    return run.result() or {"status": run.status(), "run_dir": str(run.path)}


def _pretrain(config: RunConfig, run: runs.Run, emit, control: Control) -> dict:
    seed_everything(config.seed, config.deterministic)
    device = pick_device(config.device)
    pre = backbones.preprocessing_for(config)
    extra = config.extra
    paths = image_paths(extra["sources"])
    if len(paths) < 2:
        raise ValueError(f"found {len(paths)} image; contrastive pretraining needs at least 2")
    cache = datasets.ImageCache(paths, pre, progress=lambda d, t: emit("phase", phase="decoding images", done=d, total=t))

    torch.manual_seed(config.seed)
    model = backbones.build_model(config.backbone, 1, pretrained=config.pretrained)
    groups = freezing.plan(config.backbone, config.trainable)
    counts = freezing.apply(model, config.backbone, groups)
    proj = ProjectionHead(backbones.feature_dim(model), extra["projection_dim"])
    model.to(device)
    proj.to(device)
    params = [p for p in model.body.parameters() if p.requires_grad] + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    batch = min(config.batch_size, len(paths))
    g = torch.Generator()
    g.manual_seed(config.seed)
    # A last batch of one image has no negatives; dropping it loses at most batch-1 images per epoch.
    loader = torch.utils.data.DataLoader(TwoViews(paths, cache, view_transform(pre)), batch_size=batch,
                                         shuffle=True, generator=g, drop_last=True, num_workers=config.num_workers)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    emit("start", technique="simclr", device=str(device), n_images=len(paths), sources=extra["sources"],
         dataset=extra["dataset"], trainable_groups=groups, params_trainable=counts["trainable"] - _head_params(model),
         params_total=counts["total"] - _head_params(model), steps_per_epoch=steps_per_epoch, epochs=config.epochs,
         temperature=extra["temperature"], versions=loading.versions())

    step, ips, t_loop = 0, 0.0, time.time()
    loss_v = acc_v = float("nan")
    for epoch in range(config.epochs):
        freezing.set_train_mode(model, config.backbone, groups)
        proj.train()
        tot_loss = tot_acc = 0.0
        n_batches, t_epoch = 0, time.time()
        for v1, v2 in loader:
            control.checkpoint()
            t_step = time.time()
            x = datasets.normalize(torch.cat([v1, v2]).to(device), pre)
            z = proj(model.body(x))
            z1, z2 = z.chunk(2)
            loss = nt_xent(z1, z2, extra["temperature"])
            if not torch.isfinite(loss):
                raise RuntimeError(f"the contrastive loss became {loss.item()} at step {step + 1}; "
                                   f"lower the learning rate (now {config.lr:g}) or raise the temperature")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            acc = _pair_accuracy(z1.detach(), z2.detach())
            tot_loss += loss.item()
            tot_acc += acc
            n_batches += 1
            rate = len(v1) / max(time.time() - t_step, 1e-9)
            ips = rate if ips == 0 else 0.9 * ips + 0.1 * rate
            eta = (time.time() - t_loop) / step * (total - step)
            emit("step", epoch=epoch + 1, step=step, total_steps=total, loss=loss.item(), pair_acc=acc,
                 lr=opt.param_groups[0]["lr"], images_per_s=ips, eta_s=eta)
        loss_v, acc_v = tot_loss / max(n_batches, 1), tot_acc / max(n_batches, 1)
        _save_body(run, model, config, pre, {"loss": loss_v, "pair_acc": acc_v, "epochs": epoch + 1})
        emit("epoch", epoch=epoch + 1, epochs=config.epochs, train_loss=loss_v, pair_acc=acc_v,
             lr=opt.param_groups[0]["lr"], time_s=time.time() - t_epoch, images_per_s=ips)

    result = {"status": "finished", "technique": "simclr", "backbone_name": backbones.adapted_name(config.backbone, run.id),
              "loss": loss_v, "pair_acc": acc_v, "run_dir": str(run.path), "elapsed_s": time.time() - t_loop}
    runs.atomic_write_text(run.path / "result.json", json.dumps(result, indent=2))
    return result


def _head_params(model: backbones.TransferNet) -> int:
    """Parameters of the TransferNet's classification head, which pretraining never uses."""
    return sum(p.numel() for p in model.head.parameters() if p.requires_grad)


def _save_body(run: runs.Run, model: backbones.TransferNet, config: RunConfig, pre, metrics: dict) -> None:
    card = {"format": loading.FORMAT, "kind": "adapted", "backbone": config.backbone,
            "name": backbones.adapted_name(config.backbone, run.id), "dataset": config.extra["dataset"],
            "sources": config.extra["sources"], "preprocessing": pre.to_dict(), "config": config.to_dict(),
            "metrics": metrics, "versions": loading.versions()}
    loading.save_safetensors(model.body, card, run.path / ADAPTED_FILE)
