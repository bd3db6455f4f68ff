"""The `constant` baseline: fitted on the training samples, predicts their mean (and mean vote
histogram), and its correlations are undefined, never 0."""
import csv
import json
import math

import numpy as np
import pytest
import torch

import iaabench
from iaabench.data.samples import Sample
from iaabench.errors import ConfigError, IAAError


def samples(scores, votes=None):
    return [Sample(f"i{k}", f"i{k}.jpg", s, None if votes is None else tuple(votes[k])) for k, s in enumerate(scores)]


def test_fit_and_predict_the_training_mean_and_mean_histogram():
    votes = np.array([[0, 0, 1, 2, 3, 2, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 5, 5, 0, 0, 0, 0]])
    scores = (votes * np.arange(1, 11)).sum(1) / votes.sum(1)
    m = iaabench.create_model("constant", head="dist")
    assert m.fits_from_samples and not m.fitted
    with pytest.raises(IAAError, match="not fitted"):
        m(torch.zeros(2, 3, 32, 32))
    info = m.fit(samples(scores, votes), scale_max=10.0)
    assert info["n"] == 3 and info["mean_score"] == pytest.approx(scores.mean())
    dist = m(torch.zeros(4, 3, 32, 32))
    expected = (votes / votes.sum(1, keepdims=True)).mean(0)
    assert dist.shape == (4, 10) and torch.allclose(dist, torch.tensor(expected, dtype=torch.float32).expand(4, 10))
    # the mean of the mean histogram is the mean score: the two heads agree
    assert float(m.predict(dist).score[0]) * 10 == pytest.approx(scores.mean(), abs=1e-5)

    s = iaabench.create_model("constant")
    s.fit(samples([2.0, 4.0, 9.0]), scale_max=10.0)
    assert torch.allclose(s.predict(s(torch.zeros(3, 3, 32, 32))).score, torch.full((3,), 0.5))
    assert set(s.state_dict()) == {"mean_unit", "mean_dist"}  # a checkpoint keeps the fit

    with pytest.raises(ConfigError, match="dist head needs vote histograms"):
        iaabench.create_model("constant", head="dist").fit(samples([2.0, 4.0, 9.0]), scale_max=10.0)
    with pytest.raises(IAAError, match="training split is empty"):
        iaabench.create_model("constant").fit([], scale_max=10.0)


@pytest.mark.parametrize("dataset", ["synth-tad66k", "synth-ava"])
def test_a_run_records_undefined_correlations_and_the_table_says_so(dataset):
    from iaabench import table
    from iaabench.data.samples import carve_validation
    from iaabench.results import amend_record, frame
    from iaabench.runner import RunConfig, execute

    cfg = RunConfig(model="constant", dataset=dataset, device="cpu", dataset_options={"n": 60})
    _, path = execute(cfg, log=lambda *a: None)
    rec = json.loads(path.read_text())
    assert rec["training"]["fit"]["n"] == rec["counts"]["train"]
    for name in ("srcc", "plcc"):
        # strict JSON: the undefined value is null, its reason beside it (iaabench.integrity)
        assert rec["metrics"][name]["value"] is None and "undefined" in rec["metrics"][name]["warning"]
        assert rec["undefined"][f"/metrics/{name}/value"] == "undefined: constant predictions"
    # the prediction is the mean of the training split (validation carved out, as for every model)
    data = iaabench.api.load_dataset(dataset, n=60)
    train, _ = carve_validation(data.splits["train"], 0.1, 0)
    with open(path.parent / rec["predictions"]) as f:
        preds = list(csv.DictReader(f))
    assert {round(float(r["pred"]), 6) for r in preds} == {round(float(np.mean([s.score for s in train])), 6)}
    true = np.array([float(r["true"]) for r in preds])
    assert rec["metrics"]["mse_unit"]["value"] == pytest.approx(np.mean(((true - float(preds[0]["pred"])) / 10) ** 2))
    if dataset == "synth-ava":
        assert rec["head"] == "dist" and math.isfinite(rec["metrics"]["emd2"]["value"])

    # as if on the registered size (runs on resized datasets stay out of the table) and from committed code (the
    # checkout running the test may have edits); amended by the writer's own API, so the record still verifies
    amend_record(path, lambda r: (r.update(dataset_options={}), r["provenance"].update(dirty=False)))
    df = frame()
    assert set(df[df["model"] == "constant"]["mode"]) == {"trained"}
    rows = list(csv.DictReader(table.render("csv").splitlines()))
    srcc = next(r for r in rows if r["model"] == "constant" and r["metric"] == "srcc")
    assert srcc["mean"] == "" and "undefined: constant predictions" in srcc["note"]
    line = next(x for x in table.render("md").splitlines() if x.startswith("| constant |"))
    assert "undefined" in line and "nan" not in line.lower()
