"""The entry of one training process under torchrun: join the group, then run the ordinary loop."""
from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from core.i18n import N_
from core.models import backbones
from core.storage import runs
from core.train import ddp, events
from core.train.control import DistControl
from core.train.ddp import Distributed, Single
from core.train.loop import per_rank_batch


class ScratchRun(runs.Run):
    """A non-main rank's run: a private temp folder, no event log; only rank 0 writes the real run."""

    def append(self, event: dict) -> None:
        pass


def train(config=None, on_event=None, run_dir: str | Path | None = None, resume: bool = False) -> dict:
    """Run the one training loop as one DDP rank. Rank 0 creates (or opens ``run_dir``) the run; the others follow."""
    import shutil

    import torch.distributed as dist

    from core.config import RunConfig
    from core.techniques import fit

    if config is None and run_dir is None:
        raise ValueError("distributed.train needs a config or a run directory; got neither")
    ctx = Distributed(config if config is not None else _peek_config(run_dir))
    scratch = None
    try:
        payload = None
        if ctx.main:
            if run_dir is not None:
                run = runs.open_run(run_dir)
                config = config or run.config()
            else:
                run = runs.create(backbones.check(config.validate()))
            files = {}
            if resume:  # the others need the exact split and the resume state, wherever they run
                for name in ("split.json", "last.pt"):
                    if (run.path / name).exists():
                        files[name] = (run.path / name).read_bytes()
            payload = {"config": config.to_dict(), "run_dir": str(run.path), "files": files}
        payload = ctx.broadcast_object(payload)
        if not ctx.main:
            config = RunConfig.from_dict(payload["config"])
            scratch = Path(tempfile.mkdtemp(prefix=f"transfer-studio-rank{ctx.rank}-"))
            run = ScratchRun(scratch)
            (scratch / "config.json").write_text(config.to_json())
            for name, blob in payload["files"].items():
                (scratch / name).write_bytes(blob)
        ddp._current = ctx
        control = DistControl(ctx, run.path if ctx.main else None)
        signal.signal(signal.SIGTERM, lambda *_: control.stop())
        if ctx.main:
            notes = []
            if getattr(config, "sync_bn", False) and not ctx.sync_bn:
                notes.append(events.said(N_("sync_bn needs CUDA (NCCL); on CPU each rank keeps its own BatchNorm "
                                            "statistics")))
            per_rank = per_rank_batch(config.batch_size, ctx.world)
            ev = events.event("distributed", time.time(), world_size=ctx.world, backend=ctx.backend,
                              device=str(ctx.device), sync_bn=ctx.sync_bn, per_process_batch_size=per_rank,
                              effective_batch_size=per_rank * ctx.world)
            run.append(ev)
            if on_event:
                on_event(ev)
            for note in notes:
                w = events.event("warning", time.time(), **note)
                run.append(w)
                if on_event:
                    on_event(w)
        result = fit(config, on_event if ctx.main else None, control, run, resume)
        if not ctx.main:
            result = {**result, "rank": ctx.rank, "run_dir": payload["run_dir"]}
        return result
    finally:
        ddp._current = Single()
        if dist.is_initialized():
            dist.destroy_process_group()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _peek_config(run_dir):
    """The device choice must be known before joining the group: rank 0 reads it, the others assume auto."""
    from core.config import RunConfig

    p = Path(run_dir) / "config.json"
    if p.exists():
        return RunConfig.load(p)
    return RunConfig(device=os.environ.get("TRANSFER_STUDIO_DDP_DEVICE", "auto"))
