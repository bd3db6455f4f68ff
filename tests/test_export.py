"""`iaabench export`: one safetensors file that says what it holds, loaded by predict, eval,
run --weights and load_scorer with the same scores as the checkpoint it came from; metadata
missing or of a newer format is one clear message."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import iaabench
from iaabench.errors import WeightsError
from iaabench.export import FORMAT, FORMAT_VERSION, export, read_metadata, write_safetensors
from iaabench.predict import load_source, predict_files
from iaabench.weights import safe_load

from conftest import require_shared
from predict_fixtures import _run_folders, run  # noqa: F401  (fixtures: a saved run, its folders)
from predict_fixtures import SAMPLE_PHOTOS


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # the record names its checkpoint under the runs folder
        mp.setenv("IAABENCH_RUNS", str(run["runs"]))
        return export(run["record_path"], tmp_path_factory.mktemp("export") / "nima.safetensors")


def _scores(path):
    with open(path, newline="") as f:
        return [(r["path"], r["score"], r["status"]) for r in csv.DictReader(f)]


def test_metadata_says_what_the_file_holds(run, exported):
    path, meta = exported
    assert read_metadata(path) == json.loads(json.dumps(meta, default=str))
    m = iaabench.create_model("nima", pretrained="none")
    assert (meta["model"], meta["family"], meta["variant"], meta["head"]) == ("nima", "nima", "nima", "dist")
    assert meta["input"] == m.input.to_dict()
    assert meta["scale"] == [1.0, 10.0] and meta["dataset"] == "synth-tad66k"
    assert meta["split"]["name"] == "official" and meta["record"] == run["record"]["run_id"]
    assert meta["metrics"] == run["record"]["metrics"]
    assert meta["test_transforms"]["resize"] == [32, 32] and meta["eval_batch_size"] == 4
    assert meta["code"]["iaabench"] == iaabench.__version__ and "commit" in meta["code"]
    assert meta["source"]["path"] == str(run["best"]) and len(meta["source"]["sha256"]) == 64
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # plain strings for any safetensors tool
        assert f.metadata()["format"] == FORMAT and f.metadata()["format_version"] == str(FORMAT_VERSION)


def test_exported_file_scores_exactly_as_its_checkpoint(run, exported, tmp_path):
    photos = require_shared(*SAMPLE_PHOTOS)
    predict_files(run["best"], [photos], tmp_path / "ck.csv", model="nima", dataset="synth-tad66k")
    s = predict_files(exported[0], [photos], tmp_path / "ex.csv")  # --model and --dataset from the file
    assert (s["model"], s["head"], s["dataset"]) == ("nima", "dist", "synth-tad66k")
    a, b = _scores(tmp_path / "ck.csv"), _scores(tmp_path / "ex.csv")
    assert a == b and len(a) == 6 and all(st == "ok" for _, _, st in a)
    scorer = iaabench.load_scorer(exported[0], device="cpu")
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p, _, _ in a]
    np.testing.assert_array_equal(scorer(ims), [float(x) for _, x, _ in a])


def test_eval_and_run_weights_load_it_as_they_load_the_checkpoint(run, exported):
    """`eval`/`run --weights` build their model with create_model(weights=...): the exported
    file gives the same parameters and predictions as the checkpoint."""
    from iaabench.data.samples import Sample
    from iaabench.evaluate import predict

    a = iaabench.create_model("nima", pretrained="none", weights=run["best"])
    b = iaabench.create_model("nima", pretrained="none", weights=exported[0])
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    photos = sorted(require_shared(*SAMPLE_PHOTOS).glob("*.jpg"))
    src = load_source(exported[0])
    samples = [Sample(p.stem, p, 5.0) for p in photos]
    pa, _ = predict(a, samples, src.spec, 4, scale_max=10.0)
    pb, _ = predict(b, samples, src.spec, 4, scale_max=10.0)
    np.testing.assert_array_equal(pa.pred, pb.pred)


@pytest.mark.slow
def test_iaabench_eval_gives_the_same_metrics_with_the_exported_file(run, exported):
    from iaabench.runner import RunConfig, execute

    out = []
    for w in (run["best"], exported[0]):
        rec, _ = execute(RunConfig(model="nima", dataset="synth-tad66k", recipe="quick", weights=w, train=False,
                                   dataset_options={"n": 50}), log=lambda *a: None)
        out.append({k: v["value"] for k, v in rec["metrics"].items()})
    assert out[0] == out[1]


def test_export_refuses_another_suffix(run, tmp_path):
    with pytest.raises(WeightsError, match="a .safetensors file"):
        export(run["best"], tmp_path / "model.pt")


def _rewrite(src, dst, header):
    state = safe_load(src)
    write_safetensors(dst, state, header)
    return dst


def test_newer_format_and_missing_metadata_are_clear_messages(exported, tmp_path):
    path, meta = exported
    newer = _rewrite(path, tmp_path / "newer.safetensors", {"format": FORMAT, "format_version": str(FORMAT_VERSION + 1),
                                                            "iaabench": json.dumps(meta)})
    for load in (lambda: load_source(newer), lambda: safe_load(newer),
                 lambda: iaabench.create_model("nima", pretrained="none", weights=newer)):
        with pytest.raises(WeightsError, match=f"format version {FORMAT_VERSION + 1}") as e:
            load()
        assert "upgrade iaabench" in e.value.hint
    bare = _rewrite(path, tmp_path / "bare.safetensors", {})
    with pytest.raises(WeightsError, match="no iaabench metadata") as e:
        load_source(bare)
    assert "--model" in e.value.hint
    assert load_source(bare, model="nima", dataset="synth-tad66k").head == "dist"  # a plain state_dict
    lacking = {k: v for k, v in meta.items() if k not in ("scale", "head")}
    partial = _rewrite(path, tmp_path / "partial.safetensors", {"format": FORMAT, "format_version": "1",
                                                                "iaabench": json.dumps(lacking)})
    with pytest.raises(WeightsError, match="lacks head, scale"):
        load_source(partial)
    broken = _rewrite(path, tmp_path / "broken.safetensors", {"format": FORMAT, "format_version": "1",
                                                              "iaabench": "{not json"})
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_source(broken)


def test_cli_export_then_predict_without_model(run, tmp_path):
    photos = require_shared(*SAMPLE_PHOTOS)
    env = {**os.environ, "IAABENCH_RESULTS": str(run["results"])}
    out = tmp_path / "m.safetensors"
    r = subprocess.run([sys.executable, "-m", "iaabench", "export", "--weights", run["record"]["run_id"],
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "nima (dist head), trained on synth-tad66k" in r.stdout
    r = subprocess.run([sys.executable, "-m", "iaabench", "predict", "--weights", str(out), str(photos),
                        "--model", "tanet", "--out", str(tmp_path / "s.csv")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode != 0 and "holds weights of model 'nima'" in r.stderr and "Traceback" not in r.stderr
