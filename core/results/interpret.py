"""Why the model said what it said: Grad-CAM heatmaps, ROC / precision-recall curves, calibration.

Grad-CAM (Selvaraju et al., 2017) with a forward hook on one layer of the body: the layer's output
A (channels x h x w) and the gradient of the target class score with respect to it give per-channel
weights (the gradient averaged over space); the heatmap is ReLU(sum_k w_k A_k), upsampled to the
input. The layer is a fact of the backbone's registry entry (``BackboneSpec.gradcam_layer``): the last
spatial block of a CNN; for a ViT the input norm of the last encoder block, whose patch tokens (class
token dropped) are reshaped to the patch grid. Adapted backbones inherit their base's layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.models import backbones
from core.i18n import _


def cam_layer(backbone: str) -> str:
    """The module path (inside a TransferNet) Grad-CAM hooks for a backbone, adapted ones included."""
    return f"body.{backbones.get(backbone).gradcam_layer}"  # unknown names get the registry's error


def _to_spatial(act: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) as is; ViT tokens (N, 1 + h*w, C) -> (N, C, h, w) without the class token."""
    if act.dim() == 4:
        return act
    if act.dim() == 3:
        n, t, c = act.shape
        side = int(round((t - 1) ** 0.5))
        if side * side != t - 1:
            raise ValueError(f"cannot lay {t} tokens on a square patch grid (expected 1 class token + side^2)")
        return act[:, 1:, :].transpose(1, 2).reshape(n, c, side, side)
    raise ValueError(f"Grad-CAM needs a spatial layer output (N,C,H,W) or ViT tokens (N,T,C); got shape "
                     f"{tuple(act.shape)} — choose an earlier layer")


@dataclass
class Cam:
    """A Grad-CAM result for one image."""

    heatmap: np.ndarray      # H x W float32 in [0, 1], at the network input's size
    target: int              # class index explained
    probs: np.ndarray        # the model's class probabilities for the image
    layer: str               # module path that was hooked
    signed: bool             # False: no location raised the score, so |map| is shown instead


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | None = None, layer: str | None = None,
             backbone: str | None = None) -> Cam:
    """Grad-CAM for one normalised input (1, 3, H, W); ``target`` defaults to the predicted class."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam takes one image as a (1, 3, H, W) tensor; got shape {tuple(x.shape)}")
    if layer is None:
        if backbone is None:
            raise ValueError("pass layer= (a module path) or backbone= (a registry name) to pick the layer")
        layer = cam_layer(backbone)
    module = model.get_submodule(layer)
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, out):
        store["act"] = out[0] if isinstance(out, tuple) else out

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            inp = x.detach().float().requires_grad_(True)  # so the hooked output needs grad even when frozen
            logits = model(inp)
            probs = torch.softmax(logits.detach().float(), 1)[0]
            t = int(probs.argmax()) if target is None else int(target)
            if not 0 <= t < logits.shape[1]:
                raise ValueError(_("target class {t} is out of range; the model has {n} classes").format(
                                     t=t, n=logits.shape[1]))
            # autograd.grad, not backward(): only this one gradient is computed and no parameter .grad is
            # touched (a model being trained elsewhere keeps its gradients; frozen layers cost nothing).
            grad = torch.autograd.grad(logits[0, t], store["act"])[0]
    finally:
        handle.remove()
        model.train(was_training)
    act, grad = _to_spatial(store["act"].detach()), _to_spatial(grad)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    raw = (weights * act).sum(1, keepdim=True)
    cam = torch.relu(raw)
    signed = bool(cam.max() > 0)
    if not signed:
        cam = raw.abs()
    cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    lo, hi = float(cam.min()), float(cam.max())
    heat = ((cam - lo) / (hi - lo)) if hi > lo else torch.zeros_like(cam)
    return Cam(heat.numpy().astype(np.float32), t, probs.numpy(), layer, signed)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """[0, 1] map -> H x W x 3 uint8 (blue-cyan-yellow-red ramp)."""
    stops = np.array([[0, 0, 128], [0, 128, 255], [0, 255, 200], [255, 255, 0], [255, 64, 0], [200, 0, 0]], float)
    pos = np.clip(heatmap, 0, 1) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heatmap blended over the image (resized to the image's size)."""
    heat = Image.fromarray(colorize(heatmap)).resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), heat, alpha)


@dataclass
class Explanation:
    """What the app shows for one image: the crop the network saw, heatmap, overlay, top-k."""

    image: Image.Image
    heatmap: np.ndarray
    overlay: Image.Image
    label: str
    confidence: float
    target: str
    top_k: list


def explain(loaded, image, target: int | str | None = None, top_k: int = 3) -> Explanation:
    """Grad-CAM for a LoadedModel (core.results.loading.load_model) on one image (path, file-like or PIL)."""
    from core.data.datasets import eval_transform, normalize, to_square
    from core.data.imageio import open_image

    pre = loaded.preprocessing  # decoded as predictions decode it, so the explanation is of the same pixels
    pil = image.convert("RGB") if isinstance(image, Image.Image) else open_image(image, min_side=pre.resize_size)
    u8 = eval_transform(pre)(torch.from_numpy(to_square(pil, pre)).permute(2, 0, 1))
    if isinstance(target, str):
        if target not in loaded.classes:
            raise ValueError(_("unknown class {target!r}; the model knows {classes}").format(
                                 target=target, classes=', '.join(loaded.classes)))
        target = loaded.classes.index(target)
    cam = grad_cam(loaded.model, normalize(u8[None], pre), target, backbone=loaded.card["backbone"])
    crop = Image.fromarray(u8.permute(1, 2, 0).numpy())
    order = np.argsort(-cam.probs)[:max(1, min(top_k, len(loaded.classes)))]
    top = [(loaded.classes[i], float(cam.probs[i])) for i in order]
    return Explanation(crop, cam.heatmap, overlay(crop, cam.heatmap), top[0][0], top[0][1],
                       loaded.classes[cam.target], top)


# --- curves and calibration (from evaluate_run's labels and probabilities) -----------------------

def _labels_probs(rep: dict) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(rep["probs"], dtype=np.float64)
    labels = np.asarray([it["label"] for it in rep["items"]], dtype=int)
    return labels, probs


def roc(labels, probs, classes: list[str]) -> list[dict]:
    """Per-class one-vs-rest ROC: {'class', 'fpr', 'tpr', 'auc'}; auc None when a class has no positives/negatives."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels, probs = np.asarray(labels), np.asarray(probs)
    out = []
    for i, c in enumerate(classes):
        y = (labels == i).astype(int)
        if y.min() == y.max():
            out.append({"class": c, "fpr": [], "tpr": [], "auc": None,
                        "note": _("needs both images of {name} and of other classes").format(name=c)})
            continue
        fpr, tpr, _thresholds = roc_curve(y, probs[:, i])
        out.append({"class": c, "fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(roc_auc_score(y, probs[:, i]))})
    return out


def pr(labels, probs, classes: list[str]) -> list[dict]:
    """Per-class precision-recall: {'class', 'precision', 'recall', 'ap', 'prevalence'}."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels, probs = np.asarray(labels), np.asarray(probs)
    out = []
    for i, c in enumerate(classes):
        y = (labels == i).astype(int)
        if y.sum() == 0:
            out.append({"class": c, "precision": [], "recall": [], "ap": None, "prevalence": 0.0,
                        "note": _("no images of {name} to find").format(name=c)})
            continue
        prec, rec, _thresholds = precision_recall_curve(y, probs[:, i])
        out.append({"class": c, "precision": prec.tolist(), "recall": rec.tolist(),
                    "ap": float(average_precision_score(y, probs[:, i])), "prevalence": float(y.mean())})
    return out


def calibration(labels, probs, bins: int = 10) -> dict:
    """Reliability diagram data and expected calibration error (top-1 confidence, equal-width bins)."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        raise ValueError(_("calibration needs at least one prediction; evaluate on a non-empty set"))
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # right-closed bins so that confidence 1.0 lands in the last bin, as in Guo et al. (2017)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    rows, ece, mce = [], 0.0, 0.0
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
               "confidence": float(conf[m].mean()) if n else None, "accuracy": float(correct[m].mean()) if n else None}
        if n:
            gap = abs(row["accuracy"] - row["confidence"])
            ece += n / len(labels) * gap
            mce = max(mce, gap)
        rows.append(row)
    return {"bins": rows, "ece": float(ece), "mce": float(mce), "n": int(len(labels)),
            "accuracy": float(correct.mean()), "mean_confidence": float(conf.mean())}


def curves_for(rep: dict, bins: int = 10) -> dict:
    """ROC, PR and calibration for an ``evaluate_run`` / ``evaluate_on`` report."""
    labels, probs = _labels_probs(rep)
    return {"roc": roc(labels, probs, rep["classes"]), "pr": pr(labels, probs, rep["classes"]),
            "calibration": calibration(labels, probs, bins)}
