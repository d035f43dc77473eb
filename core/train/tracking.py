"""Optional experiment tracking: a run's events mirrored to TensorBoard event files and to MLflow.

Off unless the run's config turns it on (``tensorboard``, ``mlflow_uri``). ``trainer.logged_run`` opens
one ``Sink`` per run and passes it every event, so every technique (fit, distill, multi-task, SimCLR)
is tracked alike. Tracking is a side channel: a failure (package missing, server down, disk full) never
stops training; it becomes one 'warning' event saying what failed and what to do, and that backend is
switched off for the rest of the run.

MLflow calls run on a daemon thread of their own, so a slow or unreachable server never holds up a
training step; at the end of the run the sink waits at most ``TRACKING_TIMEOUT_ENV`` seconds for them.

This module imports neither torch nor the tracking libraries at import time (pages use ``missing``).
"""
from __future__ import annotations

import json
import math
import os
import queue
import re
import tempfile
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

from core.data.message import Message
from core.i18n import N_
from core.storage import cards

TB_DIR = "tensorboard"                       # <run_dir>/tensorboard/: point `tensorboard --logdir` at the runs folder
STATE_FILE = "tracking.json"                 # the MLflow run id, so a resumed run continues the same MLflow run
TRACKING_TIMEOUT_ENV = "TRANSFER_STUDIO_TRACKING_TIMEOUT"  # seconds the end of a run waits for MLflow (default 60)
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny"}  # import name -> what to pip install

_SKIP = {"type", "time", "epoch", "epochs", "best", "step", "total_steps"}  # epoch-event fields that are not metrics
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")  # MLflow metric names allow these characters only
_MLFLOW_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}

Warn = Callable[[str], None]


def missing(tensorboard: bool = False, mlflow_uri: str = "") -> list[str]:
    """One message per tracking backend turned on whose package is not installed (cheap: nothing is imported).
    Each is a core.data.message.Message: English as a str, ``.shown()`` in the current language."""
    out = []
    if tensorboard and find_spec("tensorboard") is None:
        out.append(Message(N_("TensorBoard logging is on but the tensorboard package is not installed; run `pip "
                              "install tensorboard` or turn TensorBoard off")))
    if mlflow_uri and find_spec("mlflow") is None:
        out.append(Message(N_("MLflow logging is on but the mlflow package is not installed; run `pip install "
                              "mlflow-skinny` (or `mlflow`) or clear the MLflow tracking URI")))
    return out


def metric_name(name: str) -> str:
    """A metric name both TensorBoard and MLflow accept (task names come from CSV headers)."""
    return _UNSAFE.sub("_", name)


def epoch_metrics(ev: dict) -> dict[str, float]:
    """Numeric fields of an 'epoch' event; nested dicts flatten with '/' (lrs/head, tasks/colour/val_acc)."""
    out: dict[str, float] = {}

    def walk(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if not prefix and k in _SKIP:
                continue
            name = prefix + str(k)
            if isinstance(v, dict):
                walk(name + "/", v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[metric_name(name)] = float(v)
    walk("", ev)
    return out


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


class _TensorBoard:
    """Event files written with torch's SummaryWriter, in the training thread (local disk only)."""

    name = "TensorBoard"

    def __init__(self, run, config):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package

        self.writer = SummaryWriter(log_dir=str(Path(run.path) / TB_DIR))
        self.writer.add_text("config", "```\n" + config.to_json() + "\n```", 0)
        self.last_epoch = 0

    def advice(self, e: BaseException) -> str:
        return Message(N_("TensorBoard logging stopped ({error}); training goes on without it. Check the disk space "
                          "and permissions of the run folder, or turn TensorBoard off"), error=_short(e))

    def start(self, ev: dict) -> None:
        epoch = ev.get("start_epoch", 0) or 0
        self.last_epoch = epoch
        if "params_trainable" in ev:
            self.writer.add_scalar("params_trainable", ev["params_trainable"], epoch + 1)

    def epoch(self, ev: dict) -> None:
        self.last_epoch = ev["epoch"]
        for k, v in epoch_metrics(ev).items():
            self.writer.add_scalar(k, v, ev["epoch"])
        self.writer.flush()  # a TensorBoard that is watching shows each epoch as it ends

    def unfreeze(self, ev: dict) -> None:
        self.writer.add_scalar("params_trainable", ev["params_trainable"], ev["epoch"])
        self.writer.add_text("unfreeze", f"from epoch {ev['epoch']}: {', '.join(ev.get('groups', []))} "
                                         f"start learning ({ev['params_trainable']} trainable parameters)", ev["epoch"])

    def note(self, tag: str, text: str, epoch: int) -> None:
        self.writer.add_text(tag, text, epoch)

    def end(self, ev: dict) -> None:
        shown = {k: v for k, v in ev.items() if k not in ("type", "time", "traceback")}
        self.writer.add_text("result", "```\n" + json.dumps(shown, indent=2, default=str) + "\n```",
                             self.last_epoch)
        self.writer.close()

    def abandon(self) -> None:
        try:
            self.writer.close()
        except Exception:  # already failing; the warning has been given
            pass


class _MLflow:
    """MLflow through MlflowClient (no global active run, so concurrent jobs stay apart), on its own thread."""

    name = "MLflow"

    def __init__(self, run, config, warn: Warn):
        self.run, self.config, self.warn = run, config, warn
        self.uri = config.mlflow_uri
        self.client = None
        self.run_id: str | None = None
        self.failed = False
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=f"mlflow-{run.id}", daemon=True)
        self.thread.start()
        self.submit(self._open)

    def advice(self, e: BaseException) -> str:
        if isinstance(e, ImportError):
            return Message(N_("MLflow logging stopped: {error}; training goes on without it. Run `pip install "
                              "mlflow-skinny` or clear the MLflow tracking URI"), error=_short(e))
        return Message(N_("MLflow logging to {uri} stopped ({error}); training goes on without it. Check that the "
                          "tracking server is running (e.g. `mlflow server --port 5000`) and the URI is right, or "
                          "clear the MLflow tracking URI"), uri=self.uri, error=_short(e))

    # every call below runs on the worker thread, in the order the events came
    def submit(self, fn: Callable[[], None]) -> None:
        if not self.failed:
            self.jobs.put(fn)

    def _loop(self) -> None:
        while True:
            fn = self.jobs.get()
            if fn is None:
                return
            if self.failed:
                continue
            try:
                fn()
            except Exception as e:  # tracking must never take the run down
                self.failed = True
                self.warn(self.advice(e))

    def _open(self) -> None:
        if self.uri.startswith("file:"):
            # MLflow 3.7+ refuses file stores unless opted in; the user asked for this one by name.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # MLflow prints the run's URL to stdout when a run ends; `python -m core train` promises scripts one
        # JSON line there, and the run folder records the MLflow run id (tracking.json) anyway.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        state = _read_state(self.run)
        if state.get("mlflow_uri") == self.uri and state.get("mlflow_run_id"):  # a resumed run: continue it
            self.run_id = state["mlflow_run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = self.config.mlflow_experiment
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            try:
                exp_id = self.client.create_experiment(name)
            except Exception:  # another job created it a moment ago
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        tags = {"transfer_studio.run_id": self.run.id, "transfer_studio.run_dir": str(self.run.path),
                "technique": self.config.technique}
        self.run_id = self.client.create_run(exp_id, tags=tags, run_name=self.config.name or self.run.id).info.run_id
        from core.storage import runs

        runs.atomic_write_text(Path(self.run.path) / STATE_FILE, json.dumps(
            {"mlflow_uri": self.uri, "mlflow_run_id": self.run_id, "mlflow_experiment": name}))
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _params(self.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100], synchronous=True)

    def _metrics(self, values: dict[str, float], step: int, t: float) -> None:
        from mlflow.entities import Metric

        ms = int(t * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ms, step) for k, v in values.items()],
                              synchronous=True)

    def _tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()],
                              synchronous=True)

    # the sink's interface: enqueue only, never block the training thread
    def start(self, ev: dict) -> None:
        tags = {k: ev[k] for k in ("device", "n_train", "n_val", "dataset_hash", "params_total")
                if ev.get(k) is not None}
        if ev.get("classes") is not None:
            tags["n_classes"] = len(ev["classes"])
        self.submit(lambda: self._tags(tags))
        if "params_trainable" in ev:
            step = (ev.get("start_epoch") or 0) + 1
            self.submit(lambda: self._metrics({"params_trainable": float(ev["params_trainable"])}, step, ev["time"]))

    def epoch(self, ev: dict) -> None:
        values = epoch_metrics(ev)
        self.submit(lambda: self._metrics(values, ev["epoch"], ev["time"]))

    def unfreeze(self, ev: dict) -> None:
        self.submit(lambda: self._metrics({"params_trainable": float(ev["params_trainable"])}, ev["epoch"],
                                          ev["time"]))
        self.submit(lambda: self._tags({f"unfreeze.epoch_{ev['epoch']}": ", ".join(ev.get("groups", []))}))

    def note(self, tag: str, text: str, epoch: int) -> None:
        self.submit(lambda: self._tags({tag: text}))

    def end(self, ev: dict) -> None:
        self.submit(lambda: self._finish(ev))

    def _finish(self, ev: dict) -> None:
        final = {k: float(v) for k, v in ev.items() if k not in ("time",) and isinstance(v, (int, float))
                 and not isinstance(v, bool) and math.isfinite(v)}
        if final:  # named result.* so they stay apart from the per-epoch histories (val_loss, ...)
            self._metrics({metric_name(f"result.{k}"): v for k, v in final.items()}, 0, ev["time"])
        if ev.get("message"):
            self._tags({"end_message": ev["message"]})
        path = Path(self.run.path)
        for f in ("config.json", "result.json", "split.json"):
            if (path / f).exists():
                self.client.log_artifact(self.run_id, str(path / f))
        # a classifier's or multi-task model's best weights, or a SimCLR run's adapted body
        weights = next((path / f for f in (cards.BEST_FILE, "adapted.safetensors") if (path / f).exists()),
                       path / cards.BEST_FILE)
        if Path(weights).exists():
            card = _card(Path(weights))
            if card is not None:  # the card on its own, readable in the MLflow UI without opening the weights
                with tempfile.TemporaryDirectory() as tmp:
                    card_file = Path(tmp) / "model_card.json"
                    card_file.write_text(json.dumps(card, indent=2))
                    self.client.log_artifact(self.run_id, str(card_file))
            self.client.log_artifact(self.run_id, str(weights), "model")
        status = _MLFLOW_STATUS.get(ev.get("status", "finished"), "FINISHED")
        self.client.set_terminated(self.run_id, status=status, end_time=int(ev["time"] * 1000))

    def close(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queued calls; False if they are still going."""
        self.jobs.put(None)
        self.thread.join(timeout)
        return not self.thread.is_alive()


def _params(config) -> dict[str, str]:
    """The config as MLflow params: flat names, string values (lists joined by commas)."""
    out = {}
    for k, v in config.to_dict().items():
        out[k] = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return {k: v if len(v) <= 500 else v[:497] + "..." for k, v in out.items()}  # older servers cap values at 500


def _card(weights: Path) -> dict | None:
    """The model card in a safetensors file's metadata, read from the header alone (no tensors loaded)."""
    try:
        return cards.read_card(weights)
    except ValueError:  # no card, or a damaged file: the weights are still logged
        return None


def _read_state(run) -> dict:
    try:
        return json.loads((Path(run.path) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


class Sink:
    """Receives every event of one run and forwards what each enabled backend records."""

    def __init__(self, run, config, warn: Warn):
        self._warn, self._closed = warn, False
        self._lock = threading.RLock()
        self.backends: list = []
        for problem in missing(config.tensorboard, config.mlflow_uri):
            warn(Message(N_("{problem}; training goes on without it"), problem=problem))
        if config.tensorboard and find_spec("tensorboard") is not None:
            try:
                self.backends.append(_TensorBoard(run, config))
            except Exception as e:
                warn(Message(N_("TensorBoard logging could not start ({error}); training goes on without it. Run "
                                "`pip install tensorboard` if it is missing, or turn TensorBoard off"),
                             error=_short(e)))
        if config.mlflow_uri and find_spec("mlflow") is not None:
            self.backends.append(_MLflow(run, config, self.warn))

    def warn(self, message: str) -> None:
        """Report a tracking problem as a warning event, unless the run has already ended."""
        with self._lock:  # held while reporting, so no warning can land after the end event
            if not self._closed:
                self._warn(message)

    def _each(self, method: str, *args) -> None:
        for b in list(self.backends):
            try:
                getattr(b, method)(*args)
            except Exception as e:  # this backend is done for this run; the others go on
                self.backends.remove(b)
                if hasattr(b, "abandon"):
                    b.abandon()
                self.warn(b.advice(e))

    def send(self, ev: dict) -> None:
        """Forward one event (any type; those no backend records are ignored)."""
        kind = ev.get("type")
        if kind in ("start", "epoch", "unfreeze"):
            self._each(kind, ev)
        elif kind in ("early_stop", "restored_best", "weight_average"):
            self._each("note", kind, ev.get("message", ""), ev.get("epoch", 0))
        elif kind == "resumed":
            self._each("note", f"resumed.epoch_{ev.get('epoch', 0)}", f"resumed after epoch {ev.get('epoch', 0)}",
                       ev.get("epoch", 0))

    def close(self, end: dict) -> None:
        """Record the end event, flush and close every backend; called once, before the end event is logged."""
        self._each("end", end)
        try:
            timeout = float(os.environ.get(TRACKING_TIMEOUT_ENV) or 60)
        except ValueError:
            timeout = 60.0
        for b in self.backends:
            if isinstance(b, _MLflow) and not b.close(timeout):
                self.warn(Message(N_("MLflow at {uri} did not take the run's last records within {seconds} s (slow "
                                     "or unreachable server); the MLflow run may be incomplete. The run itself is "
                                     "complete on disk; set {variable} to wait longer"), uri=b.uri,
                                  seconds=f"{timeout:g}", variable=TRACKING_TIMEOUT_ENV))
        with self._lock:
            self._closed = True


def open_sink(run, warn: Warn) -> Sink | None:
    """A Sink for the run's config, or None when tracking is off (or this is not the main DDP process)."""
    from core.train import ddp

    if not ddp.is_main_process():  # only rank 0 owns the run; the other ranks would log duplicates
        return None
    try:
        config = run.config()
    except Exception:  # a run without a readable config has nothing to track by
        return None
    if not (config.tensorboard or config.mlflow_uri):
        return None
    return Sink(run, config, warn)
