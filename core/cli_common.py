"""What the command line's modules share (core.cli, core.cli_text): the error for bad input, the progress
printer on stderr, and the config fields the flags set."""
from __future__ import annotations

import sys

from core.config import RunConfig, fields
from core.i18n import _
from core.train import events


class CliError(Exception):
    """Bad input: printed as one line, exit code 2."""


_NOT_METRICS = ("type", "time", "epoch", "epochs", "time_s")


def progress_printer():
    """A one-line progress bar on a terminal; silent when stderr is not a terminal."""
    tty = sys.stderr.isatty()

    def on_event(ev: dict) -> None:
        t = ev["type"]
        if t == "step" and tty:
            frac = ev.get("step", 0) / max(ev.get("total_steps", 0), 1)
            bar = "#" * int(frac * 30)
            line = _("epoch {epoch} loss {loss:.4f} {speed:.0f} img/s ETA {eta:.0f}s").format(
                epoch=ev.get("epoch"), loss=ev.get("loss", 0.0), speed=ev.get("images_per_s", 0.0),
                eta=ev.get("eta_s", 0.0))
            sys.stderr.write(f"\r[{bar:<30}] {frac:5.1%} {line} ")
            sys.stderr.flush()
        elif t == "phase" and tty:
            sys.stderr.write(f"\r{_(ev['phase'])}: {ev['done']}/{ev['total']}    ")
            sys.stderr.flush()
        elif t == "epoch":  # every technique logs its own metrics (val_acc, pair_acc, per-task ...): show the numbers
            shown = " ".join(f"{k} {v:.4g}" for k, v in ev.items()
                             if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool))
            line = _("epoch {epoch}/{epochs}: {metrics}").format(epoch=ev.get("epoch"), epochs=ev.get("epochs"),
                                                                 metrics=shown)
            sys.stderr.write(f"\r{line}\n")
        elif t in ("warning", "early_stop"):
            sys.stderr.write(f"\n{events.text(ev)}\n")
    return on_event


def flag_fields(a) -> dict:
    """--config's fields, then every config flag given on the command line (trainable_groups split on commas)."""
    base = RunConfig.load(a.config).to_dict() if a.config else {}
    for f in fields():
        v = getattr(a, f.name, None)
        if v is not None:
            base[f.name] = v.split(",") if f.name == "trainable_groups" else v
    return base
