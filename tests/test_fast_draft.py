"""`--fast=draft` on run/eval: the reduced-scale JPEG decoding cache (`cache.open_cache(mode="draft")`)
as a run's data path. It changes pixels, so it has its own plan key (plain `--fast` keeps the
keys of existing plans), and the record says the data path was the draft cache with its
measured pixel difference."""
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from iaabench.cli import app
from iaabench.commands.common import _fast_option
from iaabench.errors import ConfigError, UnknownNameError
from iaabench.plan import RunConfig, resolve
from iaabench.results import read_records
from test_reliability_crash import run_args, tiny_tad66k


def test_the_option_takes_draft():
    assert _fast_option("draft") == _fast_option("DRAFT") == "draft"
    with pytest.raises(ConfigError, match="--fast=draft"):
        _fast_option("drafty")  # the message names the values
    r = CliRunner().invoke(app, ["run", "--fast=draft", "--model", "no-such-model"])
    assert isinstance(r.exception, UnknownNameError), r.output  # parsed: the run stops at the unknown model


def test_draft_has_its_own_plan_key_and_plain_fast_keeps_its_key(tmp_path):
    root = tiny_tad66k(tmp_path / "synth")
    config = RunConfig(model="nima", dataset="synth-tad66k", data_root=root, device="cpu", recipe="pinned")
    plain, fast = resolve(config), resolve(replace(config, fast=True))
    draft = resolve(replace(config, fast=True, fast_draft=True))
    assert draft.fast_draft and not fast.fast_draft
    assert "fast_draft" not in fast.identity() and "fast_draft" not in plain.identity()  # keys as before
    assert draft.identity()["fast_draft"] is True
    assert len({plain.key(), fast.key(), draft.key()}) == 3
    assert not resolve(replace(config, fast_draft=True)).fast_draft  # draft means nothing without --fast


def test_a_draft_run_records_the_draft_cache_and_its_pixel_difference(tmp_path, one_thread):
    root = tiny_tad66k(tmp_path / "synth")
    r = CliRunner().invoke(app, run_args(root, epochs=1) + ["--fast=draft"])
    assert r.exit_code == 0, r.output
    (_, rec), = [(p, r) for p, r in read_records() if r["plan"].get("fast_draft")]
    assert rec["plan"]["fast"] and rec["plan"]["fast_draft"]
    caches = rec["provenance"]["pixel_cache"]
    assert set(caches) >= {"train", "test"}
    for part in caches.values():  # measured when the cache was built (0-255 levels)
        assert part["mode"] == "draft" and isinstance(part["draft_mean_abs_diff"], float)
    diff = caches["test"]["draft_mean_abs_diff"]
    assert rec["provenance"]["evaluation"]["data_path"] == (
        "fast (cached pixels, draft: reduced-scale JPEG decoding, mean absolute difference "
        f"{diff:.3f} levels from the exact pixels)")
