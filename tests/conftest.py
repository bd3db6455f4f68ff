"""Shared test helpers.

Real label files and photographs live in ../shared (never in this repository, for licence
reasons). Tests that need them call `shared_dir()` and skip, saying so, when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_dir() -> Path | None:
    p = Path(os.environ.get("IAABENCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return p if p.is_dir() else None


def require_shared(*parts: str) -> Path:
    """The path ../shared/<parts...>, or skip the test with the reason."""
    base = shared_dir()
    if base is None or not base.joinpath(*parts).exists():
        pytest.skip(f"shared data {'/'.join(parts)} not found: set IAABENCH_SHARED to the shared folder")
    return base.joinpath(*parts)


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Keep every test away from the user's cache and the committed results/."""
    if "IAABENCH_TEST_CACHE" not in os.environ:
        os.environ["IAABENCH_TEST_CACHE"] = str(tmp_path_factory.mktemp("iaabench-cache"))
    monkeypatch.setenv("IAABENCH_CACHE", os.environ["IAABENCH_TEST_CACHE"])
    monkeypatch.setenv("IAABENCH_RESULTS", str(tmp_path_factory.mktemp("results")))
    monkeypatch.setenv("IAABENCH_RUNS", str(tmp_path_factory.mktemp("runs")))


@pytest.fixture
def one_thread():
    """Single-threaded torch: on a small shared CPU, two spinning threads are much slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
