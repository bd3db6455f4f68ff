"""benchmark.yaml and the baseline cards: valid as committed, and bad ones are refused with
a message naming the bad key."""

import pytest
import yaml

from iaabench.cards import all_cards, load_card
from iaabench.errors import ConfigError
from iaabench.protocol import default_path, load_protocol
from iaabench.registry import list_datasets, list_models, model_info, reference_models


def test_committed_protocol_is_valid_and_consistent():
    p = load_protocol()
    datasets = set(list_datasets())
    models = set(list_models())
    assert set(p.datasets) <= datasets, "every protocol dataset is registered"
    assert set(p.leaderboard_models) <= models
    for pin in p.pinned:
        assert pin.model in models and pin.dataset in datasets


def _write_protocol(tmp_path, mutate):
    d = yaml.safe_load(default_path().read_text())
    mutate(d)
    path = tmp_path / "benchmark.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["datasets"]["tad66k"].pop("threshold"), "datasets.tad66k: missing key 'threshold'"),
    (lambda d: d["datasets"]["tad66k"].update(metrics=["srcc", "spearman"]), "unknown metric 'spearman'"),
    (lambda d: d["datasets"]["ava"].update(colour="red"), "datasets.ava.colour: unknown key"),
    (lambda d: d.update(version=2), "version: expected 1"),
    (lambda d: d["leaderboard"].update(datasets=["nope"]), "leaderboard.datasets: 'nope'"),
    (lambda d: d["pinned"].insert(0, {"model": "nima", "dataset": "x", "tolerance": {}}), "pinned[0].dataset"),
])
def test_malformed_protocol_names_the_key(tmp_path, mutate, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_protocol(_write_protocol(tmp_path, mutate))


_CAL = {"n_runs": 8, "sd": {"srcc": 0.01, "plcc": 0.004}, "perturbations": ["seed 0, ISA avx2, 2 threads"],
        "date": "2026-12-02", "machine": "Some CPU"}


def _pin_entry(**kw):
    e = {"model": "mlsp", "dataset": "synth-tad66k", "recipe": "pinned", "options": {"n": 1000},
         "tolerance": {"srcc": 0.031, "plcc": 0.012}, "calibration": dict(_CAL)}
    e.update(kw)
    return e


@pytest.mark.parametrize("entry, message", [
    (_pin_entry(tolerance=None), r"pinned\[0\] \(mlsp on synth-tad66k\): no derived tolerance"),
    (_pin_entry(calibration=None), r"pinned\[0\] \(mlsp on synth-tad66k\).calibration: missing date"),
    (_pin_entry(tolerance={"srcc": 0.02, "plcc": 0.012}), r"tolerance.srcc: 0.02 is less than 3 sd \(0.0300\)"),
    (_pin_entry(tolerance={"srcc": 0.08, "plcc": 0.012}, calibration=dict(_CAL, sd={"srcc": 0.02, "plcc": 0.004})),
     r"pinned\[0\] \(mlsp on synth-tad66k\).tolerance.srcc: 0.08 is above the cap 0.05"),
    (_pin_entry(tolerance={"srcc": 0.031, "krcc": 0.05}), r"tolerance.krcc: no measured sd"),
    (_pin_entry(calibration=dict(_CAL, n_runs=3)), r"calibration.n_runs: 3, at least 5 runs"),
])
def test_pinned_entry_without_a_derived_tolerance_is_refused_at_load(tmp_path, entry, message):
    path = _write_protocol(tmp_path, lambda d: d.update(pinned=[entry]))
    with pytest.raises(ConfigError, match=message):
        load_protocol(path)
    assert load_protocol(path, calibrating=True).pinned[0].model == "mlsp"  # --calibrate can still derive it


def test_a_derived_pinned_entry_loads(tmp_path):
    p = load_protocol(_write_protocol(tmp_path, lambda d: d.update(pinned=[_pin_entry()])))
    assert p.pinned[0].tolerance == {"srcc": 0.031, "plcc": 0.012} and p.pinned[0].calibration["n_runs"] == 8
    assert p.pinned_isa in ("native", "avx", "avx2", "avx512") and p.pinned_threads >= 1


def test_protocol_that_is_not_yaml(tmp_path):
    p = tmp_path / "benchmark.yaml"
    p.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match="benchmark.yaml:2: not valid YAML"):
        load_protocol(p)


def test_every_card_validates_and_every_model_has_its_variant():
    cards = {c.family: c for c in all_cards()}
    for name in list_models():
        info = model_info(name)
        assert info.family in cards, f"{name}: no card baselines/{info.family}.yaml"
        assert name in cards[info.family].variants, f"{name} is not listed under variants of its card"
    for card in cards.values():
        for variant in card.variants:
            assert variant in list_models() + reference_models(), f"{card.family}: variant {variant} is not registered"
        for row in card.reported:
            assert row["source"].strip(), "every reported number names its source"


def test_every_recipe_matches_its_models_parameter_groups():
    """A recipe's lr groups must be exactly the model's parameter groups (checked for the
    recipes a model is mapped to by `recipe_for`)."""
    import iaabench

    for card in all_cards():
        for variant in card.variants:
            info = model_info(variant)
            built = {}
            for dataset in card.data.get("recipe_for", {}):
                name = card.recipe_name_for(dataset, variant)
                r = card.recipe(name)
                head = r.head or info.heads[0]
                key = (head, tuple(sorted(r.options.items())))
                if key not in built:
                    built[key] = set(iaabench.create_model(variant, head=head, pretrained="none",
                                                           **r.options).param_groups())
                assert built[key] == set(r.lr), f"{variant} / {name}"


def test_malformed_card_names_the_key(tmp_path, monkeypatch):
    import iaabench.cards as cards

    src = cards.cards_dir() / "nima.yaml"
    d = yaml.safe_load(src.read_text())
    d["recipes"]["quick"]["optimizer"]["name"] = "lion"
    (tmp_path / "nima.yaml").write_text(yaml.safe_dump(d))
    monkeypatch.setattr(cards, "cards_dir", lambda: tmp_path)
    load_card.cache_clear()
    try:
        # named at the recipe it is in or at one built on it (`pinned` has base: quick)
        with pytest.raises(ConfigError, match=r"recipes.(quick|pinned).optimizer.name: 'lion'"):
            load_card("nima")
        d["recipes"]["quick"]["base"] = "quick-ava"
        d["recipes"]["quick"]["optimizer"]["name"] = "adam"
        (tmp_path / "nima.yaml").write_text(yaml.safe_dump(d))
        load_card.cache_clear()
        with pytest.raises(ConfigError, match="chain loops"):
            load_card("nima")
    finally:
        load_card.cache_clear()
