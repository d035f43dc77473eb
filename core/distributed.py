"""Scaling out on PyTorch's own engine: DistributedDataParallel under ``torchrun``, and app-side supervision.

Two halves, both torch-free at import time (the app's pages may import this module):

* Inside each ``torchrun`` worker, ``train()`` joins the process group and calls the ordinary
  ``trainer.fit()``. The trainer asks ``context()`` for a handful of hooks (device, sharded loaders,
  DDP wrapping, all-reduced metrics, agreed decisions); outside torchrun those hooks are no-ops.
* In the app, ``launch()`` starts ``torchrun`` for a run directory and ``SubprocessJob`` supervises it
  with the same snapshot / pause / resume / stop surface as ``core.jobs.Job``.

What works under DDP (each rank is one process; ``batch_size`` is per process, so the effective batch
is ``batch_size * world_size``; learning rates are not rescaled):

* training data: ``DistributedSampler`` (shuffled per epoch with ``seed + epoch``; when the training
  set does not divide evenly, a few images are repeated so every rank takes the same number of steps);
* validation: each rank evaluates a disjoint shard with no padding; loss sum, correct count and count
  are all-reduced, so ``val_acc`` covers the whole validation set exactly once;
* cached features: each rank embeds its shard once and the features are all-gathered;
* resume: rank 0 reads the run's ``split.json`` and ``last.pt`` and broadcasts them to the others;
* early stopping: the decision is broadcast from rank 0, so every rank stops at the same epoch;
* gradual unfreezing: the DDP wrapper is rebuilt whenever the set of learning groups changes;
* ``sync_bn``: SyncBatchNorm on CUDA; on CPU (gloo) it is ignored with a warning event;
* only rank 0 writes the run directory (events, split, checkpoints, result); other ranks write to a
  private scratch folder that is removed at the end.

Not supported under DDP: halving the batch after a CUDA out-of-memory error (the ranks would fall out
of step), so an out-of-memory error ends the run with advice to lower ``batch_size``. Throughput
numbers in step events are rank 0's own (multiply by ``world_size`` for the whole job).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from . import runs

STOP_FILE = "stop.request"    # written by the app: the trainer stops between steps
PAUSE_FILE = "pause.request"  # present while the app wants the run paused
LOG_FILE = "torchrun.log"     # stdout and stderr of the torchrun agent and its workers
WORKER_LOG = "worker.log"     # stdout and stderr of a plain (single-process) job
DEBUG_SHARDS_ENV = "TRANSFER_STUDIO_DEBUG_SHARDS"  # a folder: each rank logs the sample indices it sees
SUPERVISOR_ENV = "TRANSFER_STUDIO_SUPERVISOR_PID"  # the app's pid: rank 0 stops if that process is gone
ORPHAN_EXIT = 75  # exit status of a plain job process whose app went away
TIMEOUT_ENV = "TRANSFER_STUDIO_DDP_TIMEOUT_MIN"    # collective timeout; rank 0 may decode a big dataset alone


# --- torchrun's environment ---------------------------------------------------------------------

def launched() -> bool:
    """True inside a process started by torchrun (RANK and WORLD_SIZE are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", 0))


def is_main_process() -> bool:
    """Rank 0, or any process outside torchrun."""
    return rank() == 0


def visible_gpus() -> int:
    """How many CUDA devices this process sees (imports torch lazily; 0 when torch has no CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class ShardSampler:
    """Indices ``rank, rank + world, ...`` of ``range(n)``: disjoint shards, no padding, order kept."""

    def __init__(self, n: int, rank: int, world: int):
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


# --- the hooks the trainer calls ---------------------------------------------------------------

class Single:
    """The hooks for one ordinary process: every one of them leaves things as they are."""

    device = None
    main = True
    rank = 0
    world = 1

    def wait_for_main(self) -> None:
        """Non-main ranks block here until rank 0 has prepared shared files (no-op in one process)."""

    def release_others(self) -> None:
        """Rank 0 lets the waiting ranks go (no-op in one process)."""

    def shard(self, dataset):
        """This rank's part of a dataset for one-off passes (embedding)."""
        return dataset

    def gather(self, pair):
        """Re-assemble ``(features, labels)`` computed on shards into the full, ordered tensors."""
        return pair

    def shard_loaders(self, loaders: dict, seed: int) -> dict:
        """The trainer's loaders with distributed samplers."""
        return loaders

    def prepare(self, forward, model, config, groups) -> None:
        """Point ``forward`` at a DDP wrapper that matches the epoch's mode and learning groups."""

    def set_epoch(self, loader, epoch: int) -> None:
        """Reshuffle the training sampler for ``epoch``."""

    def for_eval(self, forward):
        """A forward over the plain model (no DDP collectives), with buffers equal on every rank."""
        return forward

    def reduce_eval(self, ev: dict) -> dict:
        """Validation loss and accuracy over the whole validation set."""
        return ev

    def sum(self, *values):
        """Element-wise sums over ranks."""
        return values

    def agree(self, flag) -> bool:
        """Rank 0's decision, the same on every rank."""
        return bool(flag)

    def oom(self) -> None:
        """Called when CUDA ran out of memory: fine in one process (the trainer halves the batch)."""

    def max_int(self, value: int) -> int:
        """The largest of the ranks' values: here, this process's own."""
        return value


_current: Single = Single()


def context() -> Single:
    """The hooks for this process: ``Distributed`` inside ``train()`` under torchrun, else ``Single``."""
    return _current


class _HeadOnly:
    """What the trainer's forward calls in cached-features mode: ``.head(x)``, here the DDP-wrapped head."""

    def __init__(self, head):
        self.head = head


class Distributed(Single):
    """Hooks for one torchrun worker; every method that communicates is called on all ranks alike."""

    def __init__(self, config):
        import datetime

        import torch
        import torch.distributed as dist

        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.main = self.rank == 0
        if config.device == "mps":
            raise ValueError("device 'mps' cannot run under torchrun (no Apple-GPU backend for DDP); "
                             "use --device cpu or cuda")
        want_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        if want_cuda:
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if self.local_rank >= n:
                raise ValueError(f"LOCAL_RANK {self.local_rank} needs GPU {self.local_rank}, but this machine shows "
                                 f"{n} CUDA device(s); use --nproc-per-node {max(n, 1)} or --device cpu")
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
            self.backend = "nccl"
        else:
            self.device = torch.device("cpu")
            self.backend = "gloo"
        # Collectives may wait while rank 0 extracts and decodes a large dataset alone.
        timeout = datetime.timedelta(minutes=float(os.environ.get(TIMEOUT_ENV, 60)))
        if not dist.is_initialized():
            kw = {"device_id": self.device} if self.backend == "nccl" else {}
            dist.init_process_group(self.backend, timeout=timeout, **kw)
        self._comm = self.device if self.backend == "nccl" else torch.device("cpu")
        self._key = None
        self._raw = None
        self._kinds: dict[int, str] = {}
        self.sync_bn = bool(getattr(config, "sync_bn", False)) and self.device.type == "cuda"
        self._debug = os.environ.get(DEBUG_SHARDS_ENV)

    # communication helpers
    def _tensor(self, values, dtype):
        import torch

        return torch.tensor(values, dtype=dtype, device=self._comm)

    def barrier(self) -> None:
        """Every rank waits for all the others."""
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self._comm if self.backend == "nccl" else None)
        return box[0]

    def max_int(self, value: int) -> int:
        """The largest ``value`` over ranks."""
        import torch
        import torch.distributed as dist

        t = self._tensor([int(value)], torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    # hooks
    def wait_for_main(self) -> None:
        if not self.main:
            self.barrier()

    def release_others(self) -> None:
        if self.main:
            self.barrier()

    def shard(self, dataset):
        import torch

        return torch.utils.data.Subset(dataset, list(ShardSampler(len(dataset), self.rank, self.world)))

    def gather(self, pair):
        import torch
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, (pair[0].cpu(), pair[1].cpu()))
        n = sum(len(p[0]) for p in parts)
        feats = torch.empty((n, *parts[0][0].shape[1:]), dtype=parts[0][0].dtype)
        labels = torch.empty((n,), dtype=parts[0][1].dtype)
        for r, (f, y) in enumerate(parts):  # shard r holds rows r, r + world, ...: put them back in place
            feats[r::self.world] = f
            labels[r::self.world] = y
        return feats, labels

    def shard_loaders(self, loaders: dict, seed: int) -> dict:
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

        def rebuild(dl):
            train = isinstance(dl.sampler, RandomSampler)
            if train:
                sampler = DistributedSampler(dl.dataset, num_replicas=self.world, rank=self.rank, shuffle=True,
                                             seed=seed, drop_last=False)
            else:
                sampler = ShardSampler(len(dl.dataset), self.rank, self.world)
            kw = {"num_workers": dl.num_workers, "persistent_workers": dl.persistent_workers} if dl.num_workers else {}
            out = DataLoader(dl.dataset, batch_size=dl.batch_size, sampler=sampler, generator=dl.generator,
                             pin_memory=dl.pin_memory, drop_last=dl.drop_last, **kw)
            self._kinds[id(out)] = "train" if train else "val"
            return out

        out = {k: tuple(rebuild(dl) for dl in pair) for k, pair in loaders.items()}
        if self._debug:
            for k, (_, val) in out.items():
                self._log_shard({"kind": "val", "features": bool(k), "indices": list(val.sampler),
                                 "n": len(val.dataset)})
        return out

    def _log_shard(self, row: dict) -> None:
        folder = Path(self._debug)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"rank{self.rank}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"rank": self.rank, "world": self.world, **row}) + "\n")

    def prepare(self, forward, model, config, groups) -> None:
        import gc

        import torch
        from torch.nn.parallel import DistributedDataParallel as DDP

        key = (bool(forward.features), tuple(groups))
        if key == self._key:
            return
        self._key = key
        if self._raw is None:
            self._raw = model
            if self.sync_bn:
                torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps children in place, same parameters
        # The previous wrapper's reducer owns autograd hooks on the parameters; it must be gone first.
        forward.model = None
        gc.collect()
        ids = [self.local_rank] if self.device.type == "cuda" else None
        if forward.features:
            forward.model = _HeadOnly(DDP(model.head, device_ids=ids))
        else:
            wrapped = DDP(model, device_ids=ids)
            forward.model = torch.compile(wrapped) if config.compile else wrapped

    def set_epoch(self, loader, epoch: int) -> None:
        loader.sampler.set_epoch(epoch)
        if self._debug:
            self._log_shard({"kind": "train", "epoch": epoch, "indices": list(loader.sampler),
                             "n": len(loader.dataset)})

    def for_eval(self, forward):
        import copy

        import torch.distributed as dist

        # Each rank updated BatchNorm statistics on its own batches; evaluate rank 0's (the saved ones).
        for b in self._raw.buffers():
            dist.broadcast(b, src=0)
        f = copy.copy(forward)
        f.model = self._raw
        return f

    def reduce_eval(self, ev: dict) -> dict:
        import torch
        import torch.distributed as dist

        n = len(ev["labels"])
        correct = int((ev["probs"].argmax(1) == ev["labels"]).sum()) if n else 0
        t = self._tensor([ev["loss"] * n, correct, n], torch.float64)
        dist.all_reduce(t)
        loss_sum, correct, n = t.tolist()
        return {**ev, "loss": loss_sum / max(n, 1), "acc": correct / n if n else 0.0, "n": int(n),
                "correct": int(correct)}

    def sum(self, *values):
        import torch
        import torch.distributed as dist

        t = self._tensor([float(v) for v in values], torch.float64)
        dist.all_reduce(t)
        return tuple(type(v)(x) for v, x in zip(values, t.tolist()))

    def agree(self, flag) -> bool:
        import torch
        import torch.distributed as dist

        t = self._tensor([1 if flag else 0], torch.int64)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def oom(self) -> None:
        raise RuntimeError(f"CUDA ran out of memory on rank {self.rank}; under torchrun the batch cannot be split "
                           f"on one rank alone (the ranks would fall out of step); lower batch_size "
                           f"(it is per GPU) and train again")


# --- pause / stop across ranks -----------------------------------------------------------------

class DistControl:
    """The trainer's Control in a process the app supervises: reads the app's request files between steps.

    Under torchrun, rank 0 reads the files and each step all ranks all-reduce one small flag (0 run,
    1 pause, 2 stop), so they stop at the same step; a SIGTERM, a vanished torchrun agent (parent) or
    a vanished app (``SUPERVISOR_ENV``) stop too. In one plain process (``ctx`` is ``Single``, the app's
    own jobs) a vanished app ends the process at once, as if it had died with the app: the run is left
    "interrupted" and resumes from its last completed epoch (``last.pt``), like a run in a killed server.
    """

    def __init__(self, ctx: Distributed, run_path: Path | None):
        self.ctx, self.run_path = ctx, Path(run_path) if run_path else None
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._ppid = os.getppid()
        sup = os.environ.get(SUPERVISOR_ENV)
        self._supervisor = int(sup) if sup and sup.isdigit() else None

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    def stop(self) -> None:
        self._stop.set()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _gone(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True
        except PermissionError:
            return False

    def _orphaned(self) -> bool:
        return os.getppid() != self._ppid or bool(self._supervisor and self._gone(self._supervisor))

    def _local(self) -> int:
        if self.ctx.world == 1 and not launched() and self._orphaned():
            os._exit(ORPHAN_EXIT)  # no end event: the run stays resumable, as after a crash of the app
        if self._stop.is_set() or os.getppid() != self._ppid:
            return 2
        if self.run_path is not None:
            if (self.run_path / STOP_FILE).exists() or (self._supervisor and self._gone(self._supervisor)):
                return 2
            if (self.run_path / PAUSE_FILE).exists():
                return 1
        return 1 if self._pause.is_set() else 0

    def checkpoint(self) -> None:
        """Called between steps on every rank: waits while paused, raises trainer.Stopped on stop."""
        from .trainer import Stopped

        flag = self.ctx.max_int(self._local())
        while flag == 1:
            time.sleep(0.5)
            flag = self.ctx.max_int(self._local())
        if flag == 2:
            raise Stopped()


class ScratchRun(runs.Run):
    """A non-main rank's run: a private temp folder, no event log; only rank 0 writes the real run."""

    def append(self, event: dict) -> None:
        pass


# --- one torchrun worker ----------------------------------------------------------------------

def train(config=None, on_event=None, run_dir: str | Path | None = None, resume: bool = False) -> dict:
    """Run ``trainer.fit`` as one DDP rank. Rank 0 creates (or opens ``run_dir``) the run; the others follow."""
    import shutil

    import torch.distributed as dist

    from .config import RunConfig
    from .trainer import fit

    global _current
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
                run = runs.create(config.validate())
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
        _current = ctx
        control = DistControl(ctx, run.path if ctx.main else None)
        signal.signal(signal.SIGTERM, lambda *_: control.stop())
        if ctx.main:
            notes = []
            if getattr(config, "sync_bn", False) and not ctx.sync_bn:
                notes.append("sync_bn needs CUDA (NCCL); on CPU each rank keeps its own BatchNorm statistics")
            ev = {"type": "distributed", "time": time.time(), "world_size": ctx.world, "backend": ctx.backend,
                  "device": str(ctx.device), "sync_bn": ctx.sync_bn, "per_process_batch_size": config.batch_size,
                  "effective_batch_size": config.batch_size * ctx.world}
            run.append(ev)
            if on_event:
                on_event(ev)
            for note in notes:
                w = {"type": "warning", "time": time.time(), "message": note}
                run.append(w)
                if on_event:
                    on_event(w)
        result = fit(config, on_event if ctx.main else None, control, run, resume)
        if not ctx.main:
            result = {**result, "rank": ctx.rank, "run_dir": payload["run_dir"]}
        return result
    finally:
        _current = Single()
        if dist.is_initialized():
            dist.destroy_process_group()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _peek_config(run_dir):
    """The device choice must be known before joining the group: rank 0 reads it, the others assume auto."""
    from .config import RunConfig

    p = Path(run_dir) / "config.json"
    if p.exists():
        return RunConfig.load(p)
    return RunConfig(device=os.environ.get("TRANSFER_STUDIO_DDP_DEVICE", "auto"))


# --- the app side: a torchrun subprocess and the job that supervises it -------------------------

def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def command(run_dir: str | Path, nproc: int | None, resume: bool = False) -> list[str]:
    """The command line that trains ``run_dir`` (its config.json): torchrun on ``nproc`` local processes,
    or one plain ``python -m core`` process when ``nproc`` is None (the app's single-device jobs)."""
    flag = "--resume" if resume else "--run-dir"
    if nproc is None:
        return [sys.executable, "-m", "core", "train", flag, str(run_dir)]
    if not (isinstance(nproc, int) and nproc >= 1):
        raise ValueError(f"nproc must be an integer >= 1 (or None for one plain process); got {nproc!r}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "core", "train", flag, str(run_dir)]


def log_name(nproc: int | None) -> str:
    """The run-folder file that collects a job's stdout and stderr."""
    return WORKER_LOG if nproc is None else LOG_FILE


def launch(config, nproc: int | None, run: runs.Run, resume: bool = False) -> subprocess.Popen:
    """Start ``command()`` for ``run`` in its own session (so one signal reaches the group); output goes to
    the run's ``log_name(nproc)``."""
    if not resume:
        runs.atomic_write_text(run.path / "config.json", config.validate().to_json())
    for name in (STOP_FILE, PAUSE_FILE):
        (run.path / name).unlink(missing_ok=True)
    from . import workspace

    env = dict(os.environ)
    env["TRANSFER_STUDIO_HOME"] = str(workspace.home())
    env[SUPERVISOR_ENV] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join([str(_repo_root())] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if nproc is not None:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        if config.device == "auto" or config.device == "cpu":
            env["TRANSFER_STUDIO_DDP_DEVICE"] = config.device
    log = open(run.path / log_name(nproc), "ab")
    try:
        return subprocess.Popen(command(run.path, nproc, resume), cwd=_repo_root(), env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        log.close()  # the child holds its own copy of the descriptor


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(d.name))
    return out


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (Linux /proc; just ``[pid]`` elsewhere)."""
    if not Path("/proc").is_dir():
        return [pid]
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        if Path("/proc").is_dir():
            return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class SubprocessJob:
    """A training run in a child process (torchrun on ``nproc`` processes, or one plain ``python -m core``
    process when ``nproc`` is None), supervised by a thread; same surface as ``core.jobs.Job``.

    The UI reads ``snapshot()``; events come from tailing the run's events.jsonl. ``pause`` / ``stop``
    write request files that the trainer (rank 0) reads between steps; if the processes do not end
    within ``grace_s`` of a stop, the whole tree gets SIGTERM, then SIGKILL.
    """

    def __init__(self, config, run: runs.Run, nproc: int | None, owner: str | None = None, resume: bool = False,
                 grace_s: float = 30.0):
        self.id, self.config, self.run, self.nproc = run.id, config, run, nproc
        self.owner, self.resume, self.grace_s = owner, resume, grace_s
        self.events: list[dict] = []
        self.state = "queued"
        self.error: str | None = None
        self.traceback: str | None = None
        self.result: dict | None = None
        self.thread: threading.Thread | None = None
        self.proc: subprocess.Popen | None = None
        self.created = time.time()
        self._lock = threading.Lock()
        self._tail_lock = threading.Lock()
        self._stop_at: float | None = None
        self._pids: set[int] = set()
        self._offset = 0
        self._partial = b""

    # the Job surface
    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def status(self) -> str:
        """The state, corrected so a job whose supervisor thread is gone is never shown as running, and a run
        that has logged its end counts as ended while its process is still shutting down."""
        if self.state in ("running", "paused") and self.thread is not None and not self.thread.is_alive():
            return "failed" if self.error else "interrupted"
        if self.state == "running":
            if self.proc is not None:
                self._tail()  # what the UI shows is never older than the run's log on disk
            with self._lock:
                end = self.events[-1] if self.events else {}  # 'end' is always a run's last event
            if end.get("type") == "end":
                return end.get("status", "finished")
        if self.state == "running" and (self.run.path / PAUSE_FILE).exists():
            return "paused"
        return self.state

    def pause(self) -> None:
        runs.atomic_write_text(self.run.path / PAUSE_FILE, "")

    def resume_(self) -> None:
        (self.run.path / PAUSE_FILE).unlink(missing_ok=True)

    def stop(self) -> None:
        """Ask every rank to stop at the next step; the supervisor escalates to signals after ``grace_s``."""
        runs.atomic_write_text(self.run.path / STOP_FILE, "")
        (self.run.path / PAUSE_FILE).unlink(missing_ok=True)
        with self._lock:
            if self._stop_at is None:
                self._stop_at = time.time()
        if self.proc is None and self.state == "queued":
            self.state = "stopped"

    def pids(self) -> list[int]:
        """Live processes of this job: the torchrun agent and its workers."""
        if self.proc is None:
            return []
        with self._lock:
            known = set(self._pids)
        return sorted(p for p in known | set(descendants(self.proc.pid)) if alive(p))

    def snapshot(self) -> dict:
        """A consistent copy of what the UI shows: status, events, latest progress."""
        with self._lock:
            events = list(self.events)
        steps = [e for e in events if e.get("type") == "step"]
        phases = [e for e in events if e.get("type") == "phase"]
        return {"id": self.id, "status": self.status(), "events": events, "last_step": steps[-1] if steps else None,
                "last_phase": phases[-1] if phases else None, "error": self.error, "traceback": self.traceback,
                "result": self.result, "run_dir": str(self.run.path), "config": self.config.to_dict(),
                "nproc": self.nproc, "pids": self.pids() if self.alive else []}

    def start(self) -> "SubprocessJob":
        """Start the supervisor thread (JobManager-free use; ``submit`` queues it in a JobManager instead)."""
        self.thread = threading.Thread(target=self._work, name=f"proc-job-{self.id[:24]}", daemon=True)
        self.state = "running"
        self.thread.start()
        return self

    # supervision
    def _tail(self) -> None:
        """Read the events appended since the last call (the supervisor and status() both call it)."""
        with self._tail_lock:
            self._tail_locked()

    def _tail_locked(self) -> None:
        f = self.run.events_file
        if not f.exists():
            return
        with open(f, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        if not chunk:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        new = []
        for line in lines:
            try:
                new.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        with self._lock:
            self.events.extend(new)
        for ev in new:  # the UI can show the outcome at once, while the process is still shutting down
            if ev.get("type") == "end":
                self.result = self.run.result()
                if ev.get("status") == "failed" and self.error is None:
                    self.error, self.traceback = ev.get("message"), ev.get("traceback")

    def _signal_all(self, sig) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _work(self) -> None:
        self.state = "running"
        try:
            if self._stop_at is not None:
                self.state = "stopped"
                return
            if self.resume and self.run.events_file.exists():  # like a thread Job: only this session's events
                self._offset = self.run.events_file.stat().st_size
            self.proc = launch(self.config, self.nproc, self.run, self.resume)
            _register(self)
            if self._stop_at is not None:  # stop() raced with the launch, which clears stale request files
                runs.atomic_write_text(self.run.path / STOP_FILE, "")
            term_sent = kill_sent = False
            last_scan = 0.0
            while self.proc.poll() is None:
                self._tail()
                now = time.time()
                if now - last_scan > 1.0:  # remember workers: if the agent dies first they would be hidden
                    last_scan = now
                    found = set(descendants(self.proc.pid))
                    with self._lock:
                        self._pids |= found
                with self._lock:
                    stop_at = self._stop_at
                if stop_at is not None and not term_sent and now - stop_at > self.grace_s:
                    self._signal_all(signal.SIGTERM)
                    term_sent = True
                elif stop_at is not None and not kill_sent and now - stop_at > self.grace_s + 10:
                    self._signal_all(signal.SIGKILL)
                    kill_sent = True
                time.sleep(0.2)
            self._tail()
            self._finish(self.proc.returncode)
        except Exception as e:  # shown in the UI with its traceback
            self.error = f"{type(e).__name__}: {e}"
            self.traceback = traceback.format_exc()
            self.state = "failed"
        finally:
            self._reap()
            _unregister(self)
            for name in (STOP_FILE, PAUSE_FILE):  # a later `--resume` must not obey an old request
                (self.run.path / name).unlink(missing_ok=True)

    def _finish(self, rc: int) -> None:
        with self._lock:
            ends = [e for e in self.events if e.get("type") == "end"]
        self.result = self.run.result()
        if ends:
            end = ends[-1]
            self.state = end.get("status", "finished")
            if self.state == "failed":
                self.error = end.get("message") or f"{self._what} exited with code {rc}"
                self.traceback = end.get("traceback") or self._log_tail()
        elif self._stop_at is not None:
            self.state = "stopped"
        else:
            self.state = "failed"
            self.error = (f"{self._what} exited with code {rc} before the run ended; the last lines of "
                          f"{log_name(self.nproc)} in the run folder say why")
            self.traceback = self._log_tail()

    @property
    def _what(self) -> str:
        return "the training process" if self.nproc is None else "torchrun"

    def _log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join((self.run.path / log_name(self.nproc)).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _reap(self) -> None:
        """No process of this job outlives it."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_all(signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid in list(self._pids):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


_live: set = set()
_live_lock = threading.Lock()


def _register(job: SubprocessJob) -> None:
    import atexit

    with _live_lock:
        if not _live:
            atexit.register(_kill_live)
        _live.add(job)


def _unregister(job: SubprocessJob) -> None:
    with _live_lock:
        _live.discard(job)


def _kill_live() -> None:
    """At interpreter exit: the app is going away, so its torchrun jobs must not run on unsupervised."""
    with _live_lock:
        jobs = list(_live)
    for job in jobs:
        job._signal_all(signal.SIGKILL)


def submit(manager, config, nproc: int, owner: str | None = None, run: runs.Run | None = None,
           resume: bool = False) -> SubprocessJob:
    """Queue a torchrun job in a ``core.jobs.JobManager``, next to its thread jobs (same limit, same listing)."""
    config.validate()
    run = run or runs.create(config)
    job = SubprocessJob(config, run, nproc, owner=owner, resume=resume)
    return manager.enqueue(job)  # the manager runs job._work() in a worker thread, like its own jobs
