"""Several processes, one run: DistributedDataParallel under torchrun.

`torchrun --nproc_per_node N -m iaabench run ...`, or `iaabench run --nproc N`, which starts
the same through `torch.distributed.run`, runs N processes (ranks). Each reads its place from
torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`) and joins one process group: NCCL
on CUDA (rank r on `cuda:<local rank>`), gloo on the CPU.

What each rank does:

- training: the batch sources deal every epoch's seeded order round-robin to the ranks
  (`data.pipeline.epoch_chunks`), so the ranks see disjoint images that together are every
  training image once; `--batch-size` is the global batch, each rank's is global / world size
  (an error where it does not divide; learning rates are never rescaled). The model is wrapped
  in DDP (gradients averaged over the ranks). Every rank takes len(samples) // global batch
  batches, so global step k holds the images of one process's batch k (`global_steps`); a rank
  left with fewer (a failed image, a skipped batch) joins early (`joined`) instead of hanging;
- evaluation (validation each epoch, then the test split): sharded the same way, and the
  predictions gathered (`gather_predictions`) into one set in dataset order, every image once
  (a copy of an image, e.g. a sampler's padding, is dropped), on every rank, so all ranks agree
  on the best epoch;
- only rank 0 writes checkpoints and the record; the others wait at a barrier. `--resume`
  reads rank 0's checkpoint on every rank (the runs folder must be one every rank sees: on one
  machine it is).

Batch statistics are per rank: BatchNorm layers in training normalise with their rank's
batch (`--sync-bn` converts them to `torch.nn.SyncBatchNorm`, CUDA only), and a batch-coupled
model (`batch_dependent`: TANet's theme branch, EAT) sees per-rank batches in training and
evaluation; the record's `provenance.distributed` says so.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .device import on_cuda
from .errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: `rank` of `world_size` (one process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks()


def from_env(environ=None) -> Ranks:
    """The ranks torchrun's environment gives (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`); one process
    where `WORLD_SIZE` is unset."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = env.get(name, "0")
        if not text.isdigit():
            raise ConfigError(f"environment variable {name}={text!r}: expected a non-negative integer",
                              "start several processes with torchrun (or iaabench run --nproc N)")
        values[name] = int(text)
    if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise ConfigError(f"environment: RANK={values['RANK']} is not in [0, WORLD_SIZE={values['WORLD_SIZE']})")
    return Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


def backend_for(device: str) -> str:
    return "nccl" if on_cuda(device) else "gloo"


def rank_device(device: str, ranks: Ranks) -> str:
    """The device of this rank: `cuda` becomes `cuda:<local rank>` (one GPU per process)."""
    if not ranks.several or not on_cuda(device):
        return device
    if device not in ("cuda", f"cuda:{ranks.local_rank}"):
        raise ConfigError(f"--device {device} with {ranks.world_size} processes: each process takes the GPU of "
                          "its local rank", "give --device cuda (or auto)")
    n = torch.cuda.device_count()
    if ranks.local_rank >= n:
        raise ConfigError(f"local rank {ranks.local_rank} has no GPU: this machine has {n}",
                          f"start at most {n} processes per machine (--nproc / --nproc_per_node)")
    return f"cuda:{ranks.local_rank}"


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Ranks]:
    """Join torchrun's process group for the `with` block (NCCL on CUDA, gloo on the CPU) and
    leave it after; with one process there is nothing to join."""
    ranks = from_env()
    if not ranks.several:
        yield ranks
        return
    import torch.distributed as td

    backend = backend_for(device)
    if on_cuda(device):
        torch.cuda.set_device(ranks.local_rank)
    td.init_process_group(backend=backend)  # env://: torchrun sets MASTER_ADDR and MASTER_PORT
    try:
        yield replace(ranks, backend=backend)
    finally:
        td.destroy_process_group()


def attach(rank: int, world_size: int) -> Ranks:
    """The `Ranks` of `runner.execute(plan, rank, world_size)`: one process, or the joined
    process group (an error, saying how to start one, where it is missing or differs)."""
    if world_size == 1 and rank == 0:
        return SINGLE
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()):
        raise ConfigError(f"rank {rank} of world size {world_size}: no process group has been joined",
                          "start several processes with torchrun --nproc_per_node N -m iaabench run ... "
                          "or iaabench run --nproc N")
    if (td.get_rank(), td.get_world_size()) != (rank, world_size):
        raise ConfigError(f"rank {rank} of world size {world_size} does not match the process group "
                          f"(rank {td.get_rank()} of {td.get_world_size()})")
    return replace(from_env(), rank=rank, world_size=world_size, backend=str(td.get_backend()))


def barrier(ranks: Ranks) -> None:
    """Wait until every rank is here (NCCL: on this rank's GPU)."""
    if ranks.several:
        import torch.distributed as td

        if ranks.backend == "nccl":
            td.barrier(device_ids=[torch.cuda.current_device()])
        else:
            td.barrier()


def broadcast(obj, ranks: Ranks):
    """Rank 0's `obj` on every rank."""
    if not ranks.several:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj, ranks: Ranks) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not ranks.several:
        return [obj]
    import torch.distributed as td

    out = [None] * ranks.world_size
    td.all_gather_object(out, obj)
    return out


def is_main_process() -> bool:
    """False only on a rank other than 0 of a joined process group (which writes no files)."""
    import torch.distributed as td

    return not (td.is_available() and td.is_initialized()) or td.get_rank() == 0


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The global `batch_size` split over the ranks; an error where it does not divide."""
    if batch_size % world_size:
        near = max(batch_size // world_size, 1) * world_size
        raise ConfigError(f"--batch-size {batch_size} is the global batch: it must divide by the {world_size} "
                          f"processes (each takes batch_size / {world_size})",
                          f"give a multiple of {world_size}, e.g. --batch-size {near}")
    return batch_size // world_size


# -- training --------------------------------------------------------------------------------------

def wrap(model: torch.nn.Module, ranks: Ranks, device: str) -> torch.nn.Module:
    """`model` in DistributedDataParallel (the module itself with one process). `static_graph`:
    every step uses the same parameters, which DDP learns in the first step, so parameters that
    no step uses (a head or branch a recipe leaves out) need no search of the graph every step."""
    if not ranks.several:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index or 0] if on_cuda(device) else None
    return DistributedDataParallel(model, device_ids=ids, static_graph=True)


def convert_sync_bn(model: torch.nn.Module, ranks: Ranks) -> torch.nn.Module:
    """`--sync-bn`: BatchNorm layers normalise with the statistics of the global batch
    (`torch.nn.SyncBatchNorm`; same parameters and buffers, so checkpoints are unchanged)."""
    if not ranks.several:
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def joined(source, epoch: int, net: torch.nn.Module, ranks: Ranks) -> Iterator:
    """The batches of `source`'s `epoch` on this rank, iterated inside DDP's `Join`.

    Where short batches are dropped (training) every rank stops after len(samples) // global
    batch batches, so the global steps are one process's batches (the order is dealt
    round-robin); a rank left with fewer (a failed image, a skipped batch) shadows the others'
    gradient reductions instead of hanging."""
    batches = source.epoch(epoch)
    if not ranks.several:
        yield from batches
        return
    from torch.distributed.algorithms.join import Join

    steps = global_steps(source, ranks)
    if steps is not None:
        batches = itertools.islice(batches, steps)
    with Join([net]):
        yield from batches


def global_steps(source, ranks: Ranks) -> int | None:
    """Batches every rank takes per epoch where short batches are dropped (None: all it has):
    len(samples) // global batch, the number one process takes."""
    if not source.drop_last:
        return None
    return len(source.samples) // (source.batch_size * ranks.world_size)


def end_epoch(model: torch.nn.Module, losses: list, out, seen: int, ranks: Ranks) -> list:
    """After an epoch's steps: every rank's losses (returned, for the mean), failures, notes and
    image count merged into `out` (a `TrainOutcome`; images counted since `seen`), and rank 0's
    buffers (BatchNorm statistics) copied to every rank, so validation and checkpoints agree."""
    if not ranks.several:
        return losses
    import torch.distributed as td

    mine = ([float(v) for v in losses], out.failed, out.notes, out.images_seen - seen)
    parts = all_gather(mine, ranks)
    for _, failed, notes, _ in parts:
        out.failed.update(failed)
        out.notes.update(notes)
    out.images_seen = seen + sum(p[3] for p in parts)
    for buf in model.buffers():
        td.broadcast(buf, src=0)
    return [torch.tensor(v, dtype=torch.float64) for p in parts for v in p[0]]


# -- evaluation ------------------------------------------------------------------------------------

def merge_shards(shards: Sequence[tuple]) -> tuple[list[int], np.ndarray, np.ndarray | None, list]:
    """Merge per-rank predictions into one set in dataset order.

    `shards`: one (positions, scores (n,), distributions (n, k) or None, failed [(position,
    reason)]) per rank, positions in the full sample list. Returns (positions ascending, scores,
    distributions, failed): every position once (later copies, e.g. a sampler's padding, are
    dropped), and an image that was predicted on some rank is not also failed."""
    rows: dict[int, tuple] = {}
    for index, score, dist, _ in shards:
        for k, i in enumerate(index):
            rows.setdefault(int(i), (score[k], None if dist is None else dist[k]))
    index = sorted(rows)
    score = np.array([rows[i][0] for i in index], dtype=np.float64)
    dists = [rows[i][1] for i in index]
    dist = np.stack(dists).astype(np.float64) if dists and all(d is not None for d in dists) else None
    failed: dict[int, str] = {}
    for *_, fails in shards:
        for i, reason in fails:
            if int(i) not in rows:
                failed.setdefault(int(i), reason)
    return index, score, dist, sorted(failed.items())


def gather_predictions(index: list[int], score: np.ndarray, dist: np.ndarray | None, failed: list,
                       notes: dict | None, ranks: Ranks):
    """Every rank's predictions (`merge_shards`) and decoding notes, on every rank."""
    parts = all_gather((list(index), score, dist, list(failed), dict(notes or {})), ranks)
    merged = merge_shards([p[:4] for p in parts])
    if notes is not None:
        for p in parts:
            notes.update(p[4])
    return merged


def provenance(ranks: Ranks, batch_size: int | None, eval_batch_size: int, batch_dependent: bool,
               sync_bn: bool, loss: str | None = None) -> dict:
    """The record's `provenance.distributed` (`batch_size`: the global training batch, None
    where nothing was trained; `loss`: the training loss)."""
    from .losses import BATCH_LEVEL_LOSSES

    per_rank = None if batch_size is None else batch_size // ranks.world_size
    out = {"world_size": ranks.world_size, "backend": ranks.backend,
           "global_batch_size": batch_size, "per_rank_batch_size": per_rank,
           "per_rank_eval_batch_size": eval_batch_size, "sync_bn": bool(sync_bn and ranks.several)}
    coupled = []
    if ranks.several and batch_dependent:
        seen = f"{per_rank} in training, " if per_rank is not None else ""
        coupled.append(f"this model's predictions depend on the other images of its batch: it saw per-rank batches "
                       f"({seen}up to {eval_batch_size} in evaluation, from one image in {ranks.world_size} of the "
                       "order)")
    if ranks.several and loss in BATCH_LEVEL_LOSSES:
        coupled.append(f"its loss {loss} is the root of a batch mean, computed on each rank's batch of {per_rank} "
                       "(DDP averages the ranks' gradients), not on the global batch")
    if coupled:
        out["batch_coupled"] = "; ".join(coupled)
    return out


# -- launching -------------------------------------------------------------------------------------

def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m iaabench ARGV` as `nproc` processes on this machine through torchrun
    (`torch.distributed.run --standalone`, a free port); returns its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "iaabench", *argv]
    return subprocess.call(cmd)
