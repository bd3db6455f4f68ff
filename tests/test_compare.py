"""`iaabench compare`: the paired bootstrap over common test images, per seed and pooled."""
import numpy as np
import pytest
from scipy import stats

from iaabench.compare import compare, paired_bootstrap
from iaabench.errors import IAAError
from iaabench.results import Predictions

from test_table import N, TRUE, record


def preds(noise, seed, ids=None):
    rng = np.random.default_rng(seed)
    ids = ids or [f"img{i}" for i in range(N)]
    true = np.array([TRUE[int(i[3:])] for i in ids])
    return Predictions(ids, true, true + rng.normal(0, noise, len(ids)), [None] * len(ids))


def test_paired_bootstrap_matches_a_direct_computation():
    a, b = preds(0.5, 1), preds(1.5, 2)
    res = paired_bootstrap([a], [b], "srcc", scale_max=10, threshold=5, n_boot=300, seed=4)
    idx = np.random.default_rng(4).integers(0, N, size=(300, N), dtype=np.int32)
    d = np.array([stats.spearmanr(a.true[i], a.pred[i])[0] - stats.spearmanr(b.true[i], b.pred[i])[0] for i in idx])
    assert res["delta"] == pytest.approx(stats.spearmanr(a.true, a.pred)[0] - stats.spearmanr(b.true, b.pred)[0])
    assert res["ci"] == pytest.approx(list(np.percentile(d, [2.5, 97.5])))
    k = min(np.sum(d <= 0), np.sum(d >= 0))
    assert res["p"] == pytest.approx(min(1.0, 2 * (k + 1) / 301))
    assert res["n"] == N


def test_a_clearly_better_model_is_significant_and_the_test_is_antisymmetric():
    a, b = preds(0.3, 1), preds(3.0, 2)
    ab = paired_bootstrap([a], [b], "plcc", scale_max=10, threshold=5, seed=0)
    ba = paired_bootstrap([b], [a], "plcc", scale_max=10, threshold=5, seed=0)
    assert ab["delta"] > 0 and ab["ci"][0] > 0 and ab["p"] < 0.01
    assert ba["delta"] == pytest.approx(-ab["delta"]) and ba["ci"] == pytest.approx([-ab["ci"][1], -ab["ci"][0]])
    same = paired_bootstrap([a], [a], "srcc", scale_max=10, threshold=5, seed=0)
    assert same["delta"] == 0 and same["ci"] == [0, 0] and same["p"] == 1.0


def test_only_common_images_are_paired_and_constant_predictions_are_undefined():
    a = preds(0.5, 1)
    b = preds(0.5, 2, ids=[f"img{i}" for i in range(10, N)])
    assert paired_bootstrap([a], [b], "srcc", scale_max=10, threshold=5, n_boot=100)["n"] == N - 10
    flat = Predictions(a.image_id, a.true, np.full(N, 5.0), a.theme)
    res = paired_bootstrap([a], [flat], "srcc", scale_max=10, threshold=5, n_boot=100)
    assert res["delta"] is None and res["ci"] is None and "undefined: constant predictions (B)" in res["note"]
    assert paired_bootstrap([a], [flat], "mse_unit", scale_max=10, threshold=5, n_boot=100)["delta"] < 0
    bad = Predictions(a.image_id, a.true + 1, a.pred, a.theme)
    with pytest.raises(IAAError, match="true scores differ"):
        paired_bootstrap([a], [bad], "srcc", scale_max=10, threshold=5, n_boot=100)


def test_compare_reads_the_records_per_seed_then_pooled():
    for s in (0, 1):
        record(model="tanet", seed=s, noise=0.3)
        record(model="nima", seed=s, noise=2.0, noise_seed=10 + s)
    a, b, rows = compare("tanet", "nima", "tad66k", n_boot=200)
    assert [r.seed for r in a.runs] == [0, 1] and len(b.runs) == 2
    assert [(r["metric"], r["scope"]) for r in rows] == [("srcc", "seed 0"), ("srcc", "seed 1"), ("srcc", "pooled"),
                                                         ("plcc", "seed 0"), ("plcc", "seed 1"), ("plcc", "pooled")]
    pooled = rows[2]
    assert pooled["delta"] == pytest.approx(np.mean([rows[0]["delta"], rows[1]["delta"]]))
    assert pooled["ci"][0] > 0 and pooled["p"] < 0.05


def test_compare_names_ambiguous_or_missing_sides():
    record(model="tanet", recipe="a")
    record(model="tanet", recipe="b")
    record(model="nima")
    with pytest.raises(IAAError, match="records in 2 cells") as e:
        compare("tanet", "nima", "tad66k", n_boot=100)
    assert "tanet:a:score:trained" in e.value.message
    assert compare("tanet:b", "nima", "tad66k", n_boot=100)[0].key["recipe"] == "b"
    with pytest.raises(IAAError, match="no verified, clean record of 'mlsp' on tad66k"):
        compare("mlsp", "nima", "tad66k")


def test_compare_command_prints_the_table():
    from typer.testing import CliRunner

    from iaabench.cli import app

    record(model="tanet", noise=0.3)
    record(model="nima", noise=2.0)
    r = CliRunner().invoke(app, ["compare", "tanet", "nima", "--dataset", "tad66k", "--n-boot", "200"])
    assert r.exit_code == 0, r.output
    assert "pooled" in r.output and "srcc" in r.output and "plcc" in r.output
