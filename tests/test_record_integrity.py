"""Record integrity (issue 21): strict JSON with undefined values explained, digests that
`check` verifies field by field, one bad record file named without stopping the others, older
schemas read in memory, and the table's answers when it cannot trust or write something."""
import csv as csv_module
import io
import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from iaabench import table
from iaabench.check import recompute_all
from iaabench.cli import app
from iaabench.errors import IAAError
from iaabench.evaluate import score_predictions
from iaabench.integrity import SCHEMA, canonical, digest_problems
from iaabench.paths import results_dir
from iaabench.protocol import load_protocol
from iaabench.results import Predictions, amend_record, frame, read_record, write_record

N = 60
TRUE = np.random.default_rng(5).uniform(2, 8, N)


def record(model="tanet", pred=None, seed=0, **extra):
    p = TRUE + np.random.default_rng(seed).normal(0, 1, N) if pred is None else np.asarray(pred, float)
    preds = Predictions([f"img{i}" for i in range(N)], TRUE.copy(), p, ["sky"] * (N // 2) + ["sea"] * (N - N // 2))
    dp = load_protocol().dataset("tad66k")
    metrics, themes = score_predictions(preds, dp.metrics, scale_max=10.0, threshold=dp.threshold,
                                        seed=seed)
    rec = {"created": f"2026-01-01T00:00:{seed:02d}Z", "model": model, "family": "x", "head": "score",
           "dataset": "tad66k", "scale": [1, 10], "split": {"name": "official"}, "recipe": {"name": "r"},
           "metrics": metrics, "per_theme": themes, "counts": {"test": N, "evaluated": N, "skipped": 0},
           "skipped": [], "training": {"history": [{"epoch": 1, "train_loss": 0.5}]},
           "provenance": {"seed": seed, "device": "cpu", "dirty": False, "commit": "abc"}, **extra}
    return write_record(rec, preds)


def edit(path, change):
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec, indent=1))


def results_of(path):
    return {where: (msg, ok) for where, msg, ok in recompute_all(1e-9)}[str(path)]


def no_constants(token):
    raise AssertionError(f"non-JSON token {token} in a record")


def test_records_are_strict_json_and_undefined_values_are_null_with_their_reason():
    path = record(model="constant", pred=np.full(N, 5.5),
                  training={"history": [{"epoch": 1, "train_loss": float("inf"), "val_srcc": float("nan")}]})
    text = path.read_text()
    rec = json.loads(text, parse_constant=no_constants)
    assert "NaN" not in text and "Infinity" not in text
    srcc = rec["metrics"]["srcc"]
    assert srcc["value"] is None and rec["undefined"]["/metrics/srcc/value"] == "undefined: constant predictions"
    assert rec["metrics"]["plcc"]["value"] is None and rec["metrics"]["mse_unit"]["value"] > 0
    assert rec["per_theme"]["sky"]["srcc"] is None and "constant" in rec["undefined"]["/per_theme/sky/srcc"]
    assert rec["training"]["history"][0]["train_loss"] is None
    assert rec["undefined"]["/training/history/0/train_loss"] == "infinite"
    assert rec["undefined"]["/training/history/0/val_srcc"] == "not a number"
    # the table reads the shape: undefined in words, never 0 or NaN in a number column
    c = next(r for r in table.cell_frame()[0].to_dict("records") if r["model"] == "constant" and r["metric"] == "srcc")
    assert pd.isna(c["mean"]) and "undefined: constant predictions" in c["note"]
    line = next(x for x in table.render("md").splitlines() if x.startswith("| constant |"))
    assert "undefined" in line and "nan" not in line.lower() and "| 0.000" not in line
    msg, ok = results_of(path)
    assert ok and "digests match" in msg


def test_an_older_record_with_nan_tokens_is_migrated_in_memory_and_unverified():
    path = record(model="constant", pred=np.full(N, 5.5))
    rec = json.loads(path.read_text())
    rec["schema"] = 1
    rec["metrics"]["srcc"]["value"] = float("nan")
    for key in ("digest", "predictions_sha256", "undefined"):
        del rec[key]
    path.write_text(json.dumps(rec, indent=1))  # Python writes NaN tokens, as schema 1 allowed
    assert "NaN" in path.read_text()
    got = read_record(path)
    assert got["metrics"]["srcc"]["value"] is None and got["undefined"]["/metrics/srcc/value"].startswith("undefined")
    assert "NaN" in path.read_text(), "never rewritten on disk"
    row = frame().query("metric == 'srcc'").iloc[0]
    assert not row["verified"] and row["unverified"] == "no digest, older schema 1" and "constant" in row["note"]
    msg, ok = results_of(path)
    assert ok and msg.startswith("warning: unverified (no digest, older schema 1)")
    assert "unverified: no digest, older schema 1" in table.render("md")


def test_another_schema_is_refused_naming_the_file_and_the_schema():
    path = record()
    edit(path, lambda r: r.update(schema=7))
    msg, ok = results_of(path)
    assert not ok and "record schema 7" in msg and "refused" in msg
    assert any(str(path) in p and "schema 7" in p for p in frame().attrs["problems"])


@pytest.mark.parametrize("change, named", [
    (lambda r: r["counts"].update(test=N + 5), "counts/test changed"),
    (lambda r: r["recipe"].update(name="other"), "recipe/name changed"),
    (lambda r: r["provenance"].update(device="cuda"), "provenance/device changed"),
    (lambda r: r["provenance"].update(commit="f00"), "provenance/commit changed"),
    (lambda r: r["skipped"].append({"where": "x.jpg", "reason": "missing", "stage": "train"}), "skipped changed"),
    (lambda r: r["metrics"].pop("srcc"), "metrics/srcc removed"),
    (lambda r: r.update(extra=1), "extra added"),
])
def test_check_names_any_field_edited_after_the_record_was_written(change, named):
    good = record(model="nima")
    path = record()
    edit(path, change)
    msg, ok = results_of(path)
    assert not ok and "edited after it was written" in msg and named in msg, msg
    assert results_of(good)[1]
    # the table keeps the cell but never trusts or ranks it
    cells, _ = table.cell_frame()
    mine = cells[(cells["model"] == "tanet") & (cells["mode"] != "not run")]
    assert len(mine) and not mine["verified"].any() and (mine["mark"] == "").all()
    assert named in " ".join(mine["unverified"])


def test_the_digest_is_of_the_canonical_content():
    rec = read_record(record())
    assert digest_problems(rec) == []
    assert rec["digest"]["sha256"] == __import__("hashlib").sha256(
        canonical({k: v for k, v in rec.items() if k != "digest"})).hexdigest()
    assert digest_problems({**rec, "model": "nima"}) and rec["schema"] == SCHEMA


def test_changed_or_missing_predictions_are_reported_for_that_record():
    path = record()
    csv = path.parent / json.loads(path.read_text())["predictions"]
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",9.0"
    csv.write_text("\n".join(lines) + "\n")
    msg, ok = results_of(path)
    assert not ok and "changed after the record was written" in msg and "srcc: stored" in msg
    csv.unlink()
    msg, ok = results_of(path)
    assert not ok and f"predictions file {csv.name} missing" in msg
    row = frame().iloc[0]
    assert not row["verified"] and "missing" in row["unverified"]


@pytest.mark.parametrize("damage, named", [
    (lambda p: edit(p, lambda r: r["metrics"]["srcc"].update(value="0.9")), "metric srcc: value is a str"),
    (lambda p: edit(p, lambda r: r["metrics"].update(plcc=[0.4])), "metric plcc is a list"),
    (lambda p: edit(p, lambda r: r["counts"].update(evaluated="60")), "counts/evaluated is a str"),
    (lambda p: p.write_text(p.read_text()[:200]), "unreadable result record"),
    (lambda p: p.write_text("[1, 2]"), "not a result record"),
])
def test_a_malformed_record_is_named_and_the_others_are_still_checked_and_tabled(damage, named):
    good = record(model="nima")
    bad = record()
    damage(bad)
    out = {w: (m, ok) for w, m, ok in recompute_all(1e-9)}
    assert not out[str(bad)][1] and named in out[str(bad)][0], out[str(bad)]
    assert out[str(good)][1]
    r = CliRunner().invoke(app, ["table", "--format", "csv"])
    assert r.exit_code == 0 and r.exception is None, r.output
    assert bad.name in r.output and named in r.output
    assert "nima,tad66k,official" in r.output and "tanet,tad66k,official,r" not in r.output
    assert "1 unreadable or refused record file(s)" in table.leaderboard_text()


def test_check_command_reports_every_bad_record_and_fails():
    for model in ("nima", "mlsp"):
        path = record(model=model)
        edit(path, lambda r: r["counts"].update(train=1))
    r = CliRunner().invoke(app, ["check", "--no-rerun"])
    assert r.exit_code == 1
    assert r.output.count("counts/train") == 2  # one line per record (the table may wrap the message)


def test_amending_a_record_refuses_to_launder_an_edit():
    path = record()
    rec = amend_record(path, lambda r: r["provenance"].update(machine={"cpu": "x"}))
    assert rec["provenance"]["machine"] == {"cpu": "x"} and results_of(path)[1]
    edit(path, lambda r: r["counts"].update(test=1))
    with pytest.raises(IAAError, match="not amended.*counts/test changed"):
        amend_record(path, lambda r: None)


def test_records_get_the_users_umask_not_0600():
    old = os.umask(0o022)
    try:
        path = record()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (path.parent / json.loads(path.read_text())["predictions"]).stat().st_mode & 0o777 == 0o644


def test_dirty_records_are_left_out_and_counted_unless_asked():
    record()
    record(model="nima", provenance={"seed": 0, "device": "cpu", "dirty": True})
    r = CliRunner().invoke(app, ["table", "--format", "csv"])
    assert r.exit_code == 0 and "nima,tad66k,official,r" not in r.output
    assert "Left out: 1 record(s) made from uncommitted code (`iaabench table --include-dirty` shows them)." in r.output
    r = CliRunner().invoke(app, ["table", "--format", "csv", "--include-dirty"])
    assert "nima,tad66k,official,r" in r.output and "Left out" not in r.output


def test_table_prints_and_names_the_path_and_error_when_it_cannot_write():
    record()
    board = results_dir() / "leaderboard.md"
    board.mkdir()
    r = CliRunner().invoke(app, ["table", "--format", "md"])
    assert r.exit_code == 0 and "| tanet | official | r |" in r.output
    assert re.search(rf"could not write {re.escape(str(board))}: Is a directory", r.output.replace("\n", "")), r.output


def test_skipped_test_images_show_in_the_notes_and_the_csv():
    path = record()
    csv = path.parent / json.loads(path.read_text())["predictions"]
    preds = Predictions.from_csv(csv)
    keep = slice(0, N - 2)
    lost = Predictions(preds.image_id[keep], preds.true[keep], preds.pred[keep], preds.theme[keep])
    dp = load_protocol().dataset("tad66k")
    metrics, _ = score_predictions(lost, dp.metrics, scale_max=10.0, threshold=dp.threshold)
    write_record({"created": "2026-01-02T00:00:00Z", "model": "nima", "family": "x", "head": "score",
                  "dataset": "tad66k", "scale": [1, 10], "split": {"name": "official"}, "recipe": {"name": "r"},
                  "metrics": metrics, "counts": {"test": N, "evaluated": N - 2, "skipped": 2},
                  "skipped": [{"where": f"img{i}.jpg", "reason": "truncated", "stage": "test"} for i in (58, 59)],
                  "provenance": {"seed": 0, "device": "cpu", "dirty": False}}, lost)
    assert "2 test images skipped" in table.render("md")
    rows = [r for r in csv_module.DictReader(io.StringIO(table.render("csv"))) if r["model"] == "nima"]
    assert rows and all(r["skipped_test"] == "2" for r in rows)
    assert all(ok for _, _, ok in recompute_all(1e-9))


def test_dirty_means_uncommitted_code_not_docs_or_results(tmp_path, monkeypatch):
    """`provenance.dirty`: an edited or new file among the code paths of the checkout (iaabench/,
    baselines/, benchmark.yaml, pyproject.toml), tracked or not; README, tests and results are not code."""
    import subprocess

    from iaabench import results

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    for name in ("iaabench/x.py", "README.md", "benchmark.yaml", "results/a/b/r.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    monkeypatch.setattr(results, "PROJECT_ROOT", tmp_path)
    assert results.git_state()["dirty"] is False
    (tmp_path / "README.md").write_text("2\n")
    (tmp_path / "results" / "a" / "b" / "new.json").write_text("{}")
    assert results.git_state()["dirty"] is False
    (tmp_path / "iaabench" / "new_model.py").write_text("")  # a new, uncommitted module changes the code
    state = results.git_state()
    assert state["dirty"] is True and state["dirty_paths"] == ["iaabench/new_model.py"]
    (tmp_path / "iaabench" / "new_model.py").unlink()
    (tmp_path / "benchmark.yaml").write_text("2\n")
    assert results.git_state()["dirty_paths"] == ["benchmark.yaml"]


def test_table_dash_o_to_an_unwritable_path_is_one_message_naming_it(tmp_path):
    record()
    out = tmp_path / "no-such-folder" / "board.csv"
    r = CliRunner().invoke(app, ["table", "--format", "csv", "-o", str(out)])
    assert isinstance(r.exception, IAAError) and not isinstance(r.exception, OSError)  # cli.main prints it: no traceback
    assert r.exception.message == f"-o {out}: could not write the table (No such file or directory)"
