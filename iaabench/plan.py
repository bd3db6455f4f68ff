"""A run is a plan, then an execution.

`RunConfig` is what a caller asks for, in its own words (names, overrides, None for "the
default"). `resolve` turns it into a `RunPlan`: every choice made (the registered model and its
card family, the dataset and split, the split seed of the validation carve-out, the recipe
resolved with its overrides and the model's declared input, the head, the seed, the device,
the weights), plain data that is frozen, hashable and JSON-serialisable. `plan.key()` is a stable
hash of what determines the result (not where files live, nor how many workers decode); it
names the checkpoint folder (`--resume` finds it), and sweeps and the table group records by it.
`runner.execute(plan, rank, world_size)` carries it out.

Several processes (`iaabench.distributed`): `world_size` is in the plan (each rank's batch is
the global `--batch-size` / world_size, checked here), but in the key only for a
batch-dependent model (`batch_dependent`: TANet's theme branch, EAT), whose predictions depend
on the per-rank batches, or a loss over the batch as a whole (`losses.BATCH_LEVEL_LOSSES`:
tanet_emd2, relic_emd), computed per rank. For the others a run on N processes computes the
same global batches (the same images, augmentations, averaged gradients) as one process, up to
per-rank BatchNorm statistics (`--sync-bn` on CUDA), dropout draws and floating-point order, so
it keys, resumes and groups in the table with one process's; the record's
`provenance.distributed` says how it ran.

Precedence: command line > the model's card > the protocol's defaults.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .cards import Recipe, load_card
from .errors import ConfigError
from .losses import BATCH_LEVEL_LOSSES, check_loss
from .protocol import load_protocol
from .registry import dataset_info, model_info, probe_model

MODES = ("trained", "eval-only")
#: The evaluation batch on CUDA when `--eval-batch-size` is not given, for models that are not batch-coupled.
CUDA_EVAL_BATCH_SIZE = 256


@dataclass
class RunConfig:
    """A run as asked for (the command line's options); `resolve` makes it a `RunPlan`."""

    model: str
    dataset: str
    data_root: Path | None = None
    images: Path | None = None
    split: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    lr: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    split_seed: int = 0  # the seed of the validation carve-out (not of training)
    device: str = "cpu"
    weights: Path | None = None
    pretrained: str | None = None  # None: the recipe's choice
    resume: bool = False
    strict: bool = False
    fast: bool = False
    fast_require: bool = False  # --fast=require: a disk too small for the pixel cache stops the run
    fast_draft: bool = False  # --fast=draft: the reduced-scale JPEG decoding cache (other pixels: in the key)
    workers: int = 0
    world_size: int = 1  # processes (torchrun's WORLD_SIZE); the batch size is the global batch
    sync_bn: bool = False  # several CUDA processes: BatchNorm statistics of the global batch (SyncBatchNorm)
    dataset_options: dict = field(default_factory=dict)
    train: bool = True  # False: evaluate only (`iaabench eval`)
    results_root: Path | None = None  # default: results/ (IAABENCH_RESULTS)
    head: str | None = None  # None: the recipe's head (or the model's first)
    compile: bool = False  # torch.compile the model's forward (the module, its weights and names stay as they are)
    tensorboard: Path | None = None  # log per-epoch scalars to TensorBoard under this folder
    eval_precision: str = "float32"  # the test evaluation's precision: float32 or bf16 (autocast)
    allow_overlap: bool = False  # eval: evaluate even where the weights were trained on test images (marked)


#: How a plan runs on several processes; out of `key()` but for a batch-dependent model's world size.
DISTRIBUTED_FIELDS = ("world_size", "sync_bn", "batch_dependent")

#: Fields of a plan that say where files are or how fast the work goes, not what it computes:
#: they are left out of `key()`.
PLACE_FIELDS = ("device", "data_root", "images", "workers", "strict", "resume", "results_root", "tensorboard",
                "allow_overlap", "fast_require")


@dataclass(frozen=True)
class RunPlan:
    """Everything a run does, resolved (see the module docstring). Plain values only."""

    model: str  # the registered name: a variant of the card `family`
    family: str
    dataset: str
    split: str
    split_seed: int
    seed: int
    recipe_name: str
    recipe: dict  # `Recipe.to_dict()`: resolved, with the model's input in its transforms
    head: str
    mode: str  # "trained" or "eval-only"
    pretrained: str
    weights: str | None = None
    dataset_options: dict = field(default_factory=dict)
    fast: bool = False
    compile: bool = False
    world_size: int = 1
    sync_bn: bool = False
    batch_dependent: bool = False  # the model's `batch_dependent`, or a training loss in `losses.BATCH_LEVEL_LOSSES`
    device: str = "cpu"
    data_root: str | None = None
    images: str | None = None
    workers: int = 0
    strict: bool = False
    resume: bool = False
    results_root: str | None = None
    tensorboard: str | None = None
    fast_require: bool = False
    eval_precision: str = "float32"  # `device.PRECISIONS`; part of the key (bf16 changes the numbers)
    fast_draft: bool = False  # the draft pixel cache (`--fast=draft`): in the key only when set
    allow_overlap: bool = False

    def __hash__(self) -> int:
        return hash(self.key())

    @property
    def train(self) -> bool:
        return self.mode == "trained"

    def recipe_obj(self) -> Recipe:
        return Recipe.from_dict(self.recipe)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), sort_keys=True))

    @classmethod
    def from_dict(cls, d: dict) -> "RunPlan":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"run plan: unknown key '{unknown[0]}'", f"known: {', '.join(sorted(known))}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """What determines the result: the plan without `PLACE_FIELDS` and `DISTRIBUTED_FIELDS`,
        but with the world size of a batch-dependent model run on several processes (see the
        module docstring)."""
        out = {k: v for k, v in self.to_dict().items() if k not in PLACE_FIELDS and k not in DISTRIBUTED_FIELDS}
        if self.batch_dependent and self.world_size > 1:
            out["world_size"] = self.world_size
        if not self.fast_draft:  # the keys of plans made before the draft mode stay as they were
            del out["fast_draft"]
        return out

    def key(self) -> str:
        """A stable hash (16 hex digits) of `identity()`: the same on every machine and Python."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(d: dict) -> dict:
    """JSON's types only (lists, not tuples), so a plan equals itself read back from JSON."""
    return json.loads(json.dumps(d))


def _str(p) -> str | None:
    return None if p is None else str(p)


def recipe_for(req: RunConfig) -> Recipe:
    """The card's recipe for the request (its `--recipe`, else the card's choice for the
    dataset) with the command line's overrides; not yet shaped by the model's input."""
    info = model_info(req.model)
    card = load_card(info.family)
    default = load_protocol().dataset(req.dataset).recipe
    name = req.recipe or card.recipe_name_for(req.dataset, req.model, default)
    return card.recipe(name).with_overrides(req.epochs, req.batch_size, req.lr, req.eval_batch_size)


def resolve(request: RunConfig | None = None, /, **options) -> RunPlan:
    """The plan of a request (a `RunConfig`, or its fields as keywords). Unknown names, a head
    the model lacks and a loss that does not fit the head or the data are errors here, before
    any data is read."""
    req = request if request is not None else RunConfig(**options)
    info = model_info(req.model)
    ds = dataset_info(req.dataset)  # an unknown name gets suggestions before anything else
    dp = load_protocol().dataset(req.dataset)
    for name, v in (("seed", req.seed), ("split-seed", req.split_seed)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"--{name} {v!r}: expected a non-negative integer")
    from .device import PRECISIONS

    if req.eval_precision not in PRECISIONS:
        raise ConfigError(f"--eval-precision {req.eval_precision!r}: expected one of {', '.join(PRECISIONS)}")
    recipe = recipe_for(req)
    head = req.head or recipe.head or info.heads[0]
    if head not in info.heads:
        raise ConfigError(f"model '{req.model}' has no '{head}' head (it has: {', '.join(info.heads)})")
    probe = probe_model(req.model, head, **recipe.options)
    recipe = recipe.for_input(probe.input)
    # closed-form baselines are fitted on the training samples instead of trained for epochs
    fits = bool(getattr(probe, "fits_from_samples", False))
    mode = "trained" if req.train and (recipe.epochs > 0 or fits) else "eval-only"
    if req.train and recipe.epochs > 0:
        check_loss(recipe.loss, head=head, has_votes=ds.has_votes)
    training = mode == "trained" and recipe.epochs > 0
    _check_processes(req, recipe, training, bool(getattr(probe, "batch_dependent", False)))
    batch_dependent = bool(getattr(probe, "batch_dependent", False)) or \
        (training and recipe.loss in BATCH_LEVEL_LOSSES)
    if req.eval_batch_size is None and str(req.device).startswith("cuda") and not getattr(probe, "batch_dependent", False):
        # the card's evaluation batch matters only to a batch-coupled model; others evaluate in large batches on a GPU
        recipe = recipe.with_overrides(eval_batch_size=max(recipe.eval_batch_size, CUDA_EVAL_BATCH_SIZE))
    return RunPlan(
        model=req.model, family=info.family, dataset=req.dataset, split=req.split or dp.split,
        split_seed=req.split_seed, seed=req.seed, recipe_name=recipe.name, recipe=_plain(recipe.to_dict()), head=head,
        mode=mode, pretrained=str(req.pretrained or recipe.pretrained), weights=_str(req.weights),
        dataset_options=dict(req.dataset_options), fast=bool(req.fast), compile=bool(req.compile),
        world_size=int(req.world_size), sync_bn=bool(req.sync_bn), batch_dependent=batch_dependent,
        device=req.device, data_root=_str(req.data_root), images=_str(req.images), workers=int(req.workers),
        strict=bool(req.strict), resume=bool(req.resume), results_root=_str(req.results_root),
        tensorboard=_str(req.tensorboard), eval_precision=req.eval_precision,
        allow_overlap=bool(req.allow_overlap), fast_require=bool(req.fast and req.fast_require),
        fast_draft=bool(req.fast and req.fast_draft))


def _check_processes(req: RunConfig, recipe: Recipe, training: bool, batch_dependent: bool) -> None:
    """World size, per-rank batch and `--sync-bn` of a request, before anything runs."""
    from .distributed import per_rank_batch

    n = req.world_size
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"world size {n!r}: expected a positive number of processes")
    if training and n > 1:
        per_rank = per_rank_batch(recipe.batch_size, n)
        if batch_dependent and per_rank < 2:
            raise ConfigError(f"model '{req.model}' predicts each image from its batch: a per-rank batch of "
                              f"{per_rank} ({recipe.batch_size} / {n} processes) is too small",
                              f"give --batch-size {2 * n} or more")
    if req.sync_bn and not str(req.device).startswith("cuda"):
        raise ConfigError("--sync-bn needs CUDA (torch.nn.SyncBatchNorm runs on GPUs only)",
                          "drop --sync-bn on the CPU (each rank's BatchNorm then uses its own batch)")


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2]; a duplicate, a negative or a non-number is an error."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(f"--seeds {text}: '{part}' is not a non-negative integer",
                              "give comma-separated seeds, e.g. --seeds 0,1,2")
        if int(part) in seeds:
            raise ConfigError(f"--seeds {text}: seed {int(part)} is given twice")
        seeds.append(int(part))
    return seeds
