"""int8 quantization that keeps accuracy: post-training first, quantization-aware fine-tuning as the fallback.

The API is torch's FX graph mode (``torch.ao.quantization.quantize_fx``): in torch 2.14 the pt2e flow moved out
to the separate ``torchao`` package and produces graphs for ``torch.compile``, not the TorchScript file we ship.
FX mode folds each BatchNorm into its convolution before observing (``prepare_fx`` on an eval-mode model), and
the default x86 mapping quantizes weights per output channel with a histogram observer on activations.

What this module adds on top (``quantize_to_match``): the float model's validation accuracy is the reference;
the candidates are tried cheapest first and the first one within ``tolerance`` of it is kept:
1. post-training quantization of every layer;
2. the same with the stem convolution and the classifier left in float (the two layers most sensitive to
   int8 in MobileNet-style networks: a 3-channel input and the logits);
3. quantization-aware fine-tuning (fake-quantized forward, straight-through gradients) on the training images.
Every candidate's accuracy is reported, so the Export step can show what int8 cost.

Why the fallback exists (measured with one-off scripts, not a project command, on the digits sample: 8x8 digits upsampled, head-only EfficientNet-Lite0 at
224 px, fp32 0.783 on 60 validation images): there the float body itself is chaotic — Gaussian input noise of
1/255 keeps 72 dB of signal in the features of the sample photos but leaves 0 dB on the digits, and 0.001 drops
fp32 to 0.43 — so post-training int8 lands at 0.567 with or without the sensitive layers in float. Fine-tuning
against the quantizers fixes it: 0.850 after 4 passes (stopped at the first within the point). On the shapes
sample (tests/test_quantize.py) post-training quantization alone stays within the point.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Iterable

import torch
from torch import nn
from core.i18n import _

QAT_MAX_EPOCHS = 8  # most passes over the training images when post-training quantization loses too much
OBSERVE_EPOCHS = 2  # passes that learn the activation ranges before the quantizers are fixed
# small: the float weights are already good; only the rounding is being learned around (on the digits sample,
# 3e-4 wrecked the model in 3 epochs where 1e-4 took int8 from 0.57 after post-training quantization to 0.90)
QAT_LR = 1e-4


def engine() -> str:
    """The quantized backend used for int8 exports on this machine."""
    # x86 is PyTorch's default server backend. On EfficientNet-Lite0 (digits sample, 224 px, 80 validation
    # images) it kept 0.61 accuracy where onednn kept 0.51 (fp32: 0.79); qnnpack is the ARM fallback.
    for name in ("x86", "onednn", "qnnpack"):
        if name in torch.backends.quantized.supported_engines:
            return name
    raise RuntimeError(_("this PyTorch build has no quantized CPU backend; int8 export is unavailable"))


def quantizable(module: nn.Module) -> nn.Module:
    """Rewrite (in place) two patterns that FX post-training quantization handles badly.

    1. Conv2d subclasses with their own forward (EfficientNet-Lite's "same" padding) are traced into
       functional convs that cannot be fused with their BatchNorm: split into ZeroPad2d + a plain Conv2d.
    2. conv-BN-ReLU6 is not a fusable pattern, so the conv output would be quantized over its full,
       mostly negative range: ReLU6 becomes ReLU (fused, range starts at 0) followed by ReLU6 — as
       functions traced at each call site, not modules: EfficientNet calls one ReLU6 module at several
       places (stem and head; expansion and depthwise), and fusion rewrites a module, not a call.
    Both rewrites compute exactly the same function in float.
    """
    for name, m in list(module.named_modules()):
        if isinstance(m, nn.Conv2d) and type(m) is not nn.Conv2d and isinstance(getattr(m, "static_padding", None),
                                                                                 nn.Module):
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, tuple(m.stride), m.padding, m.dilation,
                             m.groups, m.bias is not None, m.padding_mode)
            conv.weight = m.weight
            if m.bias is not None:
                conv.bias = m.bias
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, child, nn.Sequential(m.static_padding, conv))
    for m in list(module.modules()):
        for child_name, child in list(m.named_children()):
            if type(child) is nn.ReLU6:
                setattr(m, child_name, _ReLUThenReLU6())
    return module.eval()


class _ReLUThenReLU6(nn.Module):
    """ReLU6 as two functional calls, traced anew at every call site (so each fuses with its own conv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(nn.functional.relu(x))


def sensitive_layers(module: nn.Module) -> list[str]:
    """Names of the first convolution and the last linear layer: kept in float by the mixed candidate."""
    convs = [n for n, m in module.named_modules() if type(m) is nn.Conv2d]
    linears = [n for n, m in module.named_modules() if type(m) is nn.Linear]
    return convs[:1] + linears[-1:]


def _mapping(qat: bool, keep_float: Iterable[str] = ()):
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping

    # x86: per-channel symmetric int8 weights, histogram-calibrated (QAT: moving-average) uint8 activations
    mapping = (get_default_qat_qconfig_mapping if qat else get_default_qconfig_mapping)(engine())
    for name in keep_float:
        mapping.set_module_name(name, None)
    return mapping


def ptq(float_module: nn.Module, calibration: Iterable[torch.Tensor], keep_float: Iterable[str] = ()) -> nn.Module:
    """Static post-training quantization of a float module (eval mode), calibrated on the given batches."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = engine()
    batches = list(calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices; the API still works in this torch
        module = quantizable(copy.deepcopy(float_module)).eval()
        prepared = prepare_fx(module, _mapping(False, keep_float), (batches[0][:1],))
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_fx(prepared).eval()


def qat(float_module: nn.Module, train: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        epochs: int = QAT_MAX_EPOCHS, lr: float = QAT_LR,
        check: Callable[[nn.Module], float] | None = None, goal: float = float("inf")) -> tuple[nn.Module, list[float]]:
    """Quantization-aware fine-tuning: ``train()`` yields (x, y) batches once per epoch; returns the int8 module
    and the ``check`` score of each epoch's int8 conversion.

    The model stays in eval mode while it learns: BatchNorm keeps its running statistics (a few hundred
    images would only make them worse) and stays folded into the convolutions, as in the int8 graph. The
    observers learn the activation ranges during the first ``OBSERVE_EPOCHS`` passes, then stay fixed so the
    weights learn against the quantizers they will meet. With ``check`` (a score of an int8 module, e.g.
    validation accuracy), each epoch from then on is converted and scored: training stops at the first one
    scoring at least ``goal``, and the best one is returned — the same early stopping on validation as the
    training loop's best checkpoint. Without it, all ``epochs`` run and the last one is returned.
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

    torch.backends.quantized.engine = engine()
    first = next(iter(train()))[0][:1]
    scores: list[float] = []
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = quantizable(copy.deepcopy(float_module)).eval()
        prepared = prepare_qat_fx(module, _mapping(True), (first,))
        prepared.eval()
        opt = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        for epoch in range(epochs):
            if epoch == min(OBSERVE_EPOCHS, epochs - 1):  # ranges settled: fixed quantizers from here on
                prepared.apply(torch.ao.quantization.disable_observer)
            for x, y in train():
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(prepared(x), y).backward()
                opt.step()
            if check is not None and epoch >= min(OBSERVE_EPOCHS, epochs - 1):
                candidate = convert_fx(copy.deepcopy(prepared).eval()).eval()
                scores.append(check(candidate))
                if best is None or scores[-1] > best[1]:
                    best = (candidate, scores[-1])
                if scores[-1] >= goal:
                    break
        if best is None:
            return convert_fx(prepared.eval()).eval(), scores
        return best[0], scores


@torch.no_grad()
def accuracy(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch: int = 32) -> float:
    """Top-1 accuracy of ``module`` on a float batch, computed in chunks."""
    if not len(y):
        return 0.0
    preds = torch.cat([module(x[i:i + batch]).float().argmax(1) for i in range(0, len(x), batch)])
    return float((preds == y).float().mean())


def quantize_to_match(float_module: nn.Module, calibration: list[torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                      train: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None,
                      tolerance: float = 0.01, on_step: Callable[[str], None] | None = None) -> tuple[nn.Module, dict]:
    """The cheapest int8 module within ``tolerance`` of the float model's validation accuracy, and a report.

    ``train`` (a fresh iterator of labelled batches per call) enables the quantization-aware fallback. When no
    candidate gets within the tolerance, the most accurate one is returned and the report says so.
    """
    step = on_step or (lambda _msg: None)
    float_module = float_module.eval()
    fp32 = accuracy(float_module, *val)
    tried: list[dict] = []
    best = None
    candidates = [("post-training, all layers", lambda: ptq(float_module, calibration)),
                  ("post-training, stem and classifier in float",
                   lambda: ptq(float_module, calibration, sensitive_layers(quantizable(copy.deepcopy(float_module)))))]
    epochs_used: list[float] = []

    def fine_tuned() -> nn.Module:
        module, scores = qat(float_module, train, check=lambda m: accuracy(m, *val), goal=fp32 - tolerance)
        epochs_used.extend(scores)
        return module

    if train is not None:
        candidates.append(("quantization-aware fine-tuning", fine_tuned))
    for name, make in candidates:
        step(name)
        module = make()
        acc = accuracy(module, *val)
        tried.append({"method": name, "val_accuracy": acc})
        if epochs_used and name == "quantization-aware fine-tuning":  # passes over the training images it took
            tried[-1]["epochs"] = OBSERVE_EPOCHS + len(epochs_used)
        if best is None or acc > best[1]:
            best = (module, acc, name)
        if fp32 - acc <= tolerance:
            break
    module, acc, name = best
    return module, {"method": name, "fp32_val_accuracy": fp32, "int8_val_accuracy": acc, "n_val": int(len(val[1])),
                    "tolerance": tolerance, "within_tolerance": fp32 - acc <= tolerance, "tried": tried,
                    "engine": engine(), "calibration_images": int(sum(len(b) for b in calibration))}
