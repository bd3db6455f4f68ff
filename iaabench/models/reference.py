"""Reference-only models: the published numbers of models that cannot run here.

A card with `reference_only: true` (e.g. `baselines/vila.yaml`) has variants with reported
numbers (split and source, as every card's) and no recipes. Each variant is registered here as
a model that `iaabench models` lists as reference-only and the leaderboard shows as reported
only; building, planning or running it is a clear error naming the card.
"""
from __future__ import annotations

from ..cards import card_folders, load_card
from ..config import read_yaml
from ..registry import register_model


def reference_cards() -> list[str]:
    """The families whose card (in any card folder) says `reference_only: true`."""
    found = []
    for folder in card_folders():
        for path in sorted(folder.glob("*.yaml")):
            if path.name.endswith(".tuned.yaml") or path.stem in found:
                continue
            data = read_yaml(path)
            if isinstance(data, dict) and data.get("reference_only") is True:
                found.append(path.stem)
    return found


def register_card(family: str) -> list[str]:
    """Register every variant of reference-only card `family`; returns their names."""
    card = load_card(family)
    paper = card.data["paper"]
    cite = paper if isinstance(paper, str) else f"{paper.get('authors', '')}, {paper.get('venue', '')}".strip(", ")
    names = []
    for name, variant in card.variants.items():
        def builder(*args, _name=name, **kwargs):
            load_card(family).refuse_reference_only(_name)

        register_model(name, family=family, paper=f"{card.title} ({cite})", heads=(),
                       description=(variant or {}).get("description", ""), reference_only=True)(builder)
        names.append(name)
    return names


for _family in reference_cards():
    register_card(_family)
