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


@dataclass(frozen=True)
class Pinned:
    model: str
    dataset: str
    seed: int
    tolerance: dict[str, float]
    recipe: str | None = None
    options: dict = field(default_factory=dict)  # dataset loader options (e.g. a synthetic size n)


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

    def dataset(self, name: str) -> DatasetProtocol:
        if name not in self.datasets:
            raise UnknownNameError(f"dataset '{name}' has no entry in {self.path}",
                                   f"add it under 'datasets:' (known: {', '.join(self.datasets)})")
        return self.datasets[name]


def default_path() -> Path:
    return PROJECT_ROOT / "benchmark.yaml"


@lru_cache(maxsize=None)
def load_protocol(path: Path | None = None) -> Protocol:
    path = Path(path or default_path())
    d = read_yaml(path)
    w = str(path)
    check_keys(d, w, {"version", "datasets", "leaderboard", "pinned", "tolerances"}, {"defaults"})
    if d["version"] != 1:
        raise ConfigError(f"{w}: version: expected 1, got {d['version']!r}")
    defaults = check_keys(d.get("defaults", {}), f"{w}: defaults", set(), {"val_fraction", "n_boot"})
    from .metrics import METRICS

    datasets = {}
    for name, e in check_keys(d["datasets"], f"{w}: datasets").items():
        where = f"{w}: datasets.{name}"
        check_keys(e, where, {"split", "metrics", "threshold"}, {"leaderboard_metrics", "val_fraction", "options"})
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
                                         dict(e.get("options") or {}))
    lb = check_keys(d["leaderboard"], f"{w}: leaderboard", {"models", "datasets"})
    for ds in lb["datasets"]:
        if ds not in datasets:
            raise ConfigError(f"{w}: leaderboard.datasets: '{ds}' has no entry under datasets")
    pinned = []
    for i, p in enumerate(d["pinned"] or []):
        where = f"{w}: pinned[{i}]"
        check_keys(p, where, {"model", "dataset", "tolerance"}, {"seed", "recipe", "options"})
        if p["dataset"] not in datasets:
            raise ConfigError(f"{where}.dataset: '{p['dataset']}' has no entry under datasets")
        tol = check_keys(p["tolerance"], f"{where}.tolerance")
        pinned.append(Pinned(p["model"], p["dataset"], int(p.get("seed", 0)),
                             {k: float(v) for k, v in tol.items()}, p.get("recipe"), dict(p.get("options") or {})))
    tol = check_keys(d["tolerances"], f"{w}: tolerances", {"recompute", "reproduced"})
    return Protocol(path, 1, datasets, list(lb["models"]), list(lb["datasets"]), pinned,
                    float(tol["recompute"]), {k: float(v) for k, v in tol["reproduced"].items()},
                    int(defaults.get("n_boot", 1000)))
