"""Baseline cards (`baselines/<family>.yaml`): the paper, the variants, the training recipes
per dataset, the numbers the paper reported (with source and split), and the deviations.

A card is plain YAML data, validated here with errors that name the bad key. Recipes may
inherit from another recipe of the same card with `base:`. Precedence when a run resolves
its recipe: CLI overrides > the card's recipe > protocol defaults.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import check_keys, read_yaml
from .data.pipeline import TransformSpec
from .errors import ConfigError, UnknownNameError
from .paths import PROJECT_ROOT
from .schema import CardSchema, RecipeEntry, Reported, keys, validate

#: The keys a card, a recipe and a reported row may have: the fields of their schema (iaabench/schema.py).
CARD_KEYS = keys(CardSchema)
RECIPE_KEYS = keys(RecipeEntry)
OPTIMIZERS = {"adam", "adamw", "sgd"}
SCHEDULES = {"none", "step", "multistep"}
REPORTED_KEYS = keys(Reported)
#: Splits a paper reported on that no loader implements (the loaders' own splits come from the
#: registry): dataset -> split -> what it is. A reported row must name one of these or a loader split.
PUBLISHED_SPLITS: dict[str, dict[str, str]] = {
    "ava": {
        "nima-own": "the NIMA authors' own AVA split (not published)",
        "musiq-own": "the split of the MUSIQ paper's AVA experiment (not published with the paper's number)",
        "relic-random": "the ReLIC authors' random AVA split (reference/relic_eat.md)",
        "eat-release": "the split the EAT release's checkpoint was selected on (reference/relic_eat.md)",
        "vila-own": "the split of the VILA paper's AVA experiment (not read here)",
        "qalign-own": "the AVA_test of the Q-Align release's model card (whether it is the official list: not read)",
    },
    "flickr-aes": {"piaa": "the personalized protocol: 37 test workers, k adaptation images each (`iaabench piaa`)"},
}


@dataclass(frozen=True)
class Recipe:
    """A fully resolved training recipe."""

    name: str
    optimizer: dict
    lr: dict[str, float]
    schedule: dict
    epochs: int
    batch_size: int
    eval_batch_size: int
    loss: str
    head: str | None
    train_transforms: TransformSpec
    test_transforms: TransformSpec
    options: dict = field(default_factory=dict)
    val_fraction: float | None = None
    description: str = ""
    pretrained: str = "default"  # backbone weights: "default" (resolved offline-first) or "none"
    interpolation: str | None = None  # the resize filter where a release's differs from the model's declared one
    sampling: str = "images"  # training batches: "images" (each with its crops) or "crops" (data/crops.py)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("train_transforms", "test_transforms"):
            d[k] = asdict(getattr(self, k))
            for opt, default in (("max_side", None), ("exif", "ignore")):  # so other plans keep their keys
                if d[k][opt] == default:
                    del d[k][opt]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        """The inverse of `to_dict` (a plan's or a record's resolved recipe)."""
        def spec(t: dict) -> TransformSpec:
            t = dict(t)
            for k in ("resize", "mean", "std"):
                if isinstance(t.get(k), list):
                    t[k] = tuple(t[k])
            return TransformSpec(**t)

        return cls(**{**d, "train_transforms": spec(d["train_transforms"]), "test_transforms": spec(d["test_transforms"])})

    def for_input(self, inp) -> "Recipe":
        """This recipe's transforms for a model's declared input (`models.base.InputSpec`): its
        normalisation, filter and resize policy (and its size where the recipe names none). The
        recipe's own `interpolation`, where it names one, replaces the model's filter."""
        if self.interpolation:
            inp = replace(inp, interpolation=self.interpolation)
        return replace(self, train_transforms=self.train_transforms.with_input(inp),
                       test_transforms=self.test_transforms.with_input(inp))

    def with_overrides(self, epochs=None, batch_size=None, lr: dict[str, float] | None = None,
                       eval_batch_size=None) -> "Recipe":
        new_lr = dict(self.lr)
        for group, value in (lr or {}).items():
            if group not in new_lr:
                raise ConfigError(f"--lr {group}=...: recipe '{self.name}' has no parameter group '{group}'",
                                  f"its groups: {', '.join(new_lr)}")
            new_lr[group] = float(value)
        return replace(self, epochs=epochs if epochs is not None else self.epochs,
                       batch_size=batch_size or self.batch_size,
                       eval_batch_size=eval_batch_size or self.eval_batch_size, lr=new_lr)


@dataclass(frozen=True)
class Card:
    family: str
    path: Path
    data: dict

    @property
    def variants(self) -> dict[str, dict]:
        return self.data["variants"]

    @property
    def reported(self) -> list[dict]:
        return self.data.get("reported", [])

    @property
    def title(self) -> str:
        return self.data.get("title", self.family)

    @property
    def reference_only(self) -> bool:
        """Published numbers only: no variant of the card can run here (no recipe, no model)."""
        return bool(self.data.get("reference_only"))

    def refuse_reference_only(self, model: str | None) -> None:
        if self.reference_only:
            raise ConfigError(f"model '{model or self.family}' is reference-only: {self.path} lists its published "
                              "numbers (shown in the leaderboard), but it cannot run here",
                              "see the card's variants and deviations for why; `iaabench models` lists runnable models")

    def recipe_name_for(self, dataset: str, model: str | None = None, default: str | None = None) -> str:
        """The recipe a model trains with on `dataset`: the variant's own `recipe_for` first,
        then the card's, then `default` (the protocol's recipe for the dataset, e.g. `quick` for
        the synthetic ones) when the card has a recipe of that name. A reference-only card has none."""
        self.refuse_reference_only(model)
        variant = self.variants.get(model) or {} if model else {}
        mapping = {**(self.data.get("recipe_for") or {}), **(variant.get("recipe_for") or {})}
        if dataset in mapping:
            return mapping[dataset]
        if default and default in self.data["recipes"]:
            return default
        raise ConfigError(f"{self.path}: no recipe for dataset '{dataset}' (recipe_for has: {', '.join(mapping)})",
                          "pass --recipe NAME to choose one of: " + ", ".join(self.data["recipes"]))

    def recipe(self, name: str) -> Recipe:
        self.refuse_reference_only(None)
        recipes = self.data["recipes"]
        if name not in recipes:
            close = difflib.get_close_matches(name, list(recipes), n=3)
            raise UnknownNameError(f"{self.path}: no recipe '{name}'",
                                   f"did you mean {', '.join(close)}?" if close else f"recipes: {', '.join(recipes)}")
        merged: dict[str, Any] = {}
        chain, cur = [], name
        while cur is not None:
            if cur in chain:
                raise ConfigError(f"{self.path}: recipes.{name}: 'base' chain loops ({' -> '.join(chain + [cur])})")
            if cur not in recipes:
                raise ConfigError(f"{self.path}: recipes.{chain[-1]}.base: no recipe '{cur}'")
            chain.append(cur)
            cur = recipes[cur].get("base")
        for r in reversed(chain):
            for k, v in recipes[r].items():
                if k == "base":
                    continue
                merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) and k != "lr" else v
        return _build_recipe(name, merged, f"{self.path}: recipes.{name}")


def _build_recipe(name: str, r: dict, where: str) -> Recipe:
    for key in ("optimizer", "lr", "epochs", "batch_size", "loss"):
        if key not in r:
            raise ConfigError(f"{where}: missing key '{key}'")
    opt = check_keys(r["optimizer"], f"{where}.optimizer", {"name"}, {"weight_decay", "momentum", "betas", "nesterov"})
    if opt["name"] not in OPTIMIZERS:
        raise ConfigError(f"{where}.optimizer.name: '{opt['name']}' is not one of {sorted(OPTIMIZERS)}")
    sched = check_keys(r.get("schedule", {"name": "none"}), f"{where}.schedule", {"name"},
                       {"every", "gamma", "milestones"})
    if sched["name"] not in SCHEDULES:
        raise ConfigError(f"{where}.schedule.name: '{sched['name']}' is not one of {sorted(SCHEDULES)}")
    if not isinstance(r["lr"], dict) or not r["lr"]:
        raise ConfigError(f"{where}.lr: expected a mapping of parameter group -> learning rate")
    for g, v in r["lr"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{where}.lr.{g}: expected a non-negative number, got {v!r}")
    for k in ("epochs", "batch_size", "eval_batch_size"):
        v = r.get(k, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if k == "epochs" else 1):
            raise ConfigError(f"{where}.{k}: expected a positive integer, got {v!r}")
    tr = check_keys(r.get("transforms", {}), f"{where}.transforms", set(), {"train", "test"})
    loss = r["loss"]
    from .losses import LOSSES

    if loss not in LOSSES:
        close = difflib.get_close_matches(str(loss), list(LOSSES), n=3)
        raise ConfigError(f"{where}.loss: unknown loss '{loss}'",
                          f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(LOSSES))}")
    from .data.pipeline import FILTERS

    if r.get("interpolation") is not None and r["interpolation"] not in FILTERS:
        raise ConfigError(f"{where}.interpolation: {r['interpolation']!r} is not one of {sorted(FILTERS)}")
    head = r.get("head")  # None: the model's default head
    if head not in (None, "score", "dist"):
        raise ConfigError(f"{where}.head: expected 'score' or 'dist', got {head!r}")
    return Recipe(
        name=name, optimizer=dict(opt), lr={k: float(v) for k, v in r["lr"].items()}, schedule=dict(sched),
        epochs=r["epochs"], batch_size=r["batch_size"], eval_batch_size=r.get("eval_batch_size", r["batch_size"]),
        loss=loss, head=head,
        train_transforms=TransformSpec.from_dict(tr.get("train"), f"{where}.transforms.train"),
        test_transforms=TransformSpec.from_dict(tr.get("test"), f"{where}.transforms.test"),
        options=dict(r.get("options") or {}), val_fraction=r.get("val_fraction"),
        description=r.get("description", ""), pretrained=str(r.get("pretrained", "default")),
        interpolation=r.get("interpolation"), sampling=_sampling(r, where),
    )


def _sampling(r: dict, where: str) -> str:
    """The recipe's `sampling` (default "images"), checked against its training transform."""
    from .data.crops import check_sampling

    sampling = r.get("sampling") or "images"
    tr = (r.get("transforms") or {}).get("train")
    check_sampling(sampling, TransformSpec.from_dict(tr, f"{where}.transforms.train"), where)
    return sampling


def cards_dir() -> Path:
    return PROJECT_ROOT / "baselines"


#: Extra folders of cards (os.pathsep-separated), searched before `baselines/`: a model added from
#: outside the repository brings its card along without an edit here.
CARDS_ENV = "IAABENCH_CARDS"


def card_folders() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get(CARDS_ENV, "").split(os.pathsep) if p]
    return [*extra, cards_dir()]


def card_path(family: str) -> Path:
    for folder in card_folders():
        if (folder / f"{family}.yaml").is_file():
            return folder / f"{family}.yaml"
    return cards_dir() / f"{family}.yaml"


@lru_cache(maxsize=None)
def load_card(family: str) -> Card:
    path = card_path(family)
    if not path.is_file():
        raise ConfigError(f"no baseline card for '{family}': expected {path}")
    data = read_yaml(path)
    validate(data, CardSchema, str(path))  # the typed schema: unknown keys and wrong types, at load
    if data["schema"] != 1:
        raise ConfigError(f"{path}: schema: expected 1, got {data['schema']!r}")
    if data["family"] != family:
        raise ConfigError(f"{path}: family: '{data['family']}' does not match the file name '{family}'")
    overlay = path.with_name(f"{family}.tuned.yaml")  # recipes written by `iaabench tune`, beside the card
    if overlay.is_file():
        data = _with_overlay(data, overlay)
    if "search_space" in data:
        from .search_space import check_search_space

        check_search_space(data["search_space"], data["recipes"], str(path))
    for target in (data.get("recipe_for") or {}).values():
        if target not in data["recipes"]:
            raise ConfigError(f"{path}: recipe_for names recipe '{target}', which the card does not define")
    for i, row in enumerate(data.get("reported", []) or []):
        if row["model"] not in data["variants"]:
            raise ConfigError(f"{path}: reported[{i}].model: '{row['model']}' is not a variant of this card")
        _check_reported(row, f"{path}: reported[{i}] ({row['model']}, {row['dataset']}, {row['metric']})")
    card = Card(family, path, data)
    if card.reference_only and data["recipes"]:
        raise ConfigError(f"{path}: recipes: a reference-only card runs nothing", "leave recipes empty ({})")
    for name in data["recipes"]:
        card.recipe(name)  # validates the whole chain now, not at the first run
    return card


def known_splits(dataset: str) -> dict[str, str]:
    """The splits a reported number on `dataset` may name: the loader's (when the dataset is
    registered) and the published ones no loader implements (`PUBLISHED_SPLITS`), with what each is."""
    from .errors import IAAError
    from .registry import dataset_info

    try:
        loader = {s: "a split of the dataset's loader" for s in dataset_info(dataset).splits}
    except IAAError:  # a dataset iaabench does not load (e.g. KonIQ-10k)
        loader = {}
    return {**loader, **PUBLISHED_SPLITS.get(dataset, {})}


def _check_reported(row: dict, where: str) -> None:
    """A reported number names its source and a known split of its dataset."""
    if not str(row["source"]).strip():
        raise ConfigError(f"{where}: source is empty", "say where the number was read (paper, table, URL)")
    splits = known_splits(row["dataset"])
    if row["split"] not in splits:
        raise ConfigError(f"{where}: unknown split '{row['split']}' of dataset '{row['dataset']}'",
                          ("known: " + ", ".join(sorted(splits)) if splits else "no split of that dataset is known")
                          + "; a paper's own split goes into cards.PUBLISHED_SPLITS with what it is")


def _with_overlay(data: dict, overlay: Path) -> dict:
    """The card's data plus the recipes of its overlay (`baselines/<family>.tuned.yaml`,
    written by `iaabench tune`); a recipe name the card already uses is an error."""
    extra = read_yaml(overlay)
    check_keys(extra, str(overlay), {"schema", "family", "recipes"}, {"tuned"})
    if extra["family"] != data["family"]:
        raise ConfigError(f"{overlay}: family: '{extra['family']}' is not the card's '{data['family']}'")
    check_keys(extra["recipes"], f"{overlay}: recipes")
    for name, r in extra["recipes"].items():
        if name in data["recipes"]:
            raise ConfigError(f"{overlay}: recipes.{name}: the card already defines a recipe of that name")
        validate(r, RecipeEntry, f"{overlay}: recipes.{name}")
    return {**data, "recipes": {**data["recipes"], **extra["recipes"]}, "tuned": dict(extra.get("tuned") or {})}


def all_cards() -> list[Card]:
    names = {p.stem for folder in card_folders() for p in folder.glob("*.yaml") if not p.name.endswith(".tuned.yaml")}
    return [load_card(n) for n in sorted(names)]
