"""`iaabench piaa`: the k-shot personalized protocol on synth-flickr-aes (small, via loader options)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from iaabench import piaa
from iaabench.errors import ConfigError, DatasetNotFoundError
from iaabench.registry import dataset_info

SMALL = {"n": 90, "workers": 18, "test_workers": 2}  # 3 panels of 30 images; ~25 images per worker


def test_draw_is_seeded_disjoint_and_independent_of_order():
    ids = [f"img{i:03d}.jpg" for i in range(40)]
    a, t = piaa.draw(ids, "W1", 10, 0)
    assert len(a) == 10 and len(t) == 30 and not set(a) & set(t) and set(a) | set(t) == set(ids)
    assert piaa.draw(list(reversed(ids)) + ids[:5], "W1", 10, 0) == (a, t)
    assert piaa.draw(ids, "W1", 10, 1)[0] != a and piaa.draw(ids, "W2", 10, 0)[0] != a
    assert piaa.draw(ids, "W1", 10, 0, seed=1)[0] != a


def test_eligibility_skips_small_workers_and_refuses_a_k_nobody_serves():
    ok, skipped = piaa.eligibility({"A": 12, "B": 40, "C": 11}, [10, 30])
    assert ok == {10: ["A", "B"], 30: ["B"]}
    assert [(s["worker"], s["k"], s["n_images"]) for s in skipped] == [("C", 10, 11), ("A", 30, 12), ("C", 30, 11)]
    assert "needs at least 12" in skipped[0]["reason"]
    with pytest.raises(ConfigError, match="k=39 is larger than every test worker"):
        piaa.eligibility({"A": 12, "B": 40}, [10, 39])


def test_summary_is_mean_and_sd_over_repeats_of_the_mean_over_workers():
    eps = [{"worker": w, "k": 5, "repeat": r, "srcc_generic": g, "srcc_personalized": p}
           for w, r, g, p in [("A", 0, 0.1, 0.3), ("B", 0, 0.3, 0.5), ("A", 1, 0.2, 0.2), ("B", 1, 0.2, None)]]
    s = piaa.summarize(eps, [5], 2)["5"]
    assert s["personalized"]["per_repeat"] == pytest.approx([0.4, 0.2])
    assert s["personalized"]["mean"] == pytest.approx(0.3) and s["personalized"]["sd"] == pytest.approx(np.std([0.4, 0.2], ddof=1))
    assert s["difference"]["per_repeat"] == pytest.approx([0.2, 0.0]) and s["undefined_episodes"] == 1


def test_parse_shots_and_bad_settings():
    assert piaa.parse_shots("100, 10,10") == [10, 100]
    for bad in ("", "0,10", "ten"):
        with pytest.raises(ConfigError, match="--shots"):
            piaa.parse_shots(bad)
    with pytest.raises(ConfigError, match="not one of"):
        piaa.card_settings("nima", "lasso")
    with pytest.raises(ConfigError, match="no such setting for method ridge"):
        piaa.card_settings("nima", "ridge", {"steps": 3})
    assert piaa.card_settings("hyperiqa").method == "finetune-all"
    with pytest.raises(ConfigError, match="needs the module"):
        piaa.card_settings("hyperiqa", "ridge")


def _latent_features(n: int, seed: int = 0) -> dict:
    """{image name: (latent features, population-mean score)} of synth-flickr-aes: the generator's
    per-attribute quality terms of each image (what a worker's taste reweights)."""
    from iaabench.data import synthetic as S

    names = S._flickr_names(np.random.default_rng([seed, 1, S._LAYOUT_CODE["flickr-aes"]]), n)
    out = {}
    for i, name in enumerate(names):
        a = S.sample_attributes(np.random.default_rng([seed, 0, i]))
        terms = list(S.quality_terms(S._RULES[a.theme], a).values())
        centre, spread = S.SCALE_MAP["flickr-aes"]
        out[name] = (np.array(terms + [a.saturation, a.exposure, a.exposure ** 2]),
                     centre + spread * S.latent_quality(a))
    return out


@pytest.mark.slow
def test_ridge_personalization_beats_the_generic_model_on_workers_with_their_own_taste():
    """Synthetic workers weight the attributes their own way: ridge on the latent features of k of
    a worker's images recovers part of that taste, so the worker's ranking improves."""
    d = dataset_info("synth-flickr-aes").loader(n=240, workers=12, progress=False)
    samples = [s for v in d.splits.values() for s in v]
    feats = _latent_features(240)
    assert set(feats) == {s.image_id for s in samples}
    workers = sorted({w for s in samples for w in s.extra["ratings"]})
    usable = piaa.worker_images(samples, workers)
    eligible, _ = piaa.eligibility({w: len(v) for w, v in usable.items()}, [40])
    generic = {i: f[1] for i, f in feats.items()}

    def personalize(w, k, r, adapt_ids, y_a, test_ids, es):
        x_a = np.stack([feats[i][0] for i in adapt_ids])
        g_a = np.array([generic[i] for i in adapt_ids])
        x_t = np.stack([feats[i][0] for i in test_ids])
        return test_ids, np.array([generic[i] for i in test_ids]) + piaa.adapt_ridge(x_a, y_a - g_a, x_t, [0.1, 1, 10, 100])

    episodes, _ = piaa.run_episodes(usable, generic, eligible, 3, 0, personalize)
    s = piaa.summarize(episodes, [40], 3)["40"]
    assert s["n_workers"] >= 10
    assert s["difference"]["mean"] > 0.03, s
    assert all(d > 0 for d in s["difference"]["per_repeat"]), s


def _run(tmp_path, **kw):
    args = dict(model="nima", dataset="synth-flickr-aes", shots=[5], repeats=2, epochs=1, device="cpu",
                dataset_options=dict(SMALL), results_root=tmp_path / "results")
    args.update(kw)
    return piaa.run_piaa(piaa.PiaaConfig(**args), log=lambda *a: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One protocol run that trains the generic model (NIMA, quick recipe, 1 epoch), and that
    model's checkpoint, which the other runs adapt (`--weights`: no training again)."""
    from iaabench.paths import runs_dir

    tmp = tmp_path_factory.mktemp("piaa")
    with pytest.MonkeyPatch.context() as mp:  # a module fixture runs outside the per-test isolation
        for var in ("IAABENCH_RUNS", "IAABENCH_RESULTS"):
            mp.setenv(var, str(tmp / var.lower()))
        mp.setenv("IAABENCH_CACHE", os.environ.get("IAABENCH_TEST_CACHE", str(tmp / "cache")))
        # the pinned recipe's frozen random trunk gives every image its own score after one epoch
        # (the quick recipe's one epoch can leave every prediction equal: no SRCC to compare)
        rec, path = _run(tmp, recipe="pinned")
        generic = json.loads(open(rec["generic"]["record"]).read())
        return rec, path, runs_dir() / generic["checkpoint"]


def _counts():
    d = dataset_info("synth-flickr-aes").loader(**SMALL, progress=False)
    return piaa.worker_images(d.splits["test"], d.manifest["test_workers"])


@pytest.mark.slow
def test_ridge_run_scores_only_the_images_not_drawn(trained):
    rec, path, weights = trained
    assert rec["protocol"] == "piaa" and rec["split"]["name"] == "piaa" and rec["metrics"] == {}
    assert rec["generic"]["counts"]["train"] > 0 and rec["plan"]["weights"] is None
    assert rec["counts"]["test_workers"] == 2 and rec["piaa"]["settings"]["method"] == "ridge"
    assert len(rec["piaa"]["episodes"]) == 2 * 2
    assert all(e["srcc_generic"] is not None for e in rec["piaa"]["episodes"])
    assert piaa.verify_record(rec, path.parent / rec["predictions"]) == []
    # every episode is scored on the worker's images minus the k drawn ones, never on those
    own = _counts()
    rows = (path.parent / rec["predictions"]).read_text().splitlines()[1:]
    for e in rec["piaa"]["episodes"]:
        adapt, test = piaa.draw(own[e["worker"]], e["worker"], e["k"], e["repeat"], 0)
        scored = {r.split(",")[3] for r in rows if r.split(",")[:3] == [e["worker"], str(e["k"]), str(e["repeat"])]}
        assert scored == set(test) and not scored & set(adapt)
        assert e["n_adapt"] == 5 and e["n_test"] == len(own[e["worker"]]) - 5
    # a tampered episode is caught
    bad = json.loads(json.dumps(rec))
    bad["piaa"]["episodes"][0]["srcc_personalized"] = 0.99
    assert piaa.verify_record(bad, path.parent / rec["predictions"])
    rows_t = piaa.table_rows([(path, rec)])
    assert [(r["model"], r["k"], r["n_repeats"]) for r in rows_t[:1]] == [("nima", 5, 2)]
    assert {r["model"] for r in rows_t[1:]} == {"PAM (att&con)", "PIAA", "UGIAA", "BIAA"}
    # `iaabench check` recomputes the episodes; the leaderboard shows the personalized section
    from iaabench import check, table

    results_root = path.parent.parent.parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IAABENCH_RESULTS", str(results_root))
        verdicts = [v for v in check.recompute_all(1e-6) if v[0] == str(path)]
        assert verdicts and verdicts[0][2] and "personalized episodes recomputed" in verdicts[0][1]
        section = table.personalized_text()
        assert "| nima | synth-flickr-aes | 5 |" in section and "reference only" in section
        (path.parent / rec["predictions"]).write_text("worker,k,repeat,image_id\n")  # tampered predictions
        assert not [v for v in check.recompute_all(1e-6) if v[0] == str(path)][0][2]


@pytest.mark.slow
def test_finetune_head_is_deterministic_and_skips_small_workers(trained, tmp_path):
    weights = trained[2]
    counts = sorted(len(v) for v in _counts().values())
    assert counts[0] < counts[-1]  # the workers rated different numbers of images
    k = counts[-1] - 2  # only the busiest worker(s) can serve it
    kw = dict(shots=[3, k], repeats=2, adapt="finetune-head", adapt_steps=3, weights=weights)
    rec, path = _run(tmp_path, **kw)
    again, path2 = _run(tmp_path, **kw)
    assert path != path2 and rec["piaa"]["episodes"] == again["piaa"]["episodes"]
    assert (path.parent / rec["predictions"]).read_text() == (path2.parent / again["predictions"]).read_text()
    assert rec["plan"]["weights"] == str(weights) and rec["piaa"]["settings"]["params"]["steps"] == 3
    assert rec["piaa"]["head_reproduces_generic_max_abs_diff"] < 1e-4
    skipped = [s for s in rec["piaa"]["skipped_workers"] if s["k"] == k]
    assert skipped and all(s["n_images"] < k + 2 for s in skipped)
    assert rec["piaa"]["summary"][str(k)]["n_workers"] == 2 - len(skipped)
    assert piaa.verify_record(rec, path.parent / rec["predictions"]) == []


@pytest.mark.slow
def test_finetune_all(trained, tmp_path):
    rec, path = _run(tmp_path, shots=[3], repeats=1, adapt="finetune-all", adapt_steps=2, adapt_lr=1e-4,
                     weights=trained[2])
    assert len(rec["piaa"]["episodes"]) == 2 and piaa.verify_record(rec, path.parent / rec["predictions"]) == []
    assert rec["piaa"]["settings"]["params"] == {"steps": 2, "lr": 1e-4, "weight_decay": 0.0, "batch_size": 10}


def test_bad_input_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="larger than every test worker"):
        _run(tmp_path, shots=[5, 500])
    assert not (tmp_path / "results").exists()
    with pytest.raises(DatasetNotFoundError):
        _run(tmp_path, dataset="flickr-aes", data_root=tmp_path / "nothing", dataset_options={})
    with pytest.raises(ConfigError, match="repeats"):
        _run(tmp_path, repeats=0)
