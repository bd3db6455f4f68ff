"""Cards are validated by a typed schema at load: one error naming the file and the key."""
from __future__ import annotations

import pytest
import yaml

from iaabench import cards
from iaabench.errors import ConfigError

BASE = {
    "schema": 1, "family": "toycard", "title": "Toy", "paper": "A paper",
    "variants": {"toycard": {"description": "x"}},
    "recipes": {"quick": {"optimizer": {"name": "adam"}, "lr": {"all": 1.0e-3}, "epochs": 1, "batch_size": 4,
                          "loss": "mse", "transforms": {"train": {"resize": 32}, "test": {"resize": 32}}}},
}


@pytest.fixture
def write_card(tmp_path, monkeypatch):
    monkeypatch.setenv(cards.CARDS_ENV, str(tmp_path))
    cards.load_card.cache_clear()

    def write(data):
        path = tmp_path / "toycard.yaml"
        path.write_text(yaml.safe_dump(data))
        cards.load_card.cache_clear()
        return path
    yield write
    cards.load_card.cache_clear()


def _with(path: list, value):
    import copy

    d = copy.deepcopy(BASE)
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return d


def test_a_valid_card_loads_from_an_extra_cards_folder(write_card):
    path = write_card(BASE)
    card = cards.load_card("toycard")
    assert card.path == path and card.recipe("quick").loss == "mse"
    assert "toycard" in [c.family for c in cards.all_cards()]


@pytest.mark.parametrize("path, value, message", [
    (["colour"], "blue", r"toycard.yaml.colour: unknown key"),
    (["recipes", "quick", "epochs"], "two", r"toycard.yaml.recipes.quick.epochs: expected an integer"),
    (["recipes", "quick", "lr", "all"], "fast", r"toycard.yaml.recipes.quick.lr.all: expected a number"),
    (["recipes", "quick", "optimiser"], {"name": "adam"}, r"recipes.quick.optimiser: unknown key"),
    (["recipes", "quick", "loss"], "msee", r"recipes.quick.loss: unknown loss 'msee'"),
    (["recipes", "quick", "optimizer", "name"], "lion", r"recipes.quick.optimizer.name: 'lion'"),
    (["recipes", "quick", "schedule"], {"name": "cosine"}, r"recipes.quick.schedule.name: 'cosine'"),
    (["recipes", "quick", "transforms", "train", "normalize"], "imagenet", r"transforms.train.normalize: unknown key"),
    (["reported"], [{"model": "toycard", "dataset": "ava", "split": "x", "metric": "srcc", "value": "high",
                     "source": "s"}], r"reported\[0\].value: expected a number"),
    (["variants"], ["toycard"], r"toycard.yaml.variants: expected a mapping"),
])
def test_a_bad_card_is_one_error_naming_the_file_and_key(write_card, path, value, message):
    write_card(_with(path, value))
    with pytest.raises(ConfigError, match=message):
        cards.load_card("toycard")


def test_every_shipped_card_passes_the_schema():
    cards.load_card.cache_clear()
    assert len(cards.all_cards()) >= 4


ROW = {"model": "toycard", "dataset": "ava", "split": "official", "metric": "srcc", "value": 0.5, "source": "A paper"}


@pytest.mark.parametrize("change, message", [
    ({"split": "nima-oww"}, r"toycard.yaml: reported\[0\] \(toycard, ava, srcc\): unknown split 'nima-oww'"),
    ({"source": "  "}, r"toycard.yaml: reported\[0\] \(toycard, ava, srcc\): source is empty"),
    ({"source": None}, r"toycard.yaml.reported\[0\]: missing key 'source'"),
    ({"split": None}, r"toycard.yaml.reported\[0\]: missing key 'split'"),
    ({"dataset": "koniq-10k"}, r"reported\[0\] \(toycard, koniq-10k, srcc\): unknown split 'official'"),
])
def test_a_reported_number_needs_a_known_split_and_a_source(write_card, change, message):
    row = {k: v for k, v in {**ROW, **change}.items() if v is not None}
    write_card({**BASE, "reported": [ROW, row][1:]})
    with pytest.raises(ConfigError, match=message):
        cards.load_card("toycard")


def test_known_splits_are_the_loaders_and_the_published_ones(write_card):
    known = cards.known_splits("ava")
    assert {"official", "tanet-random", "nima-own"} <= set(known) and "piaa" not in known
    assert "piaa" in cards.known_splits("flickr-aes")
    write_card({**BASE, "reported": [ROW, {**ROW, "split": "nima-own"}, {**ROW, "split": "tanet-random"}]})
    assert len(cards.load_card("toycard").reported) == 3
