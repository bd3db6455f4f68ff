"""The benchmark protocol (`benchmark.yaml`): datasets with their split, metrics and
accuracy threshold; the leaderboard matrix; the pinned quick runs `iaabench check` re-runs;
and the tolerances it judges them by. Loaded and validated once, with errors naming the key."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .config import check_keys, read_yaml
from .errors import ConfigError, UnknownNameError
from .paths import PROJECT_ROOT


@dataclass(frozen=True)
class DatasetProtocol:
    name: str
    split: str
    metrics: list[str]
    threshold: float
    leaderboard_metrics: list[str]
    val_fraction: float
    options: dict = field(default_factory=dict)
    recipe: str | None = None  # the recipe of a model whose card names none for this dataset


@dataclass(frozen=True)
class Pinned:
    model: str
    dataset: str
    seed: int
    tolerance: dict[str, float]
    recipe: str | None = None
    options: dict = field(default_factory=dict)  # dataset loader options (e.g. a synthetic size n)
    calibration: dict = field(default_factory=dict)  # how the tolerance was measured (`check --calibrate`)

    @property
    def name(self) -> str:
        return f"{self.model} on {self.dataset}" + (f" ({self.recipe})" if self.recipe else "") + f", seed {self.seed}"


@dataclass(frozen=True)
class Protocol:
    path: Path
    version: int
    datasets: dict[str, DatasetProtocol]
    leaderboard_models: list[str]
    leaderboard_datasets: list[str]
    pinned: list[Pinned]
    recompute_tolerance: float
    reproduce_tolerance: dict[str, float]
    n_boot: int
    pinned_isa: str = "avx2"  # the instruction set `check` holds the math libraries to for its re-runs
    pinned_threads: int = 2
    bench_targets: tuple = ()  # `bench.targets`: what `iaabench bench` records are checked against

    def dataset(self, name: str) -> DatasetProtocol:
        if name not in self.datasets:
            raise UnknownNameError(f"dataset '{name}' has no entry in {self.path}",
                                   f"add it under 'datasets:' (known: {', '.join(self.datasets)})")
        return self.datasets[name]


def default_path() -> Path:
    return PROJECT_ROOT / "benchmark.yaml"


@lru_cache(maxsize=None)
def load_protocol(path: Path | None = None, calibrating: bool = False) -> Protocol:
    """`calibrating`: accept pinned entries whose tolerance is missing or not derived yet (only
    `iaabench check --calibrate`, which derives them, loads the protocol so)."""
    path = Path(path or default_path())
    d = read_yaml(path)
    w = str(path)
    check_keys(d, w, {"version", "datasets", "leaderboard", "pinned", "tolerances"}, {"defaults", "pinned_environment", "bench"})
    if d["version"] != 1:
        raise ConfigError(f"{w}: version: expected 1, got {d['version']!r}")
    defaults = check_keys(d.get("defaults", {}), f"{w}: defaults", set(), {"val_fraction", "n_boot"})
    from .metrics import METRICS

    datasets = {}
    for name, e in check_keys(d["datasets"], f"{w}: datasets").items():
        where = f"{w}: datasets.{name}"
        check_keys(e, where, {"split", "metrics", "threshold"},
                   {"leaderboard_metrics", "val_fraction", "options", "recipe"})
        if not isinstance(e.get("recipe", ""), str):
            raise ConfigError(f"{where}.recipe: expected a recipe name, got {e['recipe']!r}")
        for key in ("metrics", "leaderboard_metrics"):
            for m in e.get(key, []):
                if m not in METRICS:
                    raise ConfigError(f"{where}.{key}: unknown metric '{m}'", f"known: {', '.join(sorted(METRICS))}")
        vf = e.get("val_fraction", defaults.get("val_fraction", 0.1))
        if not (isinstance(vf, float) and 0 < vf < 1):
            raise ConfigError(f"{where}.val_fraction: expected a number in (0, 1), got {vf!r}")
        if not isinstance(e["threshold"], (int, float)):
            raise ConfigError(f"{where}.threshold: expected a number, got {e['threshold']!r}")
        datasets[name] = DatasetProtocol(name, e["split"], list(e["metrics"]), float(e["threshold"]),
                                         list(e.get("leaderboard_metrics", e["metrics"][:3])), vf,
                                         dict(e.get("options") or {}), e.get("recipe"))
    lb = check_keys(d["leaderboard"], f"{w}: leaderboard", {"models", "datasets"})
    for ds in lb["datasets"]:
        if ds not in datasets:
            raise ConfigError(f"{w}: leaderboard.datasets: '{ds}' has no entry under datasets")
    env = check_keys(d.get("pinned_environment") or {}, f"{w}: pinned_environment", set(), {"isa", "threads"})
    from .pinned import ISA_ENV

    isa = env.get("isa", "avx2")
    if isa != "native" and isa not in ISA_ENV:
        raise ConfigError(f"{w}: pinned_environment.isa: '{isa}' is not one of native, {', '.join(ISA_ENV)}")
    threads = env.get("threads", 2)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"{w}: pinned_environment.threads: expected a positive integer, got {threads!r}")
    pinned = [_pinned(p, f"{w}: pinned[{i}]", datasets, calibrating) for i, p in enumerate(d["pinned"] or [])]
    tol = check_keys(d["tolerances"], f"{w}: tolerances", {"recompute", "reproduced"})
    return Protocol(path, 1, datasets, list(lb["models"]), list(lb["datasets"]), pinned,
                    float(tol["recompute"]), {k: float(v) for k, v in tol["reproduced"].items()},
                    int(defaults.get("n_boot", 1000)), isa, threads, _bench_targets(d.get("bench"), w))


def _bench_targets(bench, w: str) -> tuple:
    """`bench: {targets: [...]}`: each target names what is measured and the minimum it must reach."""
    if bench is None:
        return ()
    check_keys(bench, f"{w}: bench", {"targets"})
    out = []
    for i, t in enumerate(bench["targets"] or []):
        where = f"{w}: bench.targets[{i}]"
        check_keys(t, where, {"id", "what", "device", "metric", "min", "unit"},
                   {"model", "gpu", "cores", "dataset_prefix", "photo"})
        if not isinstance(t["min"], (int, float)) or isinstance(t["min"], bool):
            raise ConfigError(f"{where}.min: expected a number, got {t['min']!r}")
        out.append({"model": None, **t, "min": float(t["min"])})
    return tuple(out)


def _pinned(p: dict, where: str, datasets: dict, calibrating: bool) -> Pinned:
    """One pinned entry. Its tolerance must be derived (`iaabench check --calibrate`): present,
    at least 3 sd of its calibration for every metric, and within the cap for SRCC/PLCC."""
    from .pinned import MIN_SEEDS, TOLERANCE_CAP

    check_keys(p, where, {"model", "dataset"}, {"seed", "recipe", "options", "tolerance", "calibration"})
    name = f"{where} ({p['model']} on {p['dataset']})"
    if p["dataset"] not in datasets:
        raise ConfigError(f"{where}.dataset: '{p['dataset']}' has no entry under datasets")
    tol = check_keys(p.get("tolerance") or {}, f"{name}.tolerance")
    cal = check_keys(p.get("calibration") or {}, f"{name}.calibration", set(),
                     {"n_runs", "sd", "perturbations", "values", "date", "machine", "reference"})
    pin = Pinned(p["model"], p["dataset"], int(p.get("seed", 0)), {k: float(v) for k, v in tol.items()},
                 p.get("recipe"), dict(p.get("options") or {}), dict(cal))
    if calibrating:
        return pin
    fix = "derive it with `iaabench check --calibrate`"
    if not tol:
        raise ConfigError(f"{name}: no derived tolerance", fix)
    missing = sorted({"n_runs", "sd", "perturbations", "date", "machine"} - set(cal))
    if missing:
        raise ConfigError(f"{name}.calibration: missing {', '.join(missing)}: the tolerance is not derived", fix)
    if not isinstance(cal["n_runs"], int) or cal["n_runs"] < MIN_SEEDS:
        raise ConfigError(f"{name}.calibration.n_runs: {cal['n_runs']!r}, at least {MIN_SEEDS} runs are needed", fix)
    sd = check_keys(cal["sd"], f"{name}.calibration.sd")
    for metric, t in pin.tolerance.items():
        if metric not in sd or not isinstance(sd[metric], (int, float)):
            raise ConfigError(f"{name}.tolerance.{metric}: no measured sd under calibration.sd", fix)
        if t < 3 * float(sd[metric]) - 1e-9:
            raise ConfigError(f"{name}.tolerance.{metric}: {t} is less than 3 sd ({3 * float(sd[metric]):.4f}): "
                              "not derived from its calibration", fix)
        cap = TOLERANCE_CAP.get(metric)
        if cap is not None and t > cap:
            raise ConfigError(f"{name}.tolerance.{metric}: {t} is above the cap {cap}",
                              "make the run more stable (more images or epochs, a better recipe) and "
                              "re-calibrate, or drop it from pinned")
    return pin
