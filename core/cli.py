"""Command line: ``python -m core train|predict|export|runs`` — the same engine as the app, headless."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from core import i18n
from core.i18n import N_, _, ngettext
from core.train import control, ddp
from core import cli_text, techniques
from core.cli_common import CliError, flag_fields, progress_printer
from core.config import RunConfig, field_help, fields

TTA_MODES = ("none", "flip", "multicrop")  # core.results.tta.MODES, without importing torch for --help


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(_("expected true or false, got {value}").format(value=repr(text)))


_LISTS = {"list[str] | None": lambda s: [x.strip() for x in s.split(",") if x.strip()],
          "list[float] | None": lambda s: [float(x) for x in s.split(",") if x.strip()]}


# The comments of RunConfig's fields (core.config), which are the help of their flags, for the catalog: a new
# field's comment goes here too, word for word (tests/test_i18n.py fails on a flag whose help stays English).
_FIELD_HELP = (
    N_("dataset: a folder or a .zip (ingested into the workspace)"),
    N_("a name from core.models.backbones.names()"),
    N_("False = random initialisation (a baseline)"),
    N_("network input side in pixels; 0 = the backbone's default (224)"),
    N_('"head" | "last-N" (N backbone groups + head) | "all"'),
    N_(">= 1"),
    N_("head learning rate, > 0"),
    N_("discriminative LRs: each group toward the stem gets lr * decay^k, (0, 1]"),
    N_('"adamw" | "sgd" (momentum 0.9)'),
    N_("SGD only"),
    N_(">= 0"),
    N_('"cosine" | "onecycle" | "constant"'),
    N_('"none" | "light" | "strong" | "custom" (= the aug_* fields below)'),
    N_("custom only: random horizontal flip"),
    N_("custom only: random rotation within +-degrees, 0..180"),
    N_("custom only: colour jitter strength, 0..1 (0 = off)"),
    N_("custom only: random-resized-crop minimum scale, 0.05..1 (1 = centre crop)"),
    N_('custom only: "none" | "randaugment" | "trivialaugment"'),
    N_("[0, 1)"),
    N_("weight the loss by inverse class frequency"),
    N_("max gradient norm; 0 = off"),
    N_("(0, 0.9]; ignored when the data holds its own val split"),
    N_("seeds the split, the initialisation and the batch order"),
    N_("torch.use_deterministic_algorithms"),
    N_("head-only + no augmentation: embed each image once"),
    N_("head-only + augmentation: embed this many augmented views of each image once, epochs draw one at random "
       "(2-4 is typical); 0 = augment every epoch through the body"),
    N_("first epoch's image side as a fraction of image_size, growing to full size by the last epoch (fastai's "
       "progressive resizing), 0.25..1; 1 = off"),
    N_("epochs without val improvement before stopping; 0 = off"),
    N_(">= 0: how much the metric must improve to count"),
    N_('"val_acc" | "val_loss": watched by early stopping and the best checkpoint'),
    N_("gradual unfreezing: head-only epochs first, then the plan's groups; 0 = off"),
    N_('"all" (at once) | "gradual" (one more group per epoch, toward the stem)'),
    N_("(0, 1]: body groups learn at lr * factor (times lr_decay^k)"),
    N_("learning body layers run in eval mode: BatchNorm keeps its statistics, no dropout/stochastic depth"),
    N_("fresh classifier runs: fit the head as a logistic regression on the frozen features first"),
    N_("fine-tuning runs: at the end, try the weights mixed with the starting ones (pretrained body, probe head), a "
       "quarter, half and three quarters fine-tuned, and keep a mix that scores better on validation (WiSE-FT)"),
    N_("seconds for the whole run (stops with the best weights when the next epoch would not fit); 0 = off"),
    N_("mixed precision on CUDA (bf16 where supported)"),
    N_("NHWC memory format (CUDA and CPU/oneDNN); False = contiguous NCHW"),
    N_("torch.compile the model"),
    N_("under torchrun on CUDA: SyncBatchNorm across GPUs (ignored on CPU)"),
    N_("DataLoader workers"),
    N_('"auto" | "cpu" | "cuda" | "mps"'),
    N_("optional human label for the run"),
    N_('the dataset\'s display name in listings and cards; "" = the data folder\'s name'),
    N_('"classifier" | "distill" | "multitask" | "simclr" | "text" | "text_distill" | "text_multitask" | '
       '"text_pretrain": what the loop trains'),
    N_("text_pretrain: share of tokens masked per text (BERT's 0.15), 0.05..0.5"),
    N_("text: tokens kept per text (longer texts are cut), 8..512"),
    N_("distill: the teacher, a run id / run folder / exported .safetensors or .pt"),
    N_("distill: weight of the true-label loss in [0, 1]; 1 - alpha goes to the teacher"),
    N_("distill: softening temperature T > 0 (typical 2-8)"),
    N_("multitask: label columns to learn; None = every label column of the CSV"),
    N_("multitask: loss weight per task (same order as tasks), >= 0; None = 1 each"),
    N_("simclr: image folders / .zips / sample:NAME to adapt on; None = data"),
    N_("simclr: NT-Xent temperature > 0 (SimCLR uses 0.1-0.5)"),
    N_("simclr: width of the projection head's output, 8..4096"),
)


def _flag_help(text: str) -> str:
    """A field's help from core.config.field_help ("comment (default value)") in the current language."""
    comment, sep, default = text.rpartition(" (default ")
    if not sep:
        return _(text) if text else text
    return _("{help} (default {value})").format(help=_(comment), value=default[:-1])


def _add_config_flags(p: argparse.ArgumentParser, skip: tuple = ()) -> None:
    helps = field_help()
    for f in fields():
        if f.name in ("trainable_groups", *skip) or f.name in _TRACKING_FIELDS:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        typ = _LISTS.get(kind) or {"int": int, "float": float, "bool": _bool, "str": str}.get(kind, str)
        text = _flag_help(helps.get(f.name, ""))
        if kind in _LISTS:
            text = _("{help}; comma-separated").format(help=text)
        names = [flag]
        if f.name == "time_budget_s":
            names.append("--time-budget")
        if f.name == "preset":  # custom: no recipe, the plain defaults for every field not given
            text = _("quick | balanced | best | custom: the recipe that picks every training choice not given as "
                     "a flag (default balanced; custom with --config)")
        p.add_argument(*names, dest=f.name, type=typ, default=None, metavar=f.name.upper(), help=text)
    p.add_argument("--groups", dest="trainable_groups", default=None,
                   help=_("comma-separated layer groups to train, overriding --trainable (default: none; names "
                          "from the Layers step or core.models.backbones.group_names)"))


_TRACKING_FIELDS = ("tensorboard", "mlflow_uri", "mlflow_experiment")  # flags of the commands that log a run


def _add_tracking_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(_("experiment tracking (optional, off by default)"))
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help=_("also write TensorBoard event files to <run_dir>/tensorboard/ (`pip install "
                          "tensorboard`); view with `tensorboard --logdir <workspace>/runs` (default: off)"))
    g.add_argument("--mlflow-uri", dest="mlflow_uri", metavar="URI", default=None,
                   help=_("log the run to MLflow at this tracking URI, e.g. http://127.0.0.1:5000 or "
                          "file:///abs/mlruns (`pip install mlflow-skinny`); '' turns it off (default: off)"))
    g.add_argument("--mlflow-experiment", dest="mlflow_experiment", metavar="NAME", default=None,
                   help=_("MLflow experiment name (default transfer-studio)"))


def cmd_train(a) -> dict:
    from core.storage import runs
    from core.techniques import fit

    if a.resume or a.run_dir:
        if ddp.launched():  # rank 0 opens the run; the others are sent what they need
            from core.jobs import worker  # torch loads with the training code, not for --help or a refused flag

            return worker.train(None, progress_printer(), run_dir=a.resume or a.run_dir, resume=bool(a.resume))
        run = runs.open_run(a.resume or a.run_dir)
        if os.environ.get(control.SUPERVISOR_ENV):  # a job of the app: obey its pause / stop files
            return _supervised(run, bool(a.resume))
        return fit(run.config(), progress_printer(), run=run, resume=bool(a.resume))
    config = _config_from_flags(a, text_aware=True)
    _use_out(a)
    config = _with_preset(a, config)
    if ddp.launched():  # started by torchrun: one DDP rank
        from core.jobs import worker

        return worker.train(config, progress_printer())
    return fit(config, progress_printer())


def _supervised(run, resume: bool) -> dict:
    """Train one of the app's jobs in this process: its technique's entry point, the app's request files as
    the control (pause, stop; an app that went away ends this process), SIGTERM as a stop."""
    import signal

    from core.techniques import fit

    config = run.config()
    ctl = control.DistControl(ddp.context(), run.path)
    signal.signal(signal.SIGTERM, lambda *_: ctl.stop())
    return fit(config, progress_printer(), ctl, run, resume=resume)


def _config_from_flags(a, text_aware: bool = False) -> RunConfig:
    base = flag_fields(a)
    if not base.get("data"):
        raise CliError(_("--data is required (a folder of class folders, a .zip, or sample:digits)"))
    config = RunConfig.from_dict(base)
    if text_aware and base.get("technique") in (None, "text") and cli_text.is_text_data(config.data):
        # a table of text,label (issue 17): the default text backbone and recipe, except what the user set
        config = techniques.default_text_config(config, explicit=set(base))
    return techniques.check(config)


def _given(a) -> dict:
    """The fields the user set: those of --config, then every flag given on the command line."""
    given = RunConfig.load(a.config).to_dict() if a.config else {}
    given.update({f.name: getattr(a, f.name) for f in fields() if getattr(a, f.name, None) is not None})
    return given


def _with_preset(a, config: RunConfig) -> RunConfig:
    """The config with a preset's choices for every field the user did not set (core.train.presets); the plan
    (choices, reasons, expected time) is printed first. No flags at all means the balanced preset."""
    from core.train import presets

    given = _given(a)
    name = given.get("preset", "" if a.config else "balanced")
    if name in ("", "custom") or config.technique != "classifier" or (ddp.launched() and not ddp.is_main_process()):
        return config  # by hand, another technique, or a follower rank (rank 0 sends it the config)
    overrides = {k: v for k, v in given.items() if k not in ("data", "preset")}
    p = presets.plan(config.data, name, given.get("time_budget_s"), config.device, overrides)
    sys.stderr.write(presets.describe(p) + "\n")
    return techniques.check(RunConfig.from_dict({**config.to_dict(), **p.fields}))


def cmd_lr_find(a) -> dict:
    from core.train.lr_finder import lr_find

    if a.out:
        os.environ["TRANSFER_STUDIO_HOME"] = str(Path(a.out).resolve())
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            sys.stderr.write("\r" + _("lr sweep {done}/{total}").format(done=done, total=total) + " ")
            sys.stderr.flush()
    return lr_find(_config_from_flags(a), progress, start_lr=a.start_lr, end_lr=a.end_lr, num_iter=a.num_iter)


def _use_out(a) -> None:
    if getattr(a, "out", None):
        import os

        os.environ["TRANSFER_STUDIO_HOME"] = str(Path(a.out).resolve())


def cmd_distill(a) -> dict:
    _use_out(a)
    if cli_text.text_teacher(a.teacher):  # a text teacher (issue 17): a text student, same loss and comparison
        from core.techniques import text_distill as distill

        config = cli_text.text_distill_config(a)
    else:
        from core.techniques import distill

        config = _config_from_flags(a)
    result = distill.distill(a.teacher, config, a.alpha, a.temperature, progress_printer())
    if a.compare and result.get("status") == "finished":
        baseline = distill.distill(a.teacher, config, 1.0, a.temperature, progress_printer())
        result["comparison"] = distill.compare(a.teacher, {"distilled": result["run_dir"],
                                                           "without teacher": baseline["run_dir"]})
    return result


def cmd_multitask(a) -> dict:
    from core.techniques import multitask

    _use_out(a)
    tasks = a.mt_tasks.split(",") if a.mt_tasks else None
    weights = [float(w) for w in a.mt_weights.split(",")] if a.mt_weights else None
    if a.data and cli_text.is_text_corpus(a.data):  # a table of texts and label columns (issue 17)
        return cli_text.cmd_text_multitask(a, tasks, weights)
    return multitask.fit_multitask(_config_from_flags(a), tasks, weights, progress_printer())


def cmd_pretrain(a) -> dict:
    from core.techniques import simclr

    _use_out(a)
    if all(cli_text.is_text_corpus(d) for d in a.data):  # unlabelled text: masked-language-model pretraining
        return cli_text.cmd_text_pretrain(a)
    a.backbone, a.lr = a.backbone or "efficientnet_lite0", a.lr or 3e-4
    printer = progress_printer()

    def on_event(ev: dict) -> None:
        if ev["type"] == "epoch":  # no validation split here: print the contrastive figures instead
            sys.stderr.write("\r" + _("epoch {epoch}/{epochs}: contrastive loss {loss:.4f} pair accuracy "
                                     "{pair_acc:.3f}").format(epoch=ev["epoch"], epochs=ev["epochs"],
                                                              loss=ev["train_loss"], pair_acc=ev["pair_acc"]) + "\n")
        else:
            printer(ev)
    run = simclr.pretrain(a.backbone, a.data, epochs=a.epochs, batch_size=a.batch_size, temperature=a.temperature,
                       lr=a.lr, image_size=a.image_size, trainable=a.trainable, seed=a.seed, device=a.device,
                       on_event=on_event)
    return run.result() or {"status": run.status(), "run_dir": str(run.path)}


def cmd_predict(a) -> None:
    from core.results.loading import LoadedMultiTask, LoadedTextModel, load_model

    model = load_model(a.model)
    text_model = isinstance(model, LoadedTextModel) or getattr(model, "tokenizer", None) is not None
    if text_model or a.text or a.texts_file:
        return cli_text.predict_texts(a, model)
    if not a.images:
        raise CliError(_("name image files to predict (or --text / --texts-file for a text model)"))
    if isinstance(model, LoadedMultiTask):  # every task's prediction per image
        mt = model
        for path in a.images:
            try:
                print(json.dumps({"path": path, "tasks": mt.predict([path], top_k=a.top_k)[0]}))
            except ValueError as e:
                print(json.dumps({"path": path, "error": str(e)}))
        return
    for path in a.images:
        try:
            pred = model.predict([path], top_k=a.top_k)[0]
            print(json.dumps({"path": path, "label": pred["label"], "confidence": round(pred["confidence"], 6),
                              "top_k": pred["top_k"]}))
        except ValueError as e:
            print(json.dumps({"path": path, "error": str(e)}))


def cmd_export(a) -> None:
    from core.results import formats

    if a.format not in formats.FORMATS:
        raise CliError(_("unknown format {format!r}; choose one of {formats}").format(
            format=a.format, formats=", ".join(formats.FORMATS)))
    try:
        path = formats.export(a.model, a.format, a.out, tta=a.tta)
    except ValueError as e:  # e.g. --tta with a format that cannot carry it
        raise CliError(str(e)) from None
    print(json.dumps({"path": str(path), "format": a.format, "size_bytes": path.stat().st_size}))


def cmd_evaluate(a) -> dict:
    """Accuracy and macro F1 of a run's best model on its validation split, with the chosen test-time augmentation."""
    from core.results import metrics

    rep = metrics.evaluate_run(a.model, tta=a.tta)
    return {"model": str(a.model), "tta": rep.get("tta_mode", a.tta), "accuracy": rep["accuracy"],
            "macro_f1": rep["averages"]["macro"]["f1"], "n_val": len(rep["items"])}


def cmd_clean(a) -> None:
    """Suspected label problems of a dataset as JSON lines, most suspicious first; or apply decisions."""
    from core.data import datasets, edits, versions
    from core.results import label_issues

    if not Path(a.data).exists() and a.data in edits.list_datasets():
        a.data = str(edits.dataset_dir(a.data))  # a workspace dataset named as the app lists it (cats@v2)
    if a.folds < 2:
        raise CliError(_("--folds must be 2 or more, got {folds}").format(folds=a.folds))
    if a.image_size != 0 and not 32 <= a.image_size <= 1024:
        raise CliError(_("--image-size must be 0 (the backbone's own) or 32..1024, got {size}").format(
            size=a.image_size))
    if a.apply:
        root = datasets.resolve(a.data).resolve()
        if root.parent != edits.root().resolve():
            raise CliError(_("--apply writes a new version next to the dataset, so DATA must be a dataset of the "
                             "workspace ({workspace}); got {data!r} — import it first, or pass its folder "
                             "there").format(workspace=edits.root(), data=a.data))
        try:
            text = Path(a.apply).read_text(encoding="utf-8")
        except OSError as e:
            raise CliError(_("cannot read decisions file {file!r}: {error}").format(
                file=a.apply, error=e.strerror or e)) from None
        name = versions.apply(root.name, versions.parse_decisions(text))
        print(json.dumps({"version": name, "path": str(edits.dataset_dir(name))}))
        return
    report = label_issues.detect(a.data, backbone=a.backbone, image_size=a.image_size, folds=a.folds)
    for s in report.suspects[: a.limit or None]:
        print(json.dumps({"path": s.path, "label": s.label, "suggested": s.suggested, "score": round(s.score, 4),
                          "reason": "; ".join(s.reasons), "action": s.action, "neighbours": s.neighbours},
                         ensure_ascii=False))
    print(json.dumps(report.summary(), ensure_ascii=False))


def cmd_runs(a) -> None:
    from core.storage import runs

    found = runs.list_runs()
    # the header goes to stderr: stdout stays one JSON line per run for scripts
    print(ngettext("{n} run in {folder}", "{n} runs in {folder}", len(found)).format(
        n=i18n.format_number(len(found)), folder=runs.root()), file=sys.stderr)
    for r in found:
        print(json.dumps(r.summary()))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description=_("Transfer Studio engine, headless."))
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help=_("train a model; prints one JSON line of final metrics"))
    t.add_argument("--config", help=_("a run.json saved from the app; other flags override its fields (default: "
                                      "none)"))
    t.add_argument("--out", help=_("workspace folder for datasets, cache and runs (default ./workspace)"))
    t.add_argument("--resume", metavar="RUN_DIR", help=_("continue an interrupted run from its last epoch "
                                                         "(default: none, a new run)"))
    t.add_argument("--run-dir", metavar="RUN_DIR", help=_("train into an existing run folder made by the app (its "
                                                          "config.json); used by `use N GPUs`"))
    _add_config_flags(t)
    _add_tracking_flags(t)
    pr = sub.add_parser("predict", help=_("predict images (or texts) with a run directory or an exported model"))
    pr.add_argument("--model", required=True, help=_("a run directory, .safetensors or .pt (required)"))
    pr.add_argument("--top-k", type=int, default=3, help=_("how many classes to list per image, >= 1 (default 3)"))
    pr.add_argument("--text", action="append", default=None,
                    help=_("a text to classify with a text model; repeatable (default: none)"))
    pr.add_argument("--texts-file", dest="texts_file", default=None,
                    help=_("a UTF-8 file of texts to classify, one per line; blank lines are skipped (default: "
                           "none)"))
    pr.add_argument("images", nargs="*", help=_("image files to predict (default: none; give --text or "
                                                "--texts-file instead for a text model)"))
    ex = sub.add_parser("export", help=_("export a run or model file: safetensors, pt, torchscript, onnx, int8, "
                                         "bundle"))
    ex.add_argument("--model", required=True, help=_("a run directory, .safetensors or .pt (required)"))
    ex.add_argument("--format", required=True, help=_("safetensors | pt | torchscript | onnx | int8 | bundle "
                                                      "(required)"))
    ex.add_argument("--out", default=None, help=_("output file (default: <run>/exports/<backbone>.<ext>)"))
    ex.add_argument("--tta", nargs="?", const="flip", default="none", choices=TTA_MODES, metavar="MODE",
                    help=_("torchscript / onnx: test-time augmentation inside the graph, the probabilities of "
                           "several views averaged: flip (the image and its mirror; what --tta alone means), "
                           "multicrop (the centre and 4 corners of the image enlarged 1.15x) or none (default "
                           "none)"))
    ev = sub.add_parser("evaluate", help=_("evaluate a run's best model on its validation split; prints one JSON "
                                           "line of accuracy and macro F1"))
    ev.add_argument("--model", required=True, help=_("a run directory (required)"))
    ev.add_argument("--tta", default="none", choices=TTA_MODES, metavar="MODE",
                    help=_("test-time augmentation: none, flip (the image and its mirror) or multicrop (the centre "
                           "and 4 corners of the image enlarged 1.15x), probabilities averaged (default none)"))
    sub.add_parser("runs", help=_("list runs in the workspace"))
    cl = sub.add_parser("clean", help=_("find suspected label issues, outliers, duplicates and unusable images; "
                                        "prints one JSON line per suspect, most suspicious first, then a summary"))
    cl.add_argument("--data", required=True,
                    help=_("a folder of class folders, a workspace dataset name (cats, cats@v2), a .zip or "
                           "sample:digits|sample:shapes (required)"))
    cl.add_argument("--apply", metavar="DECISIONS_CSV", default=None,
                    help=_("a CSV with the header path,action,label (action: keep | relabel | remove; label for "
                           "relabel); writes a new version of the workspace dataset DATA and prints its name "
                           "(default: none, only detect)"))
    cl.add_argument("--backbone", default="efficientnet_lite0",
                    help=_("backbone whose frozen features are compared (default efficientnet_lite0; any name "
                           "from `python -m core train -h`)"))
    cl.add_argument("--image-size", dest="image_size", type=int, default=0,
                    help=_("input side in pixels for the features, 0 = the backbone's own or 32..1024 (default 0)"))
    cl.add_argument("--folds", type=int, default=5,
                    help=_("folds of the out-of-sample logistic regression, >= 2 (default 5)"))
    cl.add_argument("--limit", type=int, default=0, help=_("print at most this many suspects, 0 = all (default 0)"))
    lf = sub.add_parser("lr-find", help=_("sweep the learning rate; prints JSON with lrs, losses and a suggestion"))
    lf.add_argument("--config", help=_("a run.json saved from the app; other flags override its fields (default: "
                                       "none)"))
    lf.add_argument("--out", help=_("workspace folder for datasets and cache (default ./workspace)"))
    lf.add_argument("--start-lr", dest="start_lr", type=float, default=1e-7,
                    help=_("smallest learning rate of the sweep, > 0 (default 1e-7)"))
    lf.add_argument("--end-lr", dest="end_lr", type=float, default=10.0,
                    help=_("largest learning rate of the sweep, > start-lr (default 10)"))
    lf.add_argument("--num-iter", dest="num_iter", type=int, default=100,
                    help=_("steps of the sweep, >= 2 (default 100)"))
    _add_config_flags(lf)
    d = sub.add_parser("distill", help=_("train a student on a teacher's soft labels (knowledge distillation)"))
    d.add_argument("--teacher", required=True, help=_("the teacher: a run id, run directory or exported model "
                                                      "(required)"))
    d.add_argument("--alpha", type=float, default=0.5, help=_("weight of the hard-label loss, 0..1 (default 0.5)"))
    d.add_argument("--temperature", type=float, default=4.0, help=_("softmax temperature T > 0 (default 4)"))
    d.add_argument("--compare", action="store_true",
                   help=_("also train the student without the teacher (alpha=1) and print the comparison table "
                          "(default: off)"))
    m = sub.add_parser("multitask", help=_("one backbone, one head per label column of a CSV"))
    m.add_argument("--tasks", dest="mt_tasks", help=_("comma-separated label columns to learn (default: all)"))
    m.add_argument("--weights", dest="mt_weights",
                   help=_("comma-separated loss weights >= 0, one per task (default: 1 each)"))
    for sp, own in ((d, ("teacher", "technique")), (m, ("tasks", "technique"))):
        sp.add_argument("--config", help=_("a run.json; other flags override its fields (default: none)"))
        sp.add_argument("--out", help=_("workspace folder for datasets, cache and runs (default ./workspace)"))
        _add_config_flags(sp, skip=own)
        _add_tracking_flags(sp)
    sp = sub.add_parser("pretrain", help=_("adapt a backbone to your own images with SimCLR, or a text encoder to "
                                           "your own texts with a masked language model (no labels needed)"))
    sp.add_argument("--backbone", default=None,
                    help=_("registry backbone to adapt (default efficientnet_lite0 for images, all_minilm_l6_v2 for "
                           "text; see `python -m core train -h`)"))
    sp.add_argument("--data", action="append", required=True,
                    help=_("a folder, .zip or sample:NAME of images, or texts: a .txt file (one per line), a "
                           "CSV/TSV/JSONL with a text column, a folder or .zip of .txt files; repeat to combine "
                           "sources (required)"))
    sp.add_argument("--max-length", dest="max_length", type=int, default=128,
                    help=_("text: tokens kept per text, 8..512 (default 128)"))
    sp.add_argument("--mask-prob", dest="mask_prob", type=float, default=0.15,
                    help=_("text: share of tokens masked per text, 0.05..0.5 (default 0.15, as BERT)"))
    sp.add_argument("--epochs", type=int, default=5, help=_("passes over the images or texts, >= 1 (default 5)"))
    sp.add_argument("--batch-size", dest="batch_size", type=int, default=32,
                    help=_("images or texts per step, >= 2 for images: the others in a batch are the "
                           "negatives (default 32)"))
    sp.add_argument("--temperature", type=float, default=0.2, help=_("NT-Xent temperature > 0, 0.1-0.5 (default "
                                                                     "0.2)"))
    sp.add_argument("--lr", type=float, default=None,
                    help=_("learning rate > 0 (default 3e-4 for images, 1e-4 for text)"))
    sp.add_argument("--image-size", dest="image_size", type=int, default=0,
                    help=_("input side in pixels, 0 = the backbone's own or 32..1024 (default 0)"))
    sp.add_argument("--trainable", default="all", help=_("layer groups that adapt: all or last-N (default all)"))
    sp.add_argument("--seed", type=int, default=0, help=_("random seed (default 0)"))
    sp.add_argument("--device", default="auto", help=_("auto | cpu | cuda | mps (default auto)"))
    sp.add_argument("--out", help=_("workspace folder for datasets, cache and runs (default ./workspace)"))
    _add_lang_flag(p, None)
    for each in sub.choices.values():  # also after the command (`runs --lang zh_CN`); SUPPRESS keeps the first
        _add_lang_flag(each, argparse.SUPPRESS)
    return p


def _language(text: str) -> str:
    lang = i18n.normalize(text)
    if lang is None:
        raise argparse.ArgumentTypeError(_("expected one of {choices}, got {value}").format(
            choices=", ".join(i18n.LANGUAGES), value=repr(text)))
    return lang


def _add_lang_flag(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--lang", type=_language, default=default, metavar="LANG",
                   help=_("language of the messages: en | zh_CN (default: from LANGUAGE, LC_ALL, LC_MESSAGES, "
                          "LANG)"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    # the language is needed before parsing: --help prints the parser's texts, translated when it is built
    with i18n.language(_lang_asked(args) or i18n.language_from_env()):  # this call only: a caller keeps its own
        a = parser().parse_args(args)
        return _main(a)


def _lang_asked(args: list[str]) -> str | None:
    """The supported language a --lang among ``args`` names (the last one), or None; a bad value is left for the
    parser to refuse with its usual message."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--lang" and i + 1 < len(args):
            found = i18n.normalize(args[i + 1]) or found
        elif arg.startswith("--lang="):
            found = i18n.normalize(arg.split("=", 1)[1]) or found
    return found


def _main(a) -> int:
    try:
        if a.cmd == "train":
            result = cmd_train(a)
            if "rank" not in result:  # under torchrun only rank 0 prints, so scripts read one line
                print(json.dumps(result))
            return 0 if result.get("status") == "finished" else 1
        if a.cmd in ("distill", "multitask", "pretrain"):
            result = {"distill": cmd_distill, "multitask": cmd_multitask, "pretrain": cmd_pretrain}[a.cmd](a)
            print(json.dumps(result))
            return 0 if result.get("status") == "finished" else 1
        if a.cmd == "lr-find":
            print(json.dumps(cmd_lr_find(a)))
            return 0
        if a.cmd == "predict":
            cmd_predict(a)
        elif a.cmd == "export":
            cmd_export(a)
        elif a.cmd == "evaluate":
            print(json.dumps(cmd_evaluate(a)))
        elif a.cmd == "runs":
            cmd_runs(a)
        elif a.cmd == "clean":
            cmd_clean(a)
        return 0
    except (CliError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(_("error: {message}").format(message=e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_("error: interrupted"), file=sys.stderr)
        return 130
