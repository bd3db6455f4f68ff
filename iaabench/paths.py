"""Where iaabench looks for things on this machine: data, weights, caches, results.

Every location can be overridden by an environment variable, and every command that reads
one also takes an explicit option (CLI > environment > default).
"""
from __future__ import annotations

import os
from pathlib import Path

#: The repository (or installed package) root, holding benchmark.yaml, baselines/ and results/.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """User cache for generated synthetic datasets, image caches and feature caches."""
    return Path(os.environ.get("IAABENCH_CACHE", Path.home() / ".cache" / "iaabench")).expanduser()


def data_root() -> Path | None:
    """Folder holding `ava/`, `tad66k/`, `flickr-aes/` (IAABENCH_DATA), or None."""
    v = os.environ.get("IAABENCH_DATA")
    return Path(v).expanduser() if v else None


def weights_dir() -> Path:
    """Folder the weight resolver searches after an explicit path (IAABENCH_WEIGHTS)."""
    return Path(os.environ.get("IAABENCH_WEIGHTS", cache_dir() / "weights")).expanduser()


def results_dir() -> Path:
    return Path(os.environ.get("IAABENCH_RESULTS", PROJECT_ROOT / "results")).expanduser()


def runs_dir() -> Path:
    """Checkpoints of training runs (resumable); not committed."""
    return Path(os.environ.get("IAABENCH_RUNS", PROJECT_ROOT / "runs")).expanduser()
