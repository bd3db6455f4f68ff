"""The smoke test of the synthetic section: each registered model's quick run must learn."""
import math

import pandas as pd

import iaabench.smoke as smoke


def _frame(rows):
    return pd.DataFrame([{"model": m, "dataset": "synth-tad66k", "mode": "trained", "recipe": r, "metric": "srcc",
                          "value": v, "seed": s} for m, r, v, s in rows])


def test_a_model_below_the_bar_fails_and_one_above_passes(monkeypatch):
    monkeypatch.setattr(smoke, "_is_current", lambda model, row: True)
    monkeypatch.setattr(smoke, "excused", lambda model: "its quick run is hours on a CPU" if model == "eat" else None)
    quick = smoke.smoke_recipe("nima")
    status = {m: (msg, ok) for m, msg, ok in smoke.smoke_status(_frame([
        ("nima", quick, 0.31, 0), ("nima", quick, 0.35, 1),
        ("tanet", smoke.smoke_recipe("tanet"), 0.12, 0),
        ("hyperiqa", smoke.smoke_recipe("hyperiqa"), math.nan, 0),
        ("mlsp", "some-other-recipe", 0.9, 0), ("constant", smoke.smoke_recipe("constant"), math.nan, 0)]))}
    assert status["nima"][1] is True and "0.310" in status["nima"][0]  # the lowest seed counts
    assert status["tanet"][1] is False
    assert status["hyperiqa"][1] is False  # undefined SRCC (constant predictions) does not pass
    assert status["mlsp"][1] is None and "not run" in status["mlsp"][0]  # only the card's smoke recipe counts
    assert status["eat"] == ("excused by its card: its quick run is hours on a CPU", None)
    assert status["constant"][1] is None and "by design" in status["constant"][0]


def test_a_record_of_an_edited_recipe_is_stale_not_counted(tmp_path):
    import json

    from iaabench.plan import resolve

    rows = []
    for name, key in (("old", "0123456789abcdef"), ("new", resolve(model="nima", dataset="synth-tad66k", seed=0).key())):
        (tmp_path / f"{name}.json").write_text(json.dumps({"plan_key": key}))
        rows.append({"model": "nima", "dataset": "synth-tad66k", "mode": "trained", "recipe": smoke.smoke_recipe("nima"),
                     "metric": "srcc", "value": 0.05 if name == "old" else 0.3, "seed": 0, "path": str(tmp_path / f"{name}.json")})
    status = {m: (msg, ok) for m, msg, ok in smoke.smoke_status(pd.DataFrame(rows))}
    assert status["nima"][1] is True and "0.300" in status["nima"][0]  # the old recipe's 0.05 is not counted
    status = {m: (msg, ok) for m, msg, ok in smoke.smoke_status(pd.DataFrame(rows[:1]))}
    assert status["nima"][1] is None and status["nima"][0].startswith("stale: its 1 record(s)")


def test_every_registered_model_is_listed_once():
    from iaabench.registry import list_models

    names = [m for m, _, _ in smoke.smoke_status(_frame([]))]
    assert names == list_models()


def test_an_excused_model_is_left_out_of_the_synthetic_section(monkeypatch):
    from test_table import record

    from iaabench.table import cell_frame

    record(model="nima", dataset="synth-tad66k", recipe=smoke.smoke_recipe("nima"))
    record(model="musiq", dataset="synth-tad66k", recipe=smoke.smoke_recipe("musiq"))
    record(model="musiq", dataset="tad66k")  # a real dataset's run stays, excused or not
    monkeypatch.setattr(smoke, "excused", lambda m: "cannot learn in a CPU smoke run" if m == "musiq" else None)
    cells, _ = cell_frame()
    ran = cells[cells["mode"] == "trained"]
    assert set(zip(ran["model"], ran["dataset"])) == {("nima", "synth-tad66k"), ("musiq", "tad66k")}
