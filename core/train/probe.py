"""Linear-probe warm start: a multinomial logistic regression on frozen-body features, copied into the head.

"Linear probe, then fine-tune" (Kumar et al. 2022): a head trained to convergence on the pretrained
features starts fine-tuning from a good point instead of a random one, and a head-only run starts where
scikit-learn's ``LogisticRegression`` would end. The fit is full-batch L-BFGS in torch, so it runs on the
features the loop already holds (or embeds once) and gives every DDP rank the same weights.
"""
from __future__ import annotations

import torch
from torch import nn
from core.i18n import _

# Inverse L2 strength as scikit-learn counts it (loss summed over rows + ||W||^2 / (2 C)); 1.0 is its default
# and what the "ten lines of scikit-learn" baseline uses, which the warm start must match.
PROBE_C = 1.0
MAX_ITER = 200


def fit_linear(feats: torch.Tensor, labels: torch.Tensor, n_classes: int, c: float = PROBE_C,
               class_weight: torch.Tensor | None = None, max_iter: int = MAX_ITER) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [n_classes, dim], bias [n_classes]) of an L2-regularised multinomial logistic regression."""
    x = feats.double()
    y = labels.long()
    n, dim = x.shape
    w = torch.zeros(n_classes, dim, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    cw = None if class_weight is None else class_weight.double()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        # the mean loss plus the penalty divided by n is scikit-learn's objective scaled by 1/n: same optimum
        loss = nn.functional.cross_entropy(x @ w.T + b, y, weight=cw, reduction="sum") / n
        loss = loss + (w * w).sum() / (2 * c * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().float(), b.detach().float()


def cross_validated(feats: torch.Tensor, labels: torch.Tensor, n_classes: int, folds: int, seed: int = 0) -> float:
    """Mean held-out accuracy of the probe over ``folds`` stratified folds of (features, labels): how well a linear
    head on these features generalises, estimated from training images alone."""
    from sklearn.model_selection import StratifiedKFold

    scores = []
    y = labels.long()
    for fit_rows, test_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(feats.numpy(), y.numpy()):
        fit_rows, test_rows = torch.as_tensor(fit_rows), torch.as_tensor(test_rows)
        w, b = fit_linear(feats[fit_rows], y[fit_rows], n_classes)
        scores.append(float(((feats[test_rows] @ w.T + b).argmax(1) == y[test_rows]).float().mean()))
    return sum(scores) / len(scores)


def accuracy(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows the head classifies right (0.0 for no rows)."""
    if not len(labels):
        return 0.0
    with torch.no_grad():
        dev = next(head.parameters()).device
        pred = head(feats.to(dev)).float().argmax(1).cpu()
    return int((pred == labels).sum()) / len(labels)


def warm_start(head: nn.Linear, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
               class_weight: torch.Tensor | None = None) -> dict:
    """Fit the probe on ``train`` (features, labels), copy it into ``head``; returns the probe's accuracies."""
    if not isinstance(head, nn.Linear):
        raise TypeError(_("the probe warm start fits a linear head; this model's head is {name} — set probe_init "
                          "to false for it").format(name=type(head).__name__))
    w, b = fit_linear(*train, head.out_features, class_weight=class_weight)
    with torch.no_grad():
        head.weight.copy_(w.to(head.weight))
        head.bias.copy_(b.to(head.bias))
    return {"probe_train_acc": accuracy(head, *train), "probe_val_acc": accuracy(head, *val),
            "probe_val_loss": _loss(head, *val), "n_train": len(train[1]), "c": PROBE_C}


def _loss(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float | None:
    if not len(labels):
        return None
    with torch.no_grad():
        dev = next(head.parameters()).device
        return float(nn.functional.cross_entropy(head(feats.to(dev)).float().cpu(), labels))
