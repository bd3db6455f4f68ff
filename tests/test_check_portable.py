"""`iaabench check` across machines: the math libraries held to one instruction set in a
subprocess, tolerances derived by calibration (here on a fake runner: no training), and the
comparison that calls a difference a regression only outside its derived tolerance."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from iaabench import pinned as pn
from iaabench.check import compare, find_reference, rerun_pinned
from iaabench.errors import ConfigError, IAAError
from iaabench.protocol import Pinned, default_path, load_protocol


def _pin(**kw):
    base = dict(model="nima", dataset="synth-tad66k", seed=0, tolerance={"srcc": 0.03, "plcc": 0.02},
                recipe="pinned", options={"n": 1000},
                calibration={"sd": {"srcc": 0.01, "plcc": 0.005}, "n_runs": 8})
    base.update(kw)
    return Pinned(**base)


def _metrics(srcc, plcc):
    return {"srcc": {"value": srcc}, "plcc": {"value": plcc}}


def test_within_tolerance_passes_and_shows_the_sd_multiple():
    ok, parts = compare(_pin(), _metrics(0.50, 0.60), _metrics(0.52, 0.595))
    assert ok
    srcc = [p for p in parts if p.startswith("srcc")][0]
    assert "diff +0.0200 = 2.0 sd" in srcc and "tolerance 0.0300" in srcc and "regression" not in srcc
    assert any("diff -0.0050 = 1.0 sd" in p for p in parts)


def test_a_drop_outside_the_tolerance_is_a_regression_a_rise_is_not_called_one():
    ok, parts = compare(_pin(), _metrics(0.50, 0.60), _metrics(0.46, 0.60))
    assert not ok
    assert parts[1].startswith("regression: srcc 0.4600 vs committed 0.5000: diff -0.0400 = 4.0 sd")
    ok, parts = compare(_pin(), _metrics(0.50, 0.60), _metrics(0.50, 0.65))
    assert not ok and parts[0].startswith("outside tolerance (better") and "regression" not in parts[0]


def test_perturbations_cover_seeds_instruction_sets_and_threads():
    vs = pn.perturbations("avx2", 2, native="avx512")
    assert [v.seed for v in vs if v.isa == "avx2" and v.threads == 2] == [0, 1, 2, 3, 4]
    assert {(v.isa, v.threads) for v in vs if v.seed == 0} == {("avx2", 2), ("native", 2), ("avx512", 2), ("avx2", 1)}
    on_avx2 = pn.perturbations("avx2", 2, native="avx2")
    assert not [v for v in on_avx2 if v.isa == "avx512"] and any(v.isa == "native" for v in on_avx2)
    assert pn.perturbations("avx2", 1, native="avx2")[-1].threads == 2


def test_other_isa_differs_from_the_standard_and_is_runnable():
    assert pn.other_isa("avx2", native="avx512") == "native"
    assert pn.other_isa("avx2", native="avx2") == "avx"
    assert pn.other_isa("native", native="avx512") == "avx2"
    with pytest.raises(IAAError, match="no instruction set other than avx"):
        pn.other_isa("avx", native="avx")
    assert pn.native_isa({"avx", "avx2", "fma"}) == "avx2"
    assert pn.native_isa({"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"}) == "avx512"


def test_isa_environment_holds_all_three_libraries_and_clears_stale_holds():
    env = pn.isa_environment("avx2", 2, base={"MKL_CBWR": "AVX512", "PATH": "/bin"})
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["MKL_CBWR"] == "AVX2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["OMP_NUM_THREADS"] == "2" and env["PATH"] == "/bin"
    free = pn.isa_environment("native", 1, base={"MKL_CBWR": "AVX512"})
    assert not set(pn.ISA_VARS) & set(free)
    with pytest.raises(IAAError, match="unknown instruction set 'sse9'"):
        pn.isa_environment("sse9", 1)


@pytest.mark.skipif(pn.native_isa() not in ("avx2", "avx512"), reason="needs an x86-64 CPU with AVX2")
def test_a_child_process_sees_the_held_instruction_set():
    """The variables take effect only when set before torch is imported: the subprocess reports
    the held PyTorch kernel level and the hold in its machine description."""
    code = "import json; from iaabench.pinned import machine; print(json.dumps(machine(1)))"
    out = subprocess.run([sys.executable, "-c", code], env=pn.isa_environment("avx2", 1), capture_output=True,
                         text=True, check=True).stdout
    m = json.loads(out.strip().splitlines()[-1])
    assert m["aten_capability"] == "AVX2" and m["held"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and m["threads"] == 1
    assert m["cpu"] and m["libraries"]["torch"] and "avx2" in m["flags"]
    assert "held to" in pn.describe_machine(m) and "1 threads" in pn.describe_machine(m)


def test_derive_takes_three_sd_or_the_farthest_run():
    runs = [{"srcc": x} for x in (0.50, 0.51, 0.49, 0.50, 0.52, 0.48)]
    d = pn.derive(runs, runs[0], ["srcc"])
    sd = d["sd"]["srcc"]
    assert sd == pytest.approx(0.014142, abs=1e-6)
    assert d["tolerance"]["srcc"] == pytest.approx(0.0425)  # 3 sd = 0.04243, rounded up
    outlier = [{"srcc": 0.5}] * 5 + [{"srcc": 0.6}]
    assert pn.derive(outlier, outlier[0], ["srcc"])["tolerance"]["srcc"] >= 0.1
    with pytest.raises(IAAError, match="NaN"):
        pn.derive([{"srcc": float("nan")}, {"srcc": 0.1}], {"srcc": 0.1}, ["srcc"])


def _fake_runner(base_srcc=0.45, spread=0.004, n_test=200):
    calls = []

    def run(pin, v):
        calls.append(v)
        bump = {"native": 0.001, "avx512": -0.001}.get(v.isa, 0.0) + (0.0005 if v.threads == 1 else 0.0)
        s = base_srcc + spread * ((v.seed % 3) - 1) + bump
        return {"metrics": _metrics(s, s + 0.05), "counts": {"test": n_test},
                "provenance": {"machine": {"cpu": "Fake CPU", "isa": "avx512", "threads": v.threads}}}
    return run, calls


def test_calibrate_on_a_fake_runner_derives_tolerances_and_records_how():
    run, calls = _fake_runner()
    res = pn.calibrate(_pin(), run, "avx2", 2, native="avx512", log=lambda *a: None)
    assert not res["problems"]
    cal = res["calibration"]
    assert cal["n_runs"] == len(calls) == 8 and len(cal["perturbations"]) == 8
    assert "seed 4, ISA avx2, 2 threads" in cal["perturbations"] and "seed 0, ISA native, 2 threads" in cal["perturbations"]
    assert res["tolerance"]["srcc"] >= 3 * cal["sd"]["srcc"] and cal["machine"].startswith("Fake CPU")
    assert res["reference"] is not None and calls[0] == pn.Variant(0, "avx2", 2)


@pytest.mark.parametrize("runner_kw, problem", [
    (dict(base_srcc=0.1), "does not learn"),
    (dict(n_test=60), "60 test images"),
    (dict(spread=0.05), "over the cap 0.05"),
])
def test_calibrate_reports_a_run_that_cannot_be_pinned(runner_kw, problem):
    run, _ = _fake_runner(**runner_kw)
    res = pn.calibrate(_pin(), run, "avx2", 2, native="avx2", log=lambda *a: None)
    assert any(problem in p for p in res["problems"]), res["problems"]


def test_calibration_is_written_beside_the_entry_and_loads(tmp_path):
    path = tmp_path / "benchmark.yaml"
    text = default_path().read_text()
    start = text.index("\npinned:") + 1
    end = text.index("\ntolerances:")
    entry = "  - {model: nima, dataset: synth-tad66k, recipe: pinned, options: {n: 1000}}  # a comment\n"
    path.write_text(text[:start] + "pinned:\n" + entry * 2 + "\n" + text[end + 1:])
    n = 2
    run, _ = _fake_runner()
    res = pn.calibrate(_pin(), run, "avx2", 2, native="avx512", log=lambda *a: None)
    pn.write_pinned_section(path, {i: {"tolerance": res["tolerance"], "calibration": res["calibration"]}
                                   for i in range(n)})
    text = path.read_text()
    assert "# The iaabench protocol" in text and "tolerances:" in text  # the rest of the file is kept
    p = load_protocol(path)
    assert len(p.pinned) == n and p.pinned[0].tolerance == res["tolerance"]
    assert p.pinned[0].calibration["n_runs"] == 8


def test_the_reference_is_never_a_user_run(tmp_path):
    ref = {"model": "nima", "dataset": "synth-tad66k", "dataset_options": {"n": 1000}, "created": "2026-01-01",
           "recipe": {"name": "pinned"}, "provenance": {"seed": 0, "device": "cpu"}}
    other = dict(ref, recipe={"name": "quick"})
    assert find_reference(_pin(), [(tmp_path / "a.json", ref)])[1] is ref
    assert find_reference(_pin(), [(tmp_path / "b.json", other)]) is None
    assert find_reference(_pin(), [(tmp_path / "c.json", dict(ref, dataset_options={"n": 120}))]) is None


def test_check_without_a_committed_reference_says_how_to_make_one(tmp_path, monkeypatch):
    import iaabench.check as check

    path = tmp_path / "benchmark.yaml"
    d = yaml.safe_load(default_path().read_text())
    d["pinned"] = [{"model": "nima", "dataset": "synth-tad66k", "recipe": "pinned", "options": {"n": 1000},
                    "tolerance": {"srcc": 0.03}, "calibration": {"n_runs": 8, "sd": {"srcc": 0.01},
                                                                 "perturbations": [], "date": "x", "machine": "y"}}]
    path.write_text(yaml.safe_dump(d))
    monkeypatch.setattr(check, "load_protocol", lambda *a, **k: load_protocol(path))
    results = rerun_pinned(only=["nima"], device="cpu", log=lambda *a: None)
    assert results and not results[0][2] and "no committed reference" in results[0][1]
    assert "--calibrate" in results[0][1]
    with pytest.raises(ConfigError, match="--isa sse9"):
        rerun_pinned(only=None, device="cpu", isa="sse9")


def test_every_pinned_run_has_a_committed_reference_that_learned(monkeypatch):
    """The committed references under results/pinned/ exist for every pinned entry, learned
    (SRCC > 0.2 on >= 200 test images) and record the machine that made them."""
    from iaabench.check import pinned_root
    from iaabench.paths import PROJECT_ROOT
    from iaabench.results import read_records

    monkeypatch.setenv("IAABENCH_RESULTS", str(PROJECT_ROOT / "results"))
    refs = read_records(pinned_root())
    for pin in load_protocol().pinned:
        found = find_reference(pin, refs)
        assert found, f"no reference for {pin.name}"
        rec = found[1]
        assert rec["metrics"]["srcc"]["value"] > pn.MIN_SRCC and rec["counts"]["test"] >= pn.MIN_TEST
        m = rec["provenance"]["machine"]
        assert m["held"] and m["isa"] and m["libraries"]["torch"] and m["threads"] == load_protocol().pinned_threads
        assert os.path.relpath(found[0], PROJECT_ROOT).startswith("results/pinned/")


def test_nima_trunk_seed_fixes_the_trunk_not_the_head_and_freeze_trunk_stops_its_gradient():
    import torch

    from iaabench.api import create_model
    from iaabench.cards import load_card
    from iaabench.train import build_optimizer

    def build(run_seed, **kw):
        torch.manual_seed(run_seed)
        return create_model("nima", pretrained="none", **kw)

    a, b = build(1, trunk_seed=7, freeze_trunk=True), build(2, trunk_seed=7, freeze_trunk=True)
    assert all(torch.equal(x, y) for x, y in zip(a.trunk.state_dict().values(), b.trunk.state_dict().values()))
    assert not torch.equal(a.classifier[1].weight, b.classifier[1].weight)  # the head follows the run's seed
    c = build(1)
    assert not torch.equal(a.trunk.features[0][0].weight, c.trunk.features[0][0].weight)
    assert all(not p.requires_grad for p in a.trunk.parameters()) and all(p.requires_grad for p in c.trunk.parameters())
    bns = [m for m in a.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum is None for m in bns)  # a plain average of the training batches' statistics
    assert all(m.momentum == 0.1 for m in c.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert set(a.param_groups()) == {"backbone", "head"}
    opt = build_optimizer(a, load_card("nima").recipe("pinned"))
    assert [g["name"] for g in opt.param_groups] == ["head"]
    a.train()
    a(torch.rand(4, 3, 32, 32)).sum().backward()
    assert a.classifier[1].weight.grad is not None and a.trunk.features[0][0].weight.grad is None
