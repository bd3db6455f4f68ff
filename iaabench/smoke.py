"""The smoke test: every registered model learns on the synthetic CPU quick recipe.

Each registered model's card gives a quick recipe for `synth-tad66k` (the default, CPU-sized
dataset); trained with it, a model must reach a test SRCC above `SMOKE_SRCC`. The committed
smoke records (`results/synth-tad66k/<model>/`, made by `iaabench sweep --datasets synth-tad66k`)
are checked by `iaabench check`: their metrics are recomputed from their predictions like every
record's, and `smoke_status` fails a model whose record is below the bar. A model that cannot
learn there says why in its card (the variant's `smoke:` key, a sentence); it is then left out of
the table's synthetic section. A constant predictor (`constant_predictions`, the floor row) has
no SRCC by design and is listed as such. A model with no smoke record yet is listed as not run (a warning,
not a failure: some models take hours on a CPU), and so is one whose records were made with another plan
than the card gives today (a recipe edited since: "stale", compared by plan key).
"""
from __future__ import annotations

import math

SMOKE_DATASET = "synth-tad66k"
SMOKE_SRCC = 0.2


def excused(model: str) -> str | None:
    """The card's reason why `model` cannot learn on the smoke recipe, or None."""
    from .cards import load_card
    from .errors import IAAError
    from .registry import model_info

    try:
        reason = (load_card(model_info(model).family).variants.get(model) or {}).get("smoke")
    except IAAError:  # a record of a model this iaabench does not register
        return None
    return str(reason) if reason else None


def smoke_recipe(model: str) -> str:
    from .cards import load_card
    from .protocol import load_protocol
    from .registry import model_info

    default = load_protocol().dataset(SMOKE_DATASET).recipe
    return load_card(model_info(model).family).recipe_name_for(SMOKE_DATASET, model, default)


def smoke_status(frame=None) -> list[tuple[str, str, bool | None]]:
    """(model, what its smoke records say, passed) for every registered model: True above the bar,
    False below it (or undefined) without an excuse, None when not run or excused."""
    from .registry import list_models, probe_model
    from .results import frame as results_frame

    df = results_frame() if frame is None else frame
    out = []
    for model in list_models():
        reason = excused(model)
        if reason:
            out.append((model, f"excused by its card: {reason}", None))
            continue
        if getattr(probe_model(model), "constant_predictions", False):  # the floor (`constant`): nothing to rank
            out.append((model, "predicts one value by design: SRCC is undefined (the table's floor row)", None))
            continue
        recipe = smoke_recipe(model)
        rows = df[(df["model"] == model) & (df["dataset"] == SMOKE_DATASET) & (df["mode"] == "trained")
                  & (df["recipe"] == recipe) & (df["metric"] == "srcc")] if len(df) else df
        if not len(rows):
            out.append((model, f"not run: `iaabench run --model {model} --dataset {SMOKE_DATASET}` "
                               f"(recipe {recipe}) has no committed record", None))
            continue
        stale = [r for r in rows.itertuples() if not _is_current(model, r)]
        rows = rows.drop(index=[r.Index for r in stale])
        if not len(rows):
            out.append((model, f"stale: its {len(stale)} record(s) of recipe {recipe} were made with another "
                               f"recipe content or options than the card's current one: re-run "
                               f"`iaabench run --model {model} --dataset {SMOKE_DATASET}`", None))
            continue
        values = [float(v) if v is not None else math.nan for v in rows["value"]]
        worst = min(values, key=lambda v: (not math.isnan(v), v))
        good = not math.isnan(worst) and worst > SMOKE_SRCC
        seeds = ", ".join(str(s) for s in rows["seed"])
        out.append((model, f"SRCC {worst:.3f} (lowest of seed(s) {seeds}, recipe {recipe}); the bar is > {SMOKE_SRCC}",
                    good))
    return out


def _is_current(model: str, row) -> bool:
    """The record was made with the plan the card gives today (same recipe content, default
    dataset size and split, its seed): a recipe edited since leaves its old records behind."""
    import json
    from pathlib import Path

    from .plan import resolve

    try:
        made = json.loads(Path(row.path).read_text(encoding="utf-8")).get("plan_key")
    except (OSError, ValueError):
        return False
    return made == resolve(model=model, dataset=SMOKE_DATASET, seed=int(row.seed)).key()
