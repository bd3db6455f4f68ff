"""The leaderboard of record: cells keyed by what makes a number comparable, seeds aggregated,
reported numbers compared only on the same split, bad records named, marks from the paired
bootstrap. Records are written with the real writer into the test's scratch results folder."""
import csv
import io
import json

import numpy as np
import pytest

from iaabench import table
from iaabench.evaluate import score_predictions
from iaabench.paths import results_dir
from iaabench.protocol import load_protocol
from iaabench.results import Predictions, frame, write_record

N = 80
TRUE = np.random.default_rng(123).uniform(2, 8, N)


def record(model="tanet", dataset="tad66k", split="official", seed=0, noise=1.0, recipe="r", head="score",
           training=True, pred=None, noise_seed=None, **extra):
    """A record of `model` whose predictions are the shared true scores plus noise (seeded)."""
    rng = np.random.default_rng(1000 + (seed if noise_seed is None else noise_seed))
    p = TRUE + rng.normal(0, noise, N) if pred is None else np.asarray(pred, float)
    preds = Predictions([f"img{i}" for i in range(N)], TRUE.copy(), p, ["sky"] * N)
    dp = load_protocol().dataset(dataset)
    metrics, themes = score_predictions(preds, dp.metrics, scale_max=10.0, threshold=dp.threshold, n_boot=200,
                                        seed=seed)
    rec = {"created": f"2026-01-01T00:00:{seed:02d}Z", "model": model, "family": "x", "head": head,
           "dataset": dataset, "scale": [1, 10], "split": {"name": split, "validation": {"seed": 7}},
           "recipe": {"name": recipe}, "metrics": metrics, "per_theme": themes,
           "counts": {"test": N, "evaluated": N}, "skipped": [],
           "training": {"history": []} if training else None,
           "provenance": {"seed": seed, "device": "cpu", "dirty": False}, **extra}
    return write_record(rec, preds)


def rows(fmt="csv", **kw):
    return list(csv.DictReader(io.StringIO(table.render(fmt, **kw))))


def cell(rs, **want):
    found = [r for r in rs if all(r[k] == v for k, v in want.items())]
    assert len(found) == 1, (want, found)
    return found[0]


def test_csv_columns_come_first_in_the_issues_order():
    record()
    head = table.render("csv").splitlines()[0].split(",")
    assert head[:15] == ["model", "dataset", "split", "recipe", "head", "mode", "metric", "mean", "sd", "n_seeds",
                         "ci_low", "ci_high", "reported", "reported_split", "comparable"]
    assert {"diff", "reported_source", "selection", "overlap"} <= set(head[15:])


def test_seeds_aggregate_into_one_cell_with_mean_sd_and_the_mean_of_the_bounds():
    paths = [record(seed=s) for s in (0, 1, 2)]
    recs = [json.loads(p.read_text()) for p in paths]
    c = cell(rows(), model="tanet", dataset="tad66k", metric="srcc", mode="trained")
    vals = [r["metrics"]["srcc"]["value"] for r in recs]
    assert int(c["n_seeds"]) == 3 and c["split"] == "official" and c["recipe"] == "r"
    assert float(c["mean"]) == pytest.approx(np.mean(vals))
    assert float(c["sd"]) == pytest.approx(np.std(vals, ddof=1))
    assert float(c["ci_low"]) == pytest.approx(np.mean([r["metrics"]["srcc"]["ci95"][0] for r in recs]))
    assert float(c["ci_high"]) == pytest.approx(np.mean([r["metrics"]["srcc"]["ci95"][1] for r in recs]))


def test_records_with_different_keys_never_merge():
    record(recipe="a")
    record(recipe="b")
    record(recipe="a", head="dist")
    record(recipe="a", training=False)  # an evaluation of weights, not a training run
    record(split="other")
    rs = [r for r in rows() if r["model"] == "tanet" and r["metric"] == "srcc" and r["dataset"] == "tad66k"]
    keys = {(r["split"], r["recipe"], r["head"], r["mode"]) for r in rs}
    assert keys == {("official", "a", "score", "trained"), ("official", "b", "score", "trained"),
                    ("official", "a", "dist", "trained"), ("official", "a", "score", "eval-only"),
                    ("other", "r", "score", "trained")}
    assert all(r["n_seeds"] == "1" for r in rs)
    ev = cell(rs, mode="eval-only")
    assert ev["trained_on"] == "none (untrained weights)"


def test_reported_numbers_compare_only_on_the_same_split():
    record()  # tanet on tad66k/official, where the card reports SRCC .513
    record(model="nima", split="some-other-split")
    rs = rows()
    same = cell(rs, model="tanet", dataset="tad66k", metric="srcc")
    assert same["comparable"] == "yes" and float(same["reported"]) == pytest.approx(0.513)
    assert float(same["diff"]) == pytest.approx(float(same["mean"]) - 0.513)
    assert same["reproduced"] in ("yes", "no")
    other = cell(rs, model="nima", dataset="tad66k", metric="srcc", mode="trained")
    assert other["comparable"] == "no" and other["diff"] == "" and other["reported_split"] == "official"
    assert "not comparable: reported on split official" in other["note"]
    md = table.render("md")
    assert "0.390 (split official, not comparable)" in md


def test_test_selected_reported_numbers_are_footnoted(monkeypatch):
    real = table.reported_numbers

    def with_selection(model):
        return [{**r, "selection": "test"} if model == "tanet" else r for r in real(model)]

    monkeypatch.setattr(table, "reported_numbers", with_selection)
    record()
    c = cell(rows(), model="tanet", dataset="tad66k", metric="srcc")
    assert c["selection"] == "test"
    text = table.leaderboard_text()
    assert "0.513 †" in text and "† Reported from a checkpoint selected on the test set" in text


def test_older_records_get_derived_defaults_and_bad_files_are_named_not_fatal():
    record(training=False)
    record(seed=1)
    folder = results_dir() / "tad66k" / "tanet"
    other = json.loads(next(folder.glob("*.json")).read_text())
    other["schema"] = 99
    (folder / "20260101-000000-other.json").write_text(json.dumps(other))
    (folder / "20260101-000000-trunc.json").write_text('{"schema": 1, "model": "tan')
    del other["provenance"]["seed"]
    other["schema"] = 1
    (folder / "20260101-000000-noseed.json").write_text(json.dumps(other))
    df = frame()
    problems = df.attrs["problems"]
    assert any("trunc.json" in p and "unreadable" in p for p in problems)
    assert any("other.json" in p and "schema 99" in p for p in problems)
    assert any("noseed.json" in p and "no seed" in p for p in problems)
    assert set(df["mode"]) == {"eval-only", "trained"}
    assert set(df["split_seed"]) == {7}  # from split.validation.seed
    for col in ("model", "dataset", "split", "recipe", "head", "mode", "seed", "metric", "value", "ci_low",
                "ci_high", "run_id"):
        assert col in df.columns
    assert "tanet" in table.render("md")
    assert "3 unreadable or refused record file(s)" in table.leaderboard_text()


def test_a_record_without_its_predictions_is_shown_unverified_and_never_ranked():
    record(noise=0.2)
    p = record(model="nima", noise=0.3)
    (p.parent / json.loads(p.read_text())["predictions"]).unlink()
    c = cell(rows(), model="nima", dataset="tad66k", metric="srcc", mode="trained")
    assert c["verified"] == "False" and c["mark"] == ""
    assert cell(rows(), model="tanet", dataset="tad66k", metric="srcc")["mark"] == "best"
    assert "unverified: predictions file " in table.render("md") and " missing" in table.render("md")


def test_dirty_quick_bench_and_pinned_records_stay_out_of_the_leaderboard():
    record()
    p = record(model="nima")
    rec = json.loads(p.read_text())
    rec["provenance"]["dirty"] = True
    p.write_text(json.dumps(rec))
    record(model="mlsp", dataset="synth-tad66k", dataset_options={"n": 120})
    for where in ("bench", "pinned"):
        folder = results_dir() / where / "synth-tad66k"
        folder.mkdir(parents=True)
        (folder / "x.json").write_text(json.dumps(rec))
    models = {r["model"] for r in rows() if r["mode"] != "not run"}
    assert models == {"tanet"}
    assert "nima" in {r["model"] for r in rows(include_dirty=True) if r["mode"] != "not run"}
    text = table.leaderboard_text()
    assert "1 quick run(s) on resized synthetic datasets" in text and "1 record(s) made from uncommitted code" in text


def test_synthetic_runs_form_a_labelled_smoke_test_section():
    record(dataset="synth-tad66k")
    record()
    md = table.render("md")
    assert md.index("## Results") < md.index("### tad66k") < md.index("## Smoke test") < md.index("### synth-tad66k")
    assert "not a result" in md


def test_undefined_metrics_are_words_never_zero_or_nan():
    record(model="nima", pred=np.full(N, 5.5))  # constant predictions
    c = cell(rows(), model="nima", dataset="tad66k", metric="srcc", mode="trained")
    assert c["mean"] == "" and c["sd"] == "" and "undefined: constant predictions" in c["note"]
    assert float(cell(rows(), model="nima", dataset="tad66k", metric="mse_unit", mode="trained")["mean"]) > 0
    md = table.render("md")
    line = next(x for x in md.splitlines() if x.startswith("| nima | official | r"))
    assert "undefined" in line and "nan" not in line.lower()


def test_best_and_not_significantly_worse_marks():
    record(model="tanet", noise=0.3)
    record(model="nima", noise=0.3, noise_seed=5)  # as good as tanet: indistinguishable on 80 images
    record(model="mlsp", noise=3.0)  # far worse
    rs = [r for r in rows() if r["dataset"] == "tad66k" and r["metric"] == "srcc" and r["mode"] != "not run"]
    marks = {r["model"]: r["mark"] for r in rs}
    best = max(rs, key=lambda r: float(r["mean"]))["model"]
    assert marks[best] == "best"
    assert marks["mlsp"] == ""
    assert marks[({"tanet", "nima"} - {best}).pop()] == table.TIED


def test_skipped_test_images_are_flagged_with_their_number():
    record()
    p = record(model="nima")
    rec = json.loads(p.read_text())
    rec["skipped"] = [{"where": "a.jpg", "reason": "truncated", "stage": "test"},
                      {"where": "b.jpg", "reason": "missing", "stage": "train"}]
    p.write_text(json.dumps(rec))
    assert cell(rows(), model="nima", dataset="tad66k", metric="srcc", mode="trained")["skipped_test"] == "1"
    assert "1 test images skipped" in table.render("md")


def test_every_format_renders_from_the_same_cells():
    record()
    for fmt in ("md", "latex", "html", "csv"):
        assert "tanet" in table.render(fmt)
    with pytest.raises(Exception, match="--format"):
        table.render("xlsx")


def test_table_prints_even_when_the_leaderboard_cannot_be_written(monkeypatch):
    from typer.testing import CliRunner

    from iaabench.cli import app

    record()
    (results_dir() / "leaderboard.md").mkdir()  # a folder where the page should go: the write fails
    r = CliRunner().invoke(app, ["table", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert "tanet,tad66k,official" in r.output and "could not write" in r.output


def test_the_readme_example_is_what_the_code_prints():
    from iaabench.paths import PROJECT_ROOT

    example = table.example_text(PROJECT_ROOT / "results")
    assert example in (PROJECT_ROOT / "README.md").read_text(encoding="utf-8"), \
        "README's 'How to read a cell' is stale: paste iaabench.table.example_text() into it"


def test_committed_results_render():
    from iaabench.paths import PROJECT_ROOT

    root = PROJECT_ROOT / "results"
    cells, info = table.cell_frame(root, marks=False)
    assert not info["problems"]
    assert table.render("md", cells=cells) and table.render("csv", cells=cells).startswith("model,dataset,split")


def test_the_table_of_an_empty_results_folder_lists_the_reported_numbers(tmp_path):
    """A fresh machine has no records: every reported number is a "not run" row, nothing breaks."""
    from iaabench.table import cell_frame

    cells, info = cell_frame(root=tmp_path)
    assert len(cells) and set(cells["mode"]) == {"not run"} and info["unverified"] == 0 and info["dirty"] == 0
