"""Quality benchmark (issue 13): each preset's accuracy and wall time next to a linear probe, on sets built here.

    python benchmarks/bench_quality.py            # the full table (about 8-10 minutes on 2 CPU cores)
    python benchmarks/bench_quality.py --quick    # a smoke run: one tiny set, the quick preset

For every dataset: a linear probe (scikit-learn logistic regression on frozen EfficientNet-Lite0 features of the
same train/validation split, computed in this run) and, for each preset, ``core.train.presets.plan`` ->
``fit`` -> validation accuracy, held-out test accuracy, wall time of the whole run and the plan's expected time;
for the "balanced" run also the int8 export's validation accuracy next to fp32
(``core.results.formats.int8_summary``).

Each dataset has a held-out test set that no run sees while training or choosing its checkpoint, scored with
``core.results.metrics.evaluate_on`` (the app's "Test on another dataset"): the low-data sets validate on 5 to
12 images, where one image moves accuracy by 8 to 20 points, and the checkpoint is chosen on validation. The test
sets are 40 more images per class: digits 31-70 of each class in scikit-learn's order (later writers than the
training images: harder), shapes and photo crops drawn with another seed.
``--tta`` adds each model's validation accuracy with flip and with multi-crop test-time augmentation.

Datasets: scikit-learn digits (8x8 images stored at 64 px, trained at whatever size the preset picks), Pillow
shapes, a low-data subset of each, and "photos": crops of the two photographs scikit-learn ships
(``load_sample_images``: a temple in China and a flower), a two-class real-photo set that needs no network.
The presets run under a per-preset time budget (``--budgets``) so the whole table fits in ten minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRESET_NAMES = ("quick", "balanced", "best")


def sample_photos(dest: Path, per_class: int, size: int = 160, seed: int = 0) -> Path:
    """Random square crops (25-60 % of the shorter side, some mirrored) of scikit-learn's two sample photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = random.Random(seed)
    data = load_sample_images()
    for name, arr in zip(("china", "flower"), data.images):
        img = Image.fromarray(arr)
        (dest / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(min(img.size) * rng.uniform(0.25, 0.6))
            x, y = rng.randrange(img.width - side), rng.randrange(img.height - side)
            crop = img.crop((x, y, x + side, y + side)).resize((size, size))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop.save(dest / name / f"{name}_{i:03d}.jpg", quality=90)
    return dest


TEST_PER_CLASS = 40  # held-out test images per class


def build_sets(root: Path, quick: bool, only: list[str] | None = None) -> dict[str, tuple[Path, Path]]:
    """The benchmark's datasets as (training folder, held-out test folder) of class folders under ``root``
    (``only``: these names, in this order). The low-data sets share their full set's test folder."""
    from core.data.datasets import make_sample

    tests = {"digits": lambda: make_sample("digits", root / "digits-test", per_class=TEST_PER_CLASS, skip=30),
             "shapes": lambda: make_sample("shapes", root / "shapes-test", per_class=TEST_PER_CLASS, seed=1),
             "photos": lambda: sample_photos(root / "photos-test", per_class=TEST_PER_CLASS, seed=1)}
    if quick:
        return {"shapes-low": (make_sample("shapes", root / "shapes-low", per_class=8),
                               make_sample("shapes", root / "shapes-test", per_class=10, seed=1))}
    makers = {"digits": lambda: make_sample("digits", root / "digits", per_class=30),
              "digits-low": lambda: make_sample("digits", root / "digits-low", per_class=6),
              "shapes": lambda: make_sample("shapes", root / "shapes", per_class=40),
              "shapes-low": lambda: make_sample("shapes", root / "shapes-low", per_class=8),
              "photos": lambda: sample_photos(root / "photos", per_class=40)}
    unknown = [n for n in only or [] if n not in makers]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(makers)}")
    held_out: dict[str, Path] = {}  # family (digits, shapes, photos) -> its test folder
    out = {}
    for name in only or makers:
        family = name.split("-")[0]
        if family not in held_out:
            held_out[family] = tests[family]()
        out[name] = (makers[name](), held_out[family])
    return out


def linear_probe(data: Path, test: Path, seed: int = 0, val_fraction: float = 0.2) -> dict:
    """Logistic regression on frozen EfficientNet-Lite0 features (224 px, ImageNet preprocessing) of the split
    the runs use: the simplest honest baseline; scored on the validation split and the held-out ``test`` set."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from core.config import RunConfig
    from core.data import datasets
    from core.models import backbones

    t0 = time.perf_counter()
    config = RunConfig(data=str(data), seed=seed, val_fraction=val_fraction)
    pre = backbones.preprocessing_for(config)
    split = datasets.split(datasets.load_index(str(data)), val_fraction, seed)
    # the test folder's classes in the training split's order
    test_items = [(p, split.classes.index(y)) for p, y in _labelled(test)]
    cache = datasets.ImageCache([p for p, _ in split.train + split.val + test_items], pre)
    crop = datasets.eval_transform(pre)
    body = backbones.build_model(config.backbone, len(split.classes), pretrained=True).body.eval()

    @torch.no_grad()
    def embed(items):
        xs = [datasets.normalize(torch.stack([crop(cache.get(p)) for p, _ in items[i:i + 64]]), pre)
              for i in range(0, len(items), 64)]
        return torch.cat([body(x) for x in xs]).numpy()

    xtr, xva, xte = embed(split.train), embed(split.val), embed(test_items)
    ytr, yva, yte = (np.array([y for _, y in items]) for items in (split.train, split.val, test_items))
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(xtr, ytr)
    return {"val_acc": float((clf.predict(xva) == yva).mean()), "test_acc": float((clf.predict(xte) == yte).mean()),
            "wall_s": time.perf_counter() - t0, "n_train": len(ytr), "n_val": len(yva), "n_test": len(yte)}


def _labelled(folder: Path) -> list[tuple[str, str]]:
    """(path, class name) of every image in a folder of class folders."""
    from core.data import datasets

    index = datasets.load_index(str(folder))
    return [(str(Path(index.root) / it.path), it.label) for it in index.items]


def run_preset(data: Path, test: Path, preset: str, budget: float, int8: bool, tta: bool = False) -> dict:
    """plan -> fit -> accuracy and wall time (planning included), then the held-out ``test`` accuracy; optionally
    the int8 export's accuracy and the validation accuracy with flip and multi-crop test-time augmentation (all
    after the wall time is taken)."""
    from core.config import RunConfig
    from core.results import formats
    from core.techniques import fit
    from core.train import presets

    t0 = time.perf_counter()
    plan = presets.plan(str(data), preset, time_budget_s=budget)
    fields = {k: v for k, v in plan.fields.items() if k not in ("preset", "data")}
    res = fit(RunConfig(data=str(data), preset=preset, **fields))
    out = {"val_acc": res["val_accuracy"], "wall_s": time.perf_counter() - t0, "expected_s": plan.expected_s,
           "epochs_run": res.get("epochs_run"), "fields": {k: plan.fields[k] for k in
                                                           ("backbone", "image_size", "trainable", "epochs", "lr")
                                                           if k in plan.fields}}
    from core.results import metrics

    out["test_acc"] = metrics.evaluate_on(res["run_dir"], test)["accuracy"]
    if tta:
        out["tta"] = {m: metrics.evaluate_run(res["run_dir"], tta=m)["accuracy"] for m in ("flip", "multicrop")}
    if int8:
        q = formats.int8_summary(formats.export(res["run_dir"], "int8")) or {}
        out["int8"] = {k: q.get(k) for k in ("fp32_val_accuracy", "int8_val_accuracy", "method", "within_tolerance")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: one tiny dataset, the quick preset only (default off)")
    ap.add_argument("--presets", default=",".join(PRESET_NAMES),
                    help="comma-separated presets to run, from quick, balanced, best (default all three)")
    ap.add_argument("--budgets", default="quick=15,balanced=30,best=45",
                    help="seconds of time budget per preset, name=seconds (default quick=15,balanced=30,best=45; the presets' own defaults are 60/300/1200 s)")
    ap.add_argument("--tta", action="store_true", help="also evaluate every preset's model with flip and multi-crop "
                                                       "test-time augmentation (default off)")
    ap.add_argument("--sets", default="",
                    help="comma-separated datasets to run, from digits, digits-low, shapes, shapes-low, photos "
                         "(default empty = all five)")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 export of the balanced runs (default: export and compare)")
    a = ap.parse_args()

    home = tempfile.mkdtemp(prefix="ts-bench-quality-")
    os.environ["TRANSFER_STUDIO_HOME"] = home
    from bench_engine import machine  # noqa: E402 (after the workspace is set)

    budgets = {k: float(v) for k, v in (kv.split("=") for kv in a.budgets.split(","))}
    names = ["quick"] if a.quick else [p for p in a.presets.split(",") if p]
    t_all = time.perf_counter()
    print(f"machine: {machine()}")
    sets = build_sets(Path(home) / "data", a.quick, [n for n in a.sets.split(",") if n])
    rows = []
    print("probe: scikit-learn logistic regression on frozen EfficientNet-Lite0 features at 224 px; "
          "diff: test accuracy minus the probe's")
    print(f"{'dataset':<11} {'train/val/test':>14} {'preset':<9} {'val acc':>7} {'test':>6} {'probe':>6} {'diff':>6} "
          f"{'wall s':>7} {'expect s':>8} {'px':>4} {'learns':<7} {'body':<6} [--tta: flip, multi-crop acc]  int8 / fp32")
    for ds, (path, test) in sets.items():
        probe = linear_probe(path, test)
        print(f"{ds:<11} {probe['n_train']:>4}/{probe['n_val']:<3}/{probe['n_test']:<4} {'probe':<9} "
              f"{probe['val_acc']:7.3f} {probe['test_acc']:6.3f} {'':>6} {'':>6} {probe['wall_s']:7.1f}", flush=True)
        rows.append({"dataset": ds, "preset": "linear-probe", **probe})
        for preset in names:
            r = run_preset(path, test, preset, budgets.get(preset, 30.0),
                           int8=preset == ("quick" if a.quick else "balanced") and not a.no_int8, tta=a.tta)
            q = r.get("int8")
            q_text = f"{q['int8_val_accuracy']:.3f} / {q['fp32_val_accuracy']:.3f} ({q['method']})" if q and \
                q.get("int8_val_accuracy") is not None else ""
            if "tta" in r:
                q_text = f"flip {r['tta']['flip']:.3f} mcrop {r['tta']['multicrop']:.3f}  {q_text}"
            body = r["fields"].get("backbone", "").replace("efficientnet_", "")
            print(f"{ds:<11} {'':>14} {preset:<9} {r['val_acc']:7.3f} {r['test_acc']:6.3f} {probe['test_acc']:6.3f} "
                  f"{r['test_acc'] - probe['test_acc']:+6.3f} {r['wall_s']:7.1f} {r['expected_s']:8.1f} "
                  f"{r['fields'].get('image_size') or 0:>4} {r['fields'].get('trainable', ''):<7} {body:<6} {q_text}",
                  flush=True)
            rows.append({"dataset": ds, "preset": preset, "probe_acc": probe["val_acc"],
                         "probe_test_acc": probe["test_acc"], **r})
    print(f"total wall time {time.perf_counter() - t_all:.0f} s")
    print("json: " + json.dumps(rows))


if __name__ == "__main__":
    main()
