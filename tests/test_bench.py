"""`run_bench` measures every phase and writes a record; the performance page is generated from
the records and says the GPU numbers are not measured yet when there is no GPU record.
(Speed itself is measured by `iaabench bench`, never asserted in a unit test.)"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from iaabench import cards, registry
from iaabench.bench import TARGETS, read_bench_records, run_bench, write_performance_page
from iaabench.data.samples import DatasetSplits, Sample
from iaabench.models.base import IAAModel

CARD = """
schema: 1
family: benchtiny
title: "A tiny model for the benchmark's tests"
paper: {authors: "-", venue: "-", url: "https://example.org"}
variants:
  bench-tiny: {description: "one convolution"}
recipes:
  quick:
    optimizer: {name: adam, weight_decay: 0.0}
    lr: {all: 1.0e-3}
    schedule: {name: none}
    epochs: 1
    batch_size: 4
    eval_batch_size: 5
    loss: mse
    transforms:
      train: {resize: [40, 40], crop: 32, flip: true}
      test: {resize: [32, 32]}
recipe_for: {bench-unit: quick}
"""


class Tiny(IAAModel):
    head = "score"
    input_size = 32

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.conv(x).mean((2, 3))))


def _images(folder: Path, n: int) -> list[Sample]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(p)
        out.append(Sample(str(i), p, float(rng.uniform(1, 10))))
    return out


@pytest.fixture
def registered(tmp_path, monkeypatch):
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "benchtiny.yaml").write_text(CARD)
    monkeypatch.setattr(cards, "cards_dir", lambda: tmp_path / "cards")
    cards.load_card.cache_clear()
    samples = _images(tmp_path / "img", 30)

    def load(root=None, split="s", **kw):
        return DatasetSplits("bench-unit", (1.0, 10.0), "s", {"train": samples[:22], "test": samples[22:]},
                             {"split": "s"}, {"labels.csv": "0" * 64}, root=tmp_path)

    monkeypatch.setitem(registry._MODELS, "bench-tiny",
                        registry.ModelInfo("bench-tiny", "benchtiny", "-", lambda head, pretrained, **kw: Tiny(),
                                           ("score",)))
    monkeypatch.setitem(registry._DATASETS, "bench-unit",
                        registry.DatasetInfo("bench-unit", load, ("s",), (1.0, 10.0), False))
    yield tmp_path
    cards.load_card.cache_clear()


def test_run_bench_writes_a_record_with_every_measurement(registered):
    logs = []
    rec = run_bench("bench-tiny", "bench-unit", steps=3, warmup=1, workers=0, out_dir=registered / "bench",
                    cache_root=registered / "cache", log=logs.append)
    assert set(rec["results"]) == {"cache_build", "data", "model_step", "train", "eval", "reference_data",
                                   "reference_train"}
    for phase, r in rec["results"].items():
        assert r["images_per_s"] > 0, phase
    assert rec["results"]["train"]["images"] == 3 * 4 and rec["results"]["eval"]["images"] == 3 * 5
    assert rec["results"]["data"]["peak_rss_bytes"] > 0
    assert set(rec["ratios"]) == {"data_vs_reference", "train_vs_reference", "cache_build_vs_reference"}
    names = {"reference": "reference_data", "cache_build": "cache_build", "cached": "data", "train": "train",
             "eval": "eval"}
    for name, phase in names.items():  # the headline figures, under the names issue 20 gives them
        assert rec[f"{name}_images_per_s"] == rec["results"][phase]["images_per_s"] > 0
    assert (rec["images"]["mean_width"], rec["images"]["mean_height"]) == (56, 48)
    assert rec["images"]["mean_bytes"] > 0 and rec["images"]["photo"] is False
    assert rec["device"]["kind"] == "cpu" and rec["device"]["cpu_cores"] >= 1
    assert rec["command"] == "iaabench bench --model bench-tiny --dataset bench-unit --device cpu --steps 3"
    assert rec["cache"]["train"]["built"] and rec["cache"]["train"]["size"] == [40, 40]
    saved = json.loads(Path(rec["path"]).read_text())
    assert saved["results"] == rec["results"] and saved["model"] == "bench-tiny"
    assert any("vs reference" in m for m in logs)

    again = run_bench("bench-tiny", "bench-unit", steps=2, warmup=0, workers=0, out_dir=registered / "bench",
                      cache_root=registered / "cache", reference=False, log=logs.append)
    assert again["cache"]["train"]["reused"] and "cache_build" not in again["results"]
    assert again["ratios"] == {} and len(read_bench_records(registered / "bench")) == 2


def test_the_performance_page_is_generated_from_the_records(registered):
    rec = run_bench("bench-tiny", "bench-unit", steps=2, warmup=0, workers=0, out_dir=registered / "bench",
                    cache_root=registered / "cache", log=lambda m: None, command="custom command --x 1")
    page = write_performance_page(registered / "bench", out=registered / "performance.md").read_text()
    assert "Generated by `iaabench bench`" in page
    assert "GPU numbers: **not measured yet.**" in page
    assert "| bench-tiny | bench-unit (quick) |" in page and "`custom command --x 1`" in page
    assert rec["date"][:10] in page and f"{rec['results']['train']['images_per_s']:,.0f}" in page
    for t in TARGETS:
        if t["device"] == "cuda":
            assert f"| {t['what']} |" in page and "not measured yet" in page

    # A GPU record (made up here only to check the page's logic) fills the GPU section and targets.
    gpu = json.loads(Path(rec["path"]).read_text())
    gpu.update(model="nima", date="2099-01-01T00:00:00Z", command="scripts/gpu_bench.sh")
    gpu["device"] = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 1, "cpu": "x", "cpu_cores": 16}
    gpu["results"]["train"]["images_per_s"] = 4600.0
    gpu["results"]["eval"]["images_per_s"] = 4000.0
    (registered / "bench" / "gpu.json").write_text(json.dumps(gpu))
    page = write_performance_page(registered / "bench", out=registered / "performance.md").read_text()
    assert "not measured yet.**" not in page and "NVIDIA H100 80GB HBM3" in page
    rows = {line.split(" | ")[0].lstrip("| "): line for line in page.splitlines() if line.startswith("| ")}
    assert "| met |" in rows["NIMA-MobileNetV2 training, end to end from JPEG files"]
    assert "| not met |" in rows["MobileNet-class evaluation (NIMA-MobileNetV2), end to end"]
    assert "| not measured yet |" in rows["TANet training, end to end from JPEG files"]


def test_data_only_measures_the_two_data_paths(registered):
    rec = run_bench("bench-tiny", "bench-unit", steps=2, warmup=0, workers=0, out_dir=registered / "bench",
                    cache_root=registered / "cache", data_only=True, log=lambda m: None)
    assert set(rec["results"]) == {"cache_build", "data", "reference_data"}
    assert set(rec["ratios"]) == {"data_vs_reference", "cache_build_vs_reference"}
    assert rec["command"].endswith("--data-only") and rec["train_images_per_s"] is None
    page = write_performance_page(registered / "bench", out=registered / "performance.md").read_text()
    assert "| bench-tiny (data only) | bench-unit (quick) |" in page


def test_photo_records_get_their_own_rows_and_targets(registered):
    rec = run_bench("bench-tiny", "bench-unit", steps=2, warmup=0, workers=0, out_dir=registered / "bench",
                    cache_root=registered / "cache", data_only=True, log=lambda m: None)
    photo = json.loads(Path(rec["path"]).read_text())
    photo["images"].update(photo=True, mean_width=800, mean_height=600, mean_bytes=91000)
    photo["images"]["jpeg"].update(mean_width=800, mean_height=600, mean_bytes=91000)
    photo["device"]["cpu_cores"] = 2
    photo["results"]["cache_build"]["images_per_s"] = 2 * photo["results"]["reference_data"]["images_per_s"]
    photo["ratios"]["cache_build_vs_reference"] = 2.0
    (registered / "bench" / "photo.json").write_text(json.dumps(photo))
    page = write_performance_page(registered / "bench", out=registered / "performance.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| bench-tiny (data only)")]
    assert len(rows) == 2 and "800x600, 91 KB (photo)" in rows[1] and "(photo)" not in rows[0]
    target = next(line for line in page.splitlines() if line.startswith("| Cache build vs reference data path"))
    assert "2.00x" in target and "| met |" in target
    assert "Photo-size images on a GPU (`iaabench bench --photo`): **not measured yet**" in page


def test_photo_dataset_is_generated_once(tmp_path, monkeypatch):
    from iaabench import bench
    from iaabench.errors import IAAError

    monkeypatch.setenv("IAABENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "PHOTO_LONG_SIDE", 256)
    logs = []
    first = bench.photo_dataset("synth-tad66k", 50, logs.append)
    assert len(logs) == 1 and "photo-size" in logs[0]
    assert json.loads((first / "synthetic_card.json").read_text())["long_side"] == 256
    assert bench.photo_dataset("synth-tad66k", 50, logs.append) == first and len(logs) == 1
    with pytest.raises(IAAError, match="--photo needs a synthetic dataset"):
        bench.photo_dataset("tad66k", 50)
