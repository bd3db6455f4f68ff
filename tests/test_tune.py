"""`iaabench tune`: search spaces from the cards, the study's storage and identity, the overlay
recipe, and a real study on a small synthetic TAD66K (2 trials, continued to 4 by a second
call) whose objective never reads the test split."""
from __future__ import annotations

import math
import shutil

import pytest
import yaml

from iaabench import cards, tune
from iaabench.errors import ConfigError, IAAError

optuna = pytest.importorskip("optuna", reason="iaabench tune needs optuna (pip install optuna)")


@pytest.fixture
def card_dir(tmp_path, monkeypatch):
    """The committed cards copied to a temporary folder: overlays are written there, never
    into baselines/."""
    dest = tmp_path / "baselines"
    shutil.copytree(cards.cards_dir(), dest, ignore=shutil.ignore_patterns("*.tuned.yaml", ".*"))
    monkeypatch.setattr(cards, "cards_dir", lambda: dest)
    cards.load_card.cache_clear()
    yield dest
    cards.load_card.cache_clear()


def test_tanet_space_is_the_released_one():
    card = cards.load_card("tanet")
    s = dict(tune.search_space(card, card.recipe("tad66k-authors")).table())
    # code/TAD66K/search_space.json: one value -> fixed; two values -> the log range between them
    assert s["lr.theme_backbone"] == "1e-06 (fixed)" and s["lr.rgb_head"] == "1e-07 (fixed)"
    assert s["lr.aesthetic"] == "1e-07 .. 1e-06 (log)" and s["lr.weight_generator"] == "3e-07 .. 1e-06 (log)"
    assert s["batch_size"] == "40 (fixed)"
    # a recipe without its own space inherits its base's
    assert tune.search_space(card, card.recipe("tad66k-frozen-bn")).table() == \
        tune.search_space(card, card.recipe("tad66k-authors")).table()
    ava = dict(tune.search_space(card, card.recipe("ava"), choices=True).table())
    assert ava["lr.fusion_head"] == "{1e-07, 1e-05}" and ava["batch_size"] == "{40, 48, 56, 64, 72}"


def test_default_space_and_bad_groups():
    card = cards.load_card("nima")
    r = card.recipe("quick")
    s = tune.search_space(card, r)
    assert "default" in s.source
    assert {d.name: (d.low, d.high) for d in s.dims} == {f"lr.{g}": (v / 10, v * 10) for g, v in r.lr.items()}
    only = tune.search_space(card, r, lr_groups=["head"])
    assert [d.name for d in only.dims] == ["lr.head"]
    with pytest.raises(ConfigError, match="no parameter group 'trunk'"):
        tune.search_space(card, r, lr_groups=["trunk"])


def test_card_search_space_errors_name_the_key():
    recipes = {"a": {}}
    with pytest.raises(ConfigError, match=r"search_space.a.lr.head: expected"):
        tune.check_search_space({"a": {"lr": {"head": {"low": 1e-3}}}}, recipes, "x.yaml")
    with pytest.raises(ConfigError, match="no recipe 'b'"):
        tune.check_search_space({"b": {"lr": {}}}, recipes, "x.yaml")
    with pytest.raises(ConfigError, match=r"search_space.a.batch_size: expected positive integers"):
        tune.check_search_space({"a": {"batch_size": {"choice": [1.5]}}}, recipes, "x.yaml")
    with pytest.raises(ConfigError, match="low 0.1 is above high"):
        tune.check_search_space({"a": {"lr": {"g": {"low": 0.1, "high": 0.01}}}}, recipes, "x.yaml")


def test_storage_that_cannot_be_opened(tmp_path):
    with pytest.raises(IAAError, match="does not exist"):
        tune.open_storage(f"sqlite:///{tmp_path}/missing/folder/s.db")
    with pytest.raises(IAAError, match="cannot open the study database"):
        tune.open_storage("nosuchdialect://user:secret@host/db")
    try:
        tune.open_storage("nosuchdialect://user:secret@host/db")
    except IAAError as e:
        assert "secret" not in str(e)


def test_study_for_another_model_is_refused(tmp_path):
    st = tune.open_storage(f"sqlite:///{tmp_path}/s.db")
    a = tune._identity("nima", "synth-tad66k", "quick", None, {"n": 50})
    tune.open_study("s", st, a)
    tune.open_study("s", st, a)  # the same identity continues
    with pytest.raises(IAAError, match="was created for model 'nima'"):
        tune.open_study("s", st, tune._identity("tanet", "synth-tad66k", "quick", None, {"n": 50}))
    optuna.create_study(study_name="foreign", storage=st)
    with pytest.raises(IAAError, match="not created by iaabench"):
        tune.open_study("foreign", st, a)


def test_overlay_recipe_is_read_beside_the_card(card_dir):
    card = cards.load_card("nima")
    base = card.recipe("quick")
    prov = {"study": "s", "trials": 4, "complete": 3, "pruned": 1, "dataset": "synth-tad66k",
            "validation_srcc": 0.5, "best_trial": 2}
    path = tune.write_overlay(card, base, "tuned-s", {"lr": {"head": 1e-2}, "epochs": 1}, prov)
    assert path == card_dir / "nima.tuned.yaml"
    assert "tuned-s" not in yaml.safe_load((card_dir / "nima.yaml").read_text())["recipes"]  # the card is untouched
    r = cards.load_card("nima").recipe("tuned-s")
    assert r.lr == {**base.lr, "head": 1e-2} and r.epochs == 1 and r.batch_size == base.batch_size
    assert r.train_transforms == base.train_transforms and r.loss == base.loss
    # rewriting the same name replaces it; a name the card itself uses is refused
    tune.write_overlay(cards.load_card("nima"), base, "tuned-s", {"lr": {"head": 2e-2}}, prov)
    assert cards.load_card("nima").recipe("tuned-s").lr["head"] == 2e-2
    with pytest.raises(ConfigError, match="already has a recipe"):
        tune.write_overlay(cards.load_card("nima"), base, "quick", {"lr": {}}, prov)
    assert [c.family for c in cards.all_cards()].count("nima") == 1  # the overlay is not a card
    assert not list(card_dir.glob(".*.lock")), "the overlay lock file is removed"


def test_overlay_clash_is_an_error_at_load(card_dir):
    (card_dir / "nima.tuned.yaml").write_text(yaml.safe_dump(
        {"schema": 1, "family": "nima", "recipes": {"quick": {"base": "quick"}}}))
    cards.load_card.cache_clear()
    with pytest.raises(ConfigError, match=r"nima.tuned.yaml: recipes.quick: the card already defines"):
        cards.load_card("nima")


def test_parse_helpers():
    assert tune.parse_lr_ranges(["head=1e-5:1e-3"]) == {"head": (1e-5, 1e-3)}
    with pytest.raises(ConfigError, match="GROUP=LOW:HIGH"):
        tune.parse_lr_ranges(["head=1e-3"])
    assert tune.parse_pair("1,3", "--epoch-range") == (1, 3)
    assert math.isclose(tune.Dim("lr.x", 1e-3, 1e-3).low, 1e-3)


# ----------------------------------------------------------------------------------------------
# Real studies on a small synthetic TAD66K (NIMA's 64-px pinned recipe, 1-2 epochs)


def _request(tmp_path, **kw):
    base = dict(model="nima", dataset="synth-tad66k", trials=2, recipe="pinned", epochs=2, device="cpu",
                options={"n": 100}, storage=f"sqlite:///{tmp_path}/study.db", study="s")
    return tune.TuneRequest(**{**base, **kw})


def _trials(tmp_path, study="s"):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/study.db").get_trials()


@pytest.mark.slow
def test_two_trials_then_two_more_and_the_recipe_runs(tmp_path, card_dir):
    out = tune.run_tune(_request(tmp_path), log=lambda *a: None)
    assert out["trials"] == 2 and out["recipe"] == "tuned-s"
    out = tune.run_tune(_request(tmp_path), log=lambda *a: None)  # the same command continues the study
    trials = _trials(tmp_path)
    assert len(trials) == 4 and out["trials"] == 4 and [t.number for t in trials] == [0, 1, 2, 3]
    for t in trials:
        assert t.state.name in ("COMPLETE", "PRUNED")
        searched = {f"lr.{g}" for g, v in cards.load_card("nima").recipe("pinned").lr.items() if v > 0}
        assert set(t.params) == searched and 0 < len(t.intermediate_values) <= 2
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    over = yaml.safe_load((card_dir / "nima.tuned.yaml").read_text())
    assert over["tuned"]["tuned-s"]["trials"] == 4 and over["tuned"]["tuned-s"]["best_trial"] == best.number
    assert over["tuned"]["tuned-s"]["validation_srcc"] == pytest.approx(best.value, abs=1e-6)
    from iaabench.plan import RunConfig, resolve

    plan = resolve(RunConfig(model="nima", dataset="synth-tad66k", recipe="tuned-s"))  # what `run --recipe` does
    assert plan.recipe_name == "tuned-s" and plan.recipe["epochs"] == 2
    assert all(plan.recipe["lr"][k[3:]] == v for k, v in best.params.items())
    assert plan.recipe["lr"] == best.user_attrs["lr"] and plan.recipe["batch_size"] == best.user_attrs["batch_size"]
    shown = tune.show_study("s", None, None, f"sqlite:///{tmp_path}/study.db", console=_Quiet())
    assert shown["best"]["number"] == best.number and len(shown["trials"]) == 4


class _Quiet:
    def print(self, *a, **k):
        pass


def test_objective_never_reads_the_test_split(tmp_path, card_dir, monkeypatch):
    from PIL import Image

    from iaabench import api

    class Trap(list):
        def _no(self, *a, **k):
            raise AssertionError("a trial touched the test split")
        __iter__ = __getitem__ = __len__ = __bool__ = __contains__ = _no

    test_paths = set()
    load = api.load_dataset

    def trapped(*a, **k):
        data = load(*a, **k)
        test_paths.update(str(s.path) for s in data.splits["test"])
        data.splits["test"] = Trap()
        return data

    opened = []
    real_open = Image.open
    monkeypatch.setattr(api, "load_dataset", trapped)
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: (opened.append(str(fp)), real_open(fp, *a, **k))[1])
    out = tune.run_tune(_request(tmp_path, trials=1, epochs=1), log=lambda *a: None)
    assert out["complete"] == 1 and test_paths and opened
    assert not test_paths & set(opened), "a trial decoded a test image"


def test_nan_loss_trial_is_pruned(tmp_path, card_dir, monkeypatch):
    from iaabench import train

    real = train.get_loss

    def nan_loss(name):  # the recipe's loss, times NaN: the trainer's divergence check sees a NaN mean loss
        fn = real(name)
        return lambda *a: fn(*a) * float("nan")

    monkeypatch.setattr(train, "get_loss", nan_loss)
    out = tune.run_tune(_request(tmp_path, trials=1, epochs=1), log=lambda *a: None)
    (t,) = _trials(tmp_path)
    assert t.state.name == "PRUNED" and t.user_attrs["pruned_reason"].startswith("NaN loss")
    assert out["complete"] == 0 and out["pruned"] == 1 and out["overlay"] is None


def test_bad_input_fails_before_any_trial(tmp_path, card_dir, monkeypatch):
    monkeypatch.setattr(tune, "load_trial_data", lambda *a, **k: pytest.fail("a trial started"))
    with pytest.raises(ConfigError, match="no parameter group 'trunk'"):
        tune.run_tune(_request(tmp_path, lr_groups=["trunk"]))
    with pytest.raises(ConfigError, match="--lr-range trunk"):
        tune.run_tune(_request(tmp_path, lr_ranges={"trunk": (1e-4, 1e-3)}))
    with pytest.raises(IAAError, match="cannot open the study database"):
        tune.run_tune(_request(tmp_path, storage="nosuchdialect://h/db"))
    st = tune.open_storage(f"sqlite:///{tmp_path}/study.db")
    tune.open_study("s", st, tune._identity("tanet", "synth-tad66k", "quick", None, {"n": 100}))
    with pytest.raises(IAAError, match="study 's' was created for model 'tanet'"):
        tune.run_tune(_request(tmp_path))
    assert len(_trials(tmp_path)) == 0


@pytest.mark.slow
def test_trials_as_submitit_jobs_share_one_study(tmp_path, card_dir):
    """`tune --jobs 2 --executor slurm`: here with submitit's DebugExecutor (the jobs run in this
    process, one after another); each job runs its share of the trials on the same study."""
    pytest.importorskip("submitit", reason="tune jobs need submitit (pip install 'iaabench[slurm]')")
    from iaabench.executors import SlurmOptions

    out = tune.run_tune_jobs(_request(tmp_path, trials=2, epochs=1), 2, "submitit-local", SlurmOptions(time="30"),
                             console=_Quiet(), cluster="debug")
    assert out["trials"] == 2 and not out["failed_jobs"] and len(_trials(tmp_path)) == 2
    assert out["recipe"] == "tuned-s" and (card_dir / "nima.tuned.yaml").is_file()
