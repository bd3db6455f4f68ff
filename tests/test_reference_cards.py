"""Reference-only cards (`reference_only: true`): published numbers of models that cannot run
here are listed by `iaabench models`, shown in the leaderboard as reported only, and refused with a
clear message by run/plan/build."""
from __future__ import annotations

import csv
import io

import pytest
import yaml
from typer.testing import CliRunner

from iaabench import cards, registry, table
from iaabench.cli import app
from iaabench.errors import ConfigError
from iaabench.models import reference
from iaabench.plan import resolve

REF = {
    "schema": 1, "family": "toyref", "title": "Toy reference", "paper": "A paper", "reference_only": True,
    "variants": {"toyref": {"description": "an LLM scorer"}}, "recipes": {},
    "reported": [{"model": "toyref", "dataset": "ava", "split": "official", "metric": "srcc", "value": 0.5,
                  "source": "A paper, Table 1"}],
}


@pytest.fixture
def ref_card(tmp_path, monkeypatch):
    """A reference-only card in an extra cards folder, registered as the models package does."""
    monkeypatch.setenv(cards.CARDS_ENV, str(tmp_path))
    (tmp_path / "toyref.yaml").write_text(yaml.safe_dump(REF))
    cards.load_card.cache_clear()
    assert "toyref" in reference.reference_cards()
    names = reference.register_card("toyref")
    yield names
    for n in names:
        registry._MODELS.pop(n, None)
    cards.load_card.cache_clear()


def test_a_reference_only_card_registers_models_that_are_listed_apart_and_never_run(ref_card):
    assert ref_card == ["toyref"]
    info = registry.model_info("toyref")
    assert info.reference_only and info.family == "toyref"
    assert "toyref" in registry.reference_models() and "toyref" not in registry.list_models()
    with pytest.raises(ConfigError, match="model 'toyref' is reference-only: .*toyref.yaml"):
        resolve(model="toyref", dataset="synth-ava")
    with pytest.raises(ConfigError, match="reference-only"):
        info.builder(head="dist", pretrained="none")
    with pytest.raises(ConfigError, match="reference-only"):
        cards.load_card("toyref").recipe_name_for("ava", "toyref")


def test_iaabench_run_on_a_reference_only_model_is_a_clear_error(ref_card):
    res = CliRunner().invoke(app, ["run", "--model", "toyref", "--dataset", "synth-ava"])
    # the CLI's main() prints an IAAError's message and hint and exits 2
    assert isinstance(res.exception, ConfigError) and "reference-only" in res.exception.message
    assert "toyref.yaml" in res.exception.message


def test_iaabench_models_lists_reference_only_models(ref_card):
    res = CliRunner().invoke(app, ["models"], terminal_width=200)
    assert res.exit_code == 0, res.output
    after = res.output.split("reference-only models", 1)
    assert len(after) == 2 and "toyref" in after[1]


def test_the_leaderboard_shows_reference_only_numbers_as_reported_only(ref_card):
    from iaabench.paths import PROJECT_ROOT

    cells, _ = table.cell_frame(PROJECT_ROOT / "results", marks=False)
    rows = list(csv.DictReader(io.StringIO(table.render("csv", cells=cells))))
    mine = [r for r in rows if r["model"] == "toyref"]
    assert len(mine) == 1 and mine[0]["mode"] == "not run" and float(mine[0]["reported"]) == 0.5
    assert mine[0]["note"] == table.REFERENCE_ONLY and mine[0]["mean"] == ""


def test_a_reference_only_card_with_recipes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(cards.CARDS_ENV, str(tmp_path))
    recipe = {"optimizer": {"name": "adam"}, "lr": {"all": 1.0e-3}, "epochs": 1, "batch_size": 2, "loss": "mse"}
    (tmp_path / "toyref.yaml").write_text(yaml.safe_dump({**REF, "recipes": {"quick": recipe}}))
    cards.load_card.cache_clear()
    try:
        with pytest.raises(ConfigError, match="toyref.yaml: recipes: a reference-only card runs nothing"):
            cards.load_card("toyref")
    finally:
        cards.load_card.cache_clear()


@pytest.mark.parametrize("family, models", [("vila", {"vila"}), ("qalign", {"q-align", "one-align"})])
def test_the_shipped_reference_cards_have_sourced_numbers(family, models):
    card = cards.load_card(family)
    assert card.reference_only and models <= set(registry.reference_models())
    assert {row["model"] for row in card.reported} == models
    for row in card.reported:
        assert row["split"] in cards.known_splits(row["dataset"]) and "https://" in row["source"]
