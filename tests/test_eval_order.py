"""Batch-coupled models: the record's metrics are the file order's; random orders and batch
size 1 are reported beside them (iaabench/eval_orders.py), and the table notes the spread."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from iaabench import cards
from iaabench.data.batches import make_source
from iaabench.data.pipeline import TransformSpec
from iaabench.data.samples import Sample
from iaabench.errors import ConfigError
from iaabench.eval_orders import ORDER_SEEDS, OrderedSource, evaluation_orders, order_note, random_order
from iaabench.evaluate import predict, score_predictions
from iaabench.models.base import IAAModel, InputSpec

SPEC = TransformSpec(resize=(8, 8))


class Coupled(IAAModel):
    """Each image's score is its own brightness plus the mean brightness of its batch (a batch
    mean, as EAT's interest points), so predictions depend on the batch's other images."""

    batch_dependent = True
    input = InputSpec(size=8)

    def __init__(self, refuse_one: bool = False):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -3.0]))
        self.refuse_one = refuse_one

    def forward(self, x):
        if self.refuse_one and x.shape[0] < 2:
            raise ConfigError("this model cannot predict a batch of one image")
        f = x.mean((1, 2, 3))
        return torch.sigmoid(self.w[0] * f + self.w[1] * f.mean())


def _images(tmp_path, n=24):
    """Sorted by theme (as TAD66K's test.csv): the file order's batches hold one theme each."""
    from PIL import Image

    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        theme = "dark" if i < n // 2 else "bright"
        level = rng.integers(0, 100) + (0 if theme == "dark" else 150)
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8, 3), level, dtype=np.uint8)).save(path)
        out.append(Sample(str(i), path, float(level) / 25.5, theme=theme))
    return out


def test_random_orders_are_seeded_permutations():
    assert sorted(random_order(10, 3)) == list(range(10))
    assert random_order(10, 3) == random_order(10, 3) != random_order(10, 4)


@pytest.mark.parametrize("fast", [False, True])
def test_an_ordered_source_gives_each_image_the_same_tensor(tmp_path, fast, monkeypatch):
    monkeypatch.setenv("IAABENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path)
    src = make_source(samples, TransformSpec(resize=(12, 12), crop=8, crops=2), 5, train=False, fast=fast,
                      cache_key={"dataset": "t"})
    by_file = {int(i): x for b in src.epoch(0) for i, x in zip(b.index, b.x)}
    order = random_order(len(samples), 0)
    batches = list(OrderedSource(src, order, 5, min_last=2).epoch(0))
    assert [int(i) for b in batches for i in b.index] == order  # the given order, in batches of 5 (last: 4)
    assert [len(b.index) for b in batches] == [5, 5, 5, 5, 4]
    for b in batches:  # the same decoded pixels and seeded test crops, wherever the image sits
        assert b.image_id == [samples[int(i)].image_id for i in b.index]
        for i, x in zip(b.index, b.x):
            assert torch.equal(x, by_file[int(i)])


def test_file_order_is_the_result_and_the_other_orders_are_beside_it(tmp_path):
    samples, model = _images(tmp_path), Coupled()
    src = make_source(samples, SPEC, 4, train=False, min_last=2)
    preds, _ = predict(model, src, scale_max=10.0)
    metrics, _ = score_predictions(preds, ["srcc", "plcc"], scale_max=10.0, threshold=5.0, n_boot=10)
    orders = evaluation_orders(model, src, metrics, ["srcc", "plcc"], scale_max=10.0, threshold=5.0)
    assert orders["file_order"] == {"batch_size": 4, "metrics": {m: metrics[m]["value"] for m in ("srcc", "plcc")}}
    rand = orders["random_orders"]
    assert rand["seeds"] == list(ORDER_SEEDS) and rand["batch_size"] == 4
    values = rand["srcc"]["values"]
    assert len(values) == 5 and rand["srcc"]["mean"] == pytest.approx(np.mean(values))
    assert rand["srcc"]["sd"] == pytest.approx(np.std(values, ddof=1)) and rand["srcc"]["sd"] > 0
    # one-theme batches (file order) rank differently from mixed ones: the coupling is visible
    assert all(v != pytest.approx(metrics["srcc"]["value"]) for v in values)
    # batch size 1: each image alone, i.e. the model's forward on one image at a time
    with torch.no_grad():
        alone = np.array([float(model(b.x[:, 0])) * 10.0 for b in make_source(samples, SPEC, 1, train=False).epoch(0)])
    from scipy.stats import spearmanr

    want = spearmanr(alone, [s.score for s in samples])[0]
    assert orders["batch_size_1"]["metrics"]["srcc"] == pytest.approx(want)
    # the same orders again: the same numbers (seeded)
    again = evaluation_orders(model, src, metrics, ["srcc", "plcc"], scale_max=10.0, threshold=5.0)
    assert again == orders


def test_a_model_that_cannot_predict_one_image_says_why(tmp_path):
    samples, model = _images(tmp_path), Coupled(refuse_one=True)
    src = make_source(samples, SPEC, 4, train=False, min_last=2)
    preds, _ = predict(model, src, scale_max=10.0)
    metrics, _ = score_predictions(preds, ["srcc"], scale_max=10.0, threshold=5.0, n_boot=10)
    orders = evaluation_orders(model, src, metrics, ["srcc"], scale_max=10.0, threshold=5.0, seeds=(0, 1))
    assert "batch of one" in orders["batch_size_1"]["undefined"]
    assert len(orders["random_orders"]["srcc"]["values"]) == 2
    # a source that cannot be cut in another order (cached features): said, never fatal to the run
    from iaabench.data.batches import BatchSource

    class Features(BatchSource):
        pass

    other = evaluation_orders(model, Features(samples, 4, train=False), metrics, ["srcc"], scale_max=10.0,
                              threshold=5.0)
    assert other == {"undefined": "a Features cannot be re-batched in another order"}


def test_the_table_note_shows_the_spread(tmp_path):
    import json

    entry = {"random_orders": {"seeds": [0, 1, 2, 3, 4], "batch_size": 40,
                               "srcc": {"mean": 0.5123, "sd": 0.0042, "values": [0.5] * 5}},
             "batch_size_1": {"metrics": {"srcc": 0.507}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"evaluation_orders": entry}))
    note = order_note([str(path)], "srcc")
    assert note == "srcc: batch-coupled, file order shown; 5 random orders 0.512 ± 0.004 (sd), batch size 1 0.507"
    assert order_note([str(path)], "plcc") == ""
    plain = tmp_path / "p.json"
    plain.write_text(json.dumps({"evaluation_orders": None}))
    assert order_note([str(plain)], "srcc") == ""


MODEL_SRC = '''
from iaabench.registry import register_model
from test_eval_order import Coupled


@register_model("{name}", family="{name}", paper="none: a test model", heads=("score",))
def build(head="score", pretrained="default"):
    return Coupled()
'''


@pytest.mark.slow
def test_a_run_of_a_batch_coupled_model_records_its_orders_and_the_table_notes_them(tmp_path, monkeypatch):
    import importlib
    import sys

    from iaabench import registry
    from iaabench.plan import resolve
    from iaabench.runner import execute
    from iaabench.table import cell_frame

    name = "coupledtoy"
    card = {"schema": 1, "family": name, "title": "toy", "paper": "none", "variants": {name: {"description": "toy"}},
            "recipes": {"quick": {"optimizer": {"name": "adam"}, "lr": {"all": 1.0e-3}, "epochs": 0, "batch_size": 4,
                                  "eval_batch_size": 4, "loss": "mse", "transforms": {"test": {"resize": [8, 8]}}}}}
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / f"{name}.yaml").write_text(yaml.safe_dump(card))
    monkeypatch.setenv(cards.CARDS_ENV, str(tmp_path / "cards"))
    monkeypatch.setenv("IAABENCH_RUNS", str(tmp_path / "runs"))
    cards.load_card.cache_clear()
    (tmp_path / f"{name}_module.py").write_text(MODEL_SRC.replace("{name}", name))
    sys.path[:0] = [str(tmp_path), str(__import__("pathlib").Path(__file__).parent)]
    try:
        importlib.import_module(f"{name}_module")
        plan = resolve(model=name, dataset="synth-tad66k", dataset_options={"n": 60}, train=False,
                       eval_precision="bf16", results_root=tmp_path / "results")
        rec, path = execute(plan, log=lambda *a: None)
        assert rec["provenance"]["evaluation"]["precision"] == "bf16"  # asked for, and recorded (#15 item 9)
        resize = rec["provenance"]["resize"]  # and the resize filters the run used (#15 item 10)
        assert resize["test"] == plan.recipe["test_transforms"]["interpolation"] and resize["implementation"]
        orders = rec["evaluation_orders"]
        assert orders["file_order"]["metrics"]["srcc"] == rec["metrics"]["srcc"]["value"]
        assert orders["random_orders"]["srcc"]["sd"] is not None and "metrics" in orders["batch_size_1"]
        # the table leaves runs on resized synthetic data out: present this one as a run on synth-tad66k itself
        import json

        path.write_text(json.dumps({**json.loads(path.read_text()), "dataset_options": {}}))
        cells, _ = cell_frame(tmp_path / "results", include_dirty=True, runs=[path.stem])
        (note,) = cells[cells["metric"] == "srcc"]["note"]
        assert "srcc: batch-coupled, file order shown; 5 random orders" in note
    finally:
        sys.path[:] = [p for p in sys.path if p not in (str(tmp_path),)]
        registry._MODELS.pop(name, None)
        cards.load_card.cache_clear()
