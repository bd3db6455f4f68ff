"""`iaabench predict` and `iaabench.load_scorer` on the six sample photos and on bad files:
every input is a row (ok or skipped with the training path's reason), scores come from the
recipe's test-time transforms, EXIF orientation is applied, and every bad input is one clear
message."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import iaabench
from iaabench.errors import ConfigError, IAAError, WeightsError
from iaabench.predict import _locate, collect_inputs, load_source, predict_files

from conftest import require_shared
from predict_fixtures import _run_folders, run  # noqa: F401  (fixtures: a saved run, its folders)
from predict_fixtures import SAMPLE_PHOTOS, bad_files


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "iaabench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_predict_scores_photos_and_marks_every_bad_file(run, tmp_path):
    photos = require_shared(*SAMPLE_PHOTOS)
    folder = tmp_path / "mixed"
    shutil.copytree(photos, folder / "photos")
    (folder / "notes.txt").write_text("not an image suffix: not an input\n")
    reasons = bad_files(folder / "bad", sorted(photos.glob("*.jpg"))[0])
    out, sheet = tmp_path / "scores.csv", tmp_path / "sheet.html"
    r = cli("predict", "--model", "nima", "--weights", str(run["best"]), str(folder), str(folder / "photos" / "*.jpg"),
            str(tmp_path / "missing.jpg"), "--out", str(out), "--html", str(sheet), "--device", "auto")
    assert r.returncode == 0, r.stderr
    assert "predict: 11/11 images" in r.stdout  # not a terminal: a plain progress line
    rows = _read(out)
    assert list(rows[0]) == ["path", "score"] + [f"dist_{i}" for i in range(1, 11)] + ["scale", "status"]
    # 6 photos (once each, though named by the folder and the glob) + 4 bad files + the missing one
    assert len(rows) == 11 and len({r["path"] for r in rows}) == 11
    by_name = {os.path.basename(r["path"]): r for r in rows}
    for name, reason in reasons.items():
        assert by_name[name]["status"].startswith(f"skipped: {reason}"), by_name[name]
        assert by_name[name]["score"] == ""
    assert by_name["missing.jpg"]["status"] == "skipped: missing"
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6 and all(r["scale"] == "1-10" for r in rows)
    scores = np.array([float(r["score"]) for r in ok])
    assert ((scores >= 1) & (scores <= 10)).all()
    assert len(set(scores.round(6))) > 1  # the photos get different scores
    for r in ok:  # the mean of the predicted distribution is the score
        d = np.array([float(r[f"dist_{i}"]) for i in range(1, 11)])
        assert d.sum() == pytest.approx(1, abs=1e-5)
        assert (d * np.arange(1, 11)).sum() == pytest.approx(float(r["score"]), abs=1e-4)
    page = sheet.read_text()
    assert page.count("data:image/jpeg;base64,") == 6 and "<script" not in page and "http" not in page
    best, worst = max(ok, key=lambda r: float(r["score"])), min(ok, key=lambda r: float(r["score"]))
    assert page.index(os.path.basename(best["path"])) < page.index(os.path.basename(worst["path"]))
    assert "too small" in page  # skipped files are on the sheet with their reason


def test_scores_match_the_evaluation_path(run, tmp_path):
    """predict's scores are evaluation's (same transforms, batch size and model output)."""
    from iaabench.data.samples import Sample
    from iaabench.evaluate import predict as evaluate
    from iaabench.predict import Scorer

    photos = sorted(require_shared(*SAMPLE_PHOTOS).glob("*.jpg"))
    src = load_source(run["best"], model="nima", dataset="synth-tad66k")
    rows = Scorer(src, device="cpu").score_files([str(p) for p in photos])
    preds, failed = evaluate(src.model, [Sample(p.stem, p, 5.0) for p in photos], src.spec, src.batch_size,
                             scale_max=10.0)
    assert not failed and src.batch_size == 4  # the recipe's evaluation batch size
    np.testing.assert_allclose([r.score for r in rows], preds.pred, rtol=0, atol=1e-9)
    np.testing.assert_allclose([r.dist for r in rows], preds.pred_dist, rtol=0, atol=1e-9)


def test_weights_may_be_a_record_a_run_id_or_a_run_folder(run, tmp_path):
    photos = require_shared(*SAMPLE_PHOTOS)
    ref = predict_files(run["best"], [photos], tmp_path / "a.csv", model="nima", dataset="synth-tad66k")
    s = predict_files(run["record"]["run_id"], [photos], tmp_path / "b.csv")  # model and dataset from the record
    assert (s["model"], s["dataset"], s["head"]) == ("nima", "synth-tad66k", "dist")
    assert s["weights"] == ref["weights"] == str(run["best"])
    assert _read(tmp_path / "a.csv") == _read(tmp_path / "b.csv")
    for ref in (run["record_path"], run["run_dir"], run["run_dir"].name):  # a record, a run folder or its name
        path, rpath, rec = _locate(str(ref))
        assert (path, rpath, rec["run_id"]) == (run["best"], run["record_path"], run["record"]["run_id"])


def test_a_record_without_checkpoint_fields_finds_its_run_or_says_what_to_pass(run, tmp_path):
    old = {k: v for k, v in run["record"].items() if k not in ("checkpoint", "last_checkpoint")}
    folder = tmp_path / "results" / "synth-tad66k" / "nima"
    folder.mkdir(parents=True)
    # an older record whose run folder's `done` file names it: found through the run folder
    (folder / "old.json").write_text(json.dumps(old))
    done = run["run_dir"] / "done"
    saved = done.read_text()
    try:
        done.write_text(str(folder / "old.json") + "\n")
        assert load_source(folder / "old.json").weights_path == run["best"]
    finally:
        done.write_text(saved)
    (folder / "orphan.json").write_text(json.dumps(old))
    with pytest.raises(WeightsError, match="names no checkpoint") as e:
        load_source(folder / "orphan.json")
    assert "best.pt" in e.value.hint
    gone = {**run["record"], "checkpoint": "synth-tad66k/nima/key/elsewhere/best.pt"}
    (folder / "gone.json").write_text(json.dumps(gone))
    with pytest.raises(WeightsError, match="is not on this machine"):
        load_source(folder / "gone.json")


def test_exif_orientation_is_applied(run, tmp_path):
    rng = np.random.default_rng(1)
    px = rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)
    px[:, :20] = 255  # an asymmetric picture: rotating it changes what the model sees
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(px).save(tmp_path / "sideways.jpg", exif=exif.tobytes(), quality=95)
    upright = Image.open(tmp_path / "sideways.jpg")
    upright = upright.transpose(Image.Transpose.ROTATE_270)
    upright.save(tmp_path / "upright.png")
    Image.open(tmp_path / "sideways.jpg").save(tmp_path / "as-stored.png")
    predict_files(run["best"], [tmp_path / "sideways.jpg", tmp_path / "upright.png", tmp_path / "as-stored.png"],
                  tmp_path / "s.csv", model="nima", dataset="synth-tad66k", batch_size=1)
    s = [float(r["score"]) for r in _read(tmp_path / "s.csv")]
    assert s[0] == pytest.approx(s[1], abs=1e-9)
    assert s[0] != pytest.approx(s[2], abs=1e-6)


def test_load_scorer_takes_pil_images_and_tensors(run, tmp_path):
    photos = sorted(require_shared(*SAMPLE_PHOTOS).glob("*.jpg"))
    scorer = iaabench.load_scorer(run["best"], model="nima", dataset="synth-tad66k", device="cpu")
    expected = np.array([r.score for r in scorer.score_files([str(p) for p in photos])])
    ims = [Image.open(p).convert("RGB") for p in photos]
    np.testing.assert_allclose(scorer(ims), expected, rtol=0, atol=1e-9)
    tensors = [torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in ims]
    np.testing.assert_allclose(scorer(tensors), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(scorer([t.float() / 255 for t in tensors]), expected, rtol=0, atol=1e-9)
    assert scorer(ims[0]).shape == (1,) and scorer.scale == (1.0, 10.0)
    with pytest.raises(ConfigError, match=r"expected a \(C, H, W\) tensor"):
        scorer([torch.zeros(5, 8, 8)])


def test_folder_without_images_is_a_clear_message(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
    with pytest.raises(IAAError, match="no images in folder"):
        collect_inputs([tmp_path / "empty"])
    with pytest.raises(IAAError, match="no images in pattern"):
        collect_inputs([str(tmp_path / "*.jpg")])


def test_bad_weights_are_clear_messages(run, tmp_path):
    with pytest.raises(ConfigError, match="holds weights of model 'nima'"):  # the record says which model
        load_source(run["record_path"], model="hyperiqa")
    with pytest.raises(ConfigError, match="holds weights of model 'nima'"):  # so does the run folder's record
        load_source(run["best"], model="hyperiqa")
    lone = tmp_path / "lone.pt"
    shutil.copy(run["best"], lone)  # a checkpoint outside its run folder: nothing says model or dataset
    with pytest.raises(WeightsError, match="does not fit") as e:  # a checkpoint of another model
        load_source(lone, model="tanet-per-sample", dataset="synth-tad66k")
    assert "another model" in e.value.hint
    with pytest.raises(ConfigError, match="pass --dataset"):
        load_source(lone, model="nima")
    with pytest.raises(ConfigError, match="pass --model"):
        load_source(lone)
    with pytest.raises(WeightsError, match="no such weight file, record, run id"):
        load_source(tmp_path / "nowhere.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="junk.pt"):  # weights.safe_load's message, naming the file
        load_source(tmp_path / "junk.pt", model="nima", dataset="synth-tad66k")


def test_cli_bad_input_is_one_message_without_traceback(run, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("predict", "--model", "nima", "--weights", str(run["best"]), str(tmp_path / "empty"),
            "--out", str(tmp_path / "s.csv"))
    assert r.returncode != 0 and "no images in folder" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.csv").exists()
