"""Parity with the authors' code (iaabench/parity.py): the fill recipe, the runner's reports,
and TANet's recorded outputs.

The TANet cases used here are copied under tests/data (batch-4 cases of both released heads),
so the check runs without ../shared; the full shared file is checked when present (slow).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import shared_dir
from iaabench import parity

CASES = Path(__file__).parent / "data" / "parity_cases_tanet.json"


def _shared_file(name: str) -> Path:
    base = shared_dir()
    if base is None or not (base / "reference" / name).is_file():
        pytest.skip(f"shared reference/{name} not found: set IAABENCH_SHARED to the shared folder")
    return base / "reference" / name


@pytest.fixture(scope="module")
def tanet_results() -> list[dict]:
    return parity.run_parity(CASES)


def test_fill_and_inputs_reproduce_the_shared_recipe():
    spec = importlib.util.spec_from_file_location("shared_parity", _shared_file("parity.py"))
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    for name, shape in [("a.conv.weight", [8, 3, 3, 3]), ("a.bn.running_var", [8]), ("a.bn.running_mean", [8]),
                        ("a.fc.bias", [5]), ("a.bn.weight", [8]), ("a.prelu.weight", [1]),
                        ("a.bn.num_batches_tracked", []), ("head.2.weight", [10, 30])]:
        mine, theirs = parity.fill(name, shape), ref.fill(name, shape)
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), name
    assert torch.equal(parity.make_inputs(3, 224, 0.5), ref.make_inputs(3, 224, 0.5))


def test_tanet_matches_the_authors_code(tanet_results):
    assert [(r["entry"], r["status"]) for r in tanet_results] == [("tanet_tad66k", "pass"), ("tanet_ava", "pass")]
    for r in tanet_results:
        assert r["passed"] is True and r["output_diff"] <= r["atol"] == 1e-4
        assert set(r["branch_diffs"]) == {"aesthetic", "theme", "rgb_attention", "places365_logits_first8"}
        for branch, diff in r["branch_diffs"].items():
            assert diff is not None and diff <= 1e-4, (r["entry"], branch, diff)


def test_format_parity_shows_every_case(tanet_results):
    text = parity.format_parity(tanet_results)
    assert "tanet_tad66k" in text and "tanet/dist" in text and "2 pass" in text


def test_skips_unknown_and_unregistered_models_and_reports_layout_differences(tmp_path, monkeypatch):
    shapes = json.loads(CASES.read_text())["tanet_tad66k"]["state_dict_shapes"]
    broken = dict(shapes)
    broken["head.2.weight"] = [2, 30]
    broken["hypernet.renamed.weight"] = broken.pop("hypernet.last_out_w.weight")
    cases = {"_note": "not an entry", "someone_elses_model": {"atol": 1e-4, "cases": []},
             "ghost": {"atol": 1e-4, "cases": []},
             "tanet_tad66k": {"atol": 1e-4, "state_dict_shapes": broken, "cases": []}}
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    monkeypatch.setitem(parity.ENTRIES, "ghost", ("no-such-model", "score"))
    results = {r["entry"]: r for r in parity.run_parity(path)}
    assert set(results) == {"someone_elses_model", "ghost", "tanet_tad66k"}
    assert results["someone_elses_model"]["status"] == "skipped"
    assert results["ghost"]["reason"] == "skipped: model not registered" and results["ghost"]["passed"] is None
    bad = results["tanet_tad66k"]
    assert bad["status"] == "fail" and bad["passed"] is False
    diffs = "\n".join(bad["shape_differences"])
    assert "head.2.weight: reference (2, 30), model (1, 30)" in diffs
    assert "missing in model: hypernet.renamed.weight" in diffs
    assert "not in reference: hypernet.last_out_w.weight" in diffs
    assert "fail" in parity.format_parity(list(results.values()))
    only = parity.run_parity(path, only=["ghost"])
    assert [r["entry"] for r in only] == ["ghost"]


@pytest.mark.slow
def test_every_shared_tanet_case_passes():
    results = parity.run_parity(_shared_file("parity_cases.json"), only=["tanet_tad66k", "tanet_ava"])
    assert results and all(r["passed"] is not False for r in results), parity.format_parity(results)
    assert {r["entry"] for r in results if r["passed"]} == {"tanet_tad66k", "tanet_ava"}
