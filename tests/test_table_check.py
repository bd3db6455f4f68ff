"""The leaderboard and the regression check, on records written in a scratch results folder."""
import json

import numpy as np
import pytest
from rich.console import Console

from iaabench import table
from iaabench.check import recompute_all, run_check
from iaabench.evaluate import score_predictions
from iaabench.paths import results_dir
from iaabench.protocol import load_protocol
from iaabench.results import Predictions, write_record


def _record(model, dataset, split, seed=0, n=60):
    rng = np.random.default_rng(seed)
    true = rng.uniform(2, 8, n)
    preds = Predictions([str(i) for i in range(n)], true, true + rng.normal(0, 1, n), ["snow"] * n)
    dp = load_protocol().dataset(dataset)
    metrics, themes = score_predictions(preds, dp.metrics, scale_max=10.0, threshold=dp.threshold, seed=seed)
    rec = {"created": f"2026-01-01T00:00:0{seed}Z", "model": model, "family": "x", "dataset": dataset,
           "scale": [1, 10], "split": {"name": split}, "metrics": metrics, "per_theme": themes,
           "counts": {"evaluated": n}, "provenance": {"seed": seed, "device": "cpu"}}
    return write_record(rec, preds)


def test_reported_numbers_sit_beside_reproduced_ones_never_mixed_across_splits():
    _record("tanet", "tad66k", "official")
    _record("nima", "tad66k", "some-other-split")
    _, _, cs = table.cells()
    by = {(c.model, c.dataset, c.metric): c for c in cs.values()}
    same = by[("tanet", "tad66k", "srcc")]
    assert same.reported == pytest.approx(0.513) and same.reported_split == "official"
    assert same.diff == pytest.approx(same.value - 0.513)
    assert same.status({"srcc": 0.01}) in ("reproduced", "not reproduced")
    other = by[("nima", "tad66k", "srcc")]
    assert other.diff is None and other.status({"srcc": 0.01}) == "other split"
    md = table.render("md")
    assert "(official split)" in table.leaderboard_text() and "### tad66k" in md
    for fmt in ("csv", "latex", "html"):
        assert "tanet" in table.render(fmt)
    assert (results_dir() / "leaderboard.md").name in table.write_leaderboard()


def test_check_recomputes_and_catches_a_tampered_record():
    path = _record("tanet", "tad66k", "official")
    assert all(ok for _, _, ok in recompute_all(1e-6))
    rec = json.loads(path.read_text())
    rec["metrics"]["srcc"]["value"] += 0.01
    path.write_text(json.dumps(rec))
    bad = [msg for _, msg, ok in recompute_all(1e-6) if not ok]
    assert bad and "srcc: stored" in bad[0]
    assert run_check(Console(file=open("/dev/null", "w")), rerun=False) is False


def test_committed_records_recompute_and_the_main_job_learned(monkeypatch):
    """Every record committed in results/ (the pinned references in results/pinned/ included)
    recomputes from its predictions, and the NIMA run of the README's main job learned: the lower
    end of its SRCC's 95% CI is above 0, where a constant or random predictor sits."""
    from iaabench.paths import PROJECT_ROOT
    from iaabench.results import read_records

    monkeypatch.setenv("IAABENCH_RESULTS", str(PROJECT_ROOT / "results"))
    assert all(ok for _, _, ok in recompute_all(load_protocol().recompute_tolerance))
    main = [r for _, r in read_records() if r["model"] == "nima" and r["dataset"] == "synth-tad66k"
            and not r.get("dataset_options") and r["provenance"]["device"] == "cpu"]
    assert main, "the main-job record is committed"
    assert max(main, key=lambda r: r["created"])["metrics"]["srcc"]["ci95"][0] > 0.1


def test_plots_are_drawn(tmp_path):
    from iaabench.plots import plot_all

    _record("tanet", "synth-tad66k", "official")
    written = plot_all(tmp_path)
    assert any(p.name.startswith("leaderboard-") for p in written)
    assert any(p.name.startswith("scatter-") for p in written)
    assert all(p.stat().st_size > 1000 for p in written)


def test_check_catches_a_stale_leaderboard():
    from iaabench.check import generated_files_current

    _record("tanet", "tad66k", "official")
    board = [r for r in generated_files_current() if r[0].endswith("leaderboard.md")]
    assert board and not board[0][2] and "run `iaabench table`" in board[0][1]
    table.write_leaderboard()
    assert all(ok for where, _, ok in generated_files_current() if where.endswith("leaderboard.md"))
    _record("nima", "tad66k", "official", seed=1)  # a new record makes the committed page stale again
    assert not [ok for where, _, ok in generated_files_current() if where.endswith("leaderboard.md")][0]
