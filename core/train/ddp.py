"""DistributedDataParallel under ``torchrun``: the hooks the one training loop calls.

Torch-free at import time. Inside each ``torchrun`` worker (``core.jobs.worker.train``), ``context()``
returns ``Distributed``: device, sharded loaders, DDP wrapping, gathered validation rows, summed training
numbers and agreed decisions; in an ordinary process it returns ``Single``, whose hooks are no-ops.

What works under DDP (each rank is one process; ``batch_size`` is the GLOBAL batch: each of the N ranks
takes ``ceil(batch_size / N)`` samples per step, so the number of steps per epoch, the learning rates and
their schedule stay those of one process, and N processes learn what one process learns):

* training data: ``DistributedSampler`` (shuffled per epoch with ``seed + epoch``; when the training
  set does not divide evenly, a few images are repeated so every rank takes the same number of steps;
  a short last batch is dropped per rank exactly when one process would drop it, see
  ``core.train.loop.drop_short_batch``, which keeps at least one step on every rank);
* validation: each rank evaluates a disjoint shard with no padding; the technique's per-sample rows
  are all-gathered back into order, so every metric covers the whole validation set exactly once;
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
from pathlib import Path
from core.i18n import _


DEBUG_SHARDS_ENV = "TRANSFER_STUDIO_DEBUG_SHARDS"  # a folder: each rank logs the sample indices it sees
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

    def gather_rows(self, rows: dict) -> dict:
        """Re-assemble per-sample rows ({name: tensor}) computed on shards into the full, ordered tensors."""
        return rows

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
            raise ValueError(_("device 'mps' cannot run under torchrun (no Apple-GPU backend for DDP); use "
                               "--device cpu or cuda"))
        want_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        if want_cuda:
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if self.local_rank >= n:
                raise ValueError(_("LOCAL_RANK {local_rank} needs GPU {local_rank}, but this machine shows {n} "
                                   "CUDA device(s); use --nproc-per-node {max} or --device cpu").format(
                                     local_rank=self.local_rank, n=n, max=max(n, 1)))
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

    def gather_rows(self, rows: dict) -> dict:
        import torch
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, {k: v.cpu() for k, v in rows.items()})
        out = {}
        for k in rows:
            n = sum(len(p[k]) for p in parts)
            full = torch.empty((n, *parts[0][k].shape[1:]), dtype=parts[0][k].dtype)
            for r, p in enumerate(parts):  # shard r holds rows r, r + world, ...: put them back in place
                full[r::self.world] = p[k]
            out[k] = full
        return out

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
            for k, (_n, val) in out.items():
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
        raise RuntimeError(_("CUDA ran out of memory on rank {rank}; under torchrun the batch cannot be split on "
                             "one rank alone (the ranks would fall out of step); lower batch_size (it is per GPU) "
                             "and train again").format(rank=self.rank))
