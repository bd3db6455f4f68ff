"""`iaabench data verify` (iaabench.data.verify): every kind of problem a real dataset folder
has is found, reported with where it is, and decides `usable`."""
from __future__ import annotations

import json

import pytest

import fixtures_labels as F
from conftest import require_shared
from iaabench.data.verify import format_report, verify

KINDS = {"gray": "converted L to RGB", "cmyk": "converted CMYK to RGB", "png": "PNG content in a .jpg file",
         "truncated": "truncated", "empty": "empty file"}


@pytest.fixture
def ava_folder(tmp_path):
    """AVA with one image of each awkward kind, a missing image, a duplicate and a zero-vote row."""
    rows = F.ava_rows(16)
    rows[9][2:12] = [0] * 10
    dup = list(rows[10])
    dup[0] = 17
    ids = [r[1] for r in rows]
    kinds = {f"{ids[1]}.jpg": "gray", f"{ids[2]}.jpg": "cmyk", f"{ids[3]}.jpg": "png",
             f"{ids[4]}.jpg": "truncated", f"{ids[5]}.jpg": "empty"}
    F.write_ava(tmp_path, rows + [dup], ids[:6], image_ids=ids[:7] + ids[8:], image_kinds=kinds, eol="\r\n")
    return tmp_path, ids, kinds


def test_verify_reports_each_problem(ava_folder):
    root, ids, kinds = ava_folder
    r = verify("ava", root, threads=2)
    assert r["counts"] == {"train": 9, "test": 6}
    assert r["usable_counts"] == {"train": 8, "test": 4}
    assert r["missing_images"] == {"count": 1, "examples": [str(root / "images" / f"{ids[7]}.jpg")]}
    unreadable = {x["path"].rsplit("/", 1)[-1]: x["reason"] for x in r["unreadable_images"]["examples"]}
    assert set(unreadable) == {f"{ids[4]}.jpg", f"{ids[5]}.jpg"}
    assert KINDS["truncated"] in unreadable[f"{ids[4]}.jpg"] and KINDS["empty"] in unreadable[f"{ids[5]}.jpg"]
    converted = {x["path"].rsplit("/", 1)[-1]: x["note"] for x in r["converted_images"]["examples"]}
    for name in (f"{ids[1]}.jpg", f"{ids[2]}.jpg", f"{ids[3]}.jpg"):
        assert KINDS[kinds[name]] in converted[name]
    assert r["duplicates"]["count"] == 1 and r["duplicates"]["examples"][0]["where"].endswith("AVA.txt:17")
    assert r["skipped_rows"] == {"count": 1, "examples": [{"where": f"{root / 'AVA.txt'}:10",
                                                          "reason": "no votes (all ten counts are 0)"}]}
    assert set(r["label_files"]) == {"AVA.txt", "tags.txt", "challenges.txt",
                                     "aesthetics_image_lists/generic_test.jpgl"}
    assert r["parse_errors"] == [] and r["errors"] == [] and r["usable"] is True
    json.dumps(r)  # the CLI's --json
    text = format_report(r)
    for fragment in ("usable: yes", "missing images: 1", "unreadable images: 2", "truncated",
                     "images converted when decoded: 3", "duplicated ids (first kept): 1", "AVA.txt:10"):
        assert fragment in text


def test_verify_labels_only_decodes_nothing(ava_folder):
    root, _, _ = ava_folder
    r = verify("ava", root, labels_only=True)
    assert r["usable"] and r["usable_counts"] is None and r["missing_images"]["count"] == 0
    assert "labels only" in format_report(r)


def test_verify_collects_every_malformed_row(tmp_path):
    rows = [" ".join(map(str, r)) for r in F.ava_rows(10)]
    rows[2] = "3 1014 1 2"
    rows[6] = "7 1042 1 2 3 4 5 6 7 8 9 x 1 1 1"
    F.write_text(tmp_path / "AVA.txt", rows)
    F.write_text(tmp_path / "aesthetics_image_lists" / "generic_test.jpgl", ["1000"])
    r = verify("ava", tmp_path, labels_only=True)
    assert [e["where"] for e in r["parse_errors"]] == [f"{tmp_path / 'AVA.txt'}:3", f"{tmp_path / 'AVA.txt'}:7"]
    assert "expected 15 columns" in r["parse_errors"][0]["message"]
    assert r["counts"] == {"train": 7, "test": 1} and r["usable"] is False
    assert f"{tmp_path / 'AVA.txt'}:7: column 12" in format_report(r)


def test_verify_missing_label_file(tmp_path):
    r = verify("tad66k", tmp_path)
    assert r["usable"] is False and "merge/train.csv" in r["errors"][0]
    assert "error:" in format_report(r) and "usable: NO" in format_report(r)


def test_verify_wrong_label_file(tmp_path):
    F.write_text(tmp_path / "merge" / "train.csv", [" ".join(map(str, r)) for r in F.ava_rows(2)])
    F.write_text(tmp_path / "merge" / "test.csv", ["image,score", "a.jpg,5"])
    r = verify("tad66k", tmp_path, labels_only=True)
    assert r["usable"] is False and r["parse_errors"][0]["where"].endswith("merge/train.csv:1")
    assert "looks like AVA.txt" in r["parse_errors"][0]["message"]


def test_verify_no_usable_test_image(tmp_path):
    train = [("a.jpg", 5.0, "art"), ("b@N01.jpg", 6.0, "tree")]
    test = [("c.jpg", 4.0, "tree")]
    F.write_tad66k(tmp_path, train, test, image_kinds={"c.jpg": "empty"})
    r = verify("tad66k", tmp_path)
    assert r["usable_counts"] == {"train": 2, "test": 0} and r["usable"] is False
    assert r["themes"] == {"art": {"train": 1, "test": 0}, "tree": {"train": 1, "test": 1}}
    (tmp_path / "images" / "c.jpg").unlink()
    (tmp_path / "images" / "a.jpg").unlink()
    r = verify("tad66k", tmp_path)
    assert r["missing_images"]["count"] == 2 and r["usable"] is False


def test_verify_missing_image_folder(tmp_path):
    F.write_tad66k(tmp_path, [("a.jpg", 5.0, "art")], [("c.jpg", 4.0, "art")], images=False)
    r = verify("tad66k", tmp_path)
    assert r["usable"] is False and r["errors"] == [f"image folder not found: {tmp_path / 'images'}"]
    assert r["missing_images"]["count"] == 2
    assert verify("tad66k", tmp_path, labels_only=True)["usable"] is True


def test_verify_flickr(tmp_path):
    ratings = F.flickr_ratings(n_workers=40, n_images=30, per_image=3)
    F.write_flickr(tmp_path, ratings, image_kinds={ratings[0][1]: "png"})
    r = verify("flickr-aes", tmp_path, split="workers-random", test_workers=4)
    assert r["usable"] and sum(r["counts"].values()) == 30 and r["converted_images"]["count"] == 1
    assert len(r["manifest"]["test_workers"]) == 4


def test_verify_real_tad66k_labels():
    base = require_shared("data", "labels", "tad66k")
    r = verify("tad66k", base, labels_only=True)
    assert r["usable"] and r["counts"] == {"train": 52_248, "test": 14_079}
    assert len(r["themes"]) == 47 and "unthemed" not in r
    assert sum(v["test"] for v in r["themes"].values()) == 14_079
    assert len(r["label_files"]) == 2 + 2 * 47


def test_verify_on_a_synthetic_dataset_reports_every_bad_row(tmp_path):
    from iaabench.data.synthetic import make_synthetic

    make_synthetic("tad66k", tmp_path / "s", n=50, progress=False)
    train = tmp_path / "s" / "merge" / "train.csv"
    lines = train.read_bytes().split(b"\r\n")
    lines[2], lines[5] = b"x.jpg,high", b"y.jpg,99"
    train.write_bytes(b"\r\n".join(lines))
    r = verify("synth-tad66k", tmp_path / "s", labels_only=True)
    assert [e["where"] for e in r["parse_errors"]] == [f"{train}:3", f"{train}:6"] and not r["usable"]


def test_verify_reports_paths_outside_the_image_folder_and_images_in_two_splits(tmp_path):
    F.write_tad66k(tmp_path, [("b.jpg", 5.0, None), ("../x.jpg", 5.0, None), ("./a.jpg", 5.0, None)],
                   [("a.jpg", 6.0, None)], images=False, unmerge=False)
    F.write_images(tmp_path / "images", ["a.jpg", "b.jpg"])
    (tmp_path / "images" / "b.jpg").unlink()
    (tmp_path / "images" / "b.jpg").symlink_to(F.write_image(tmp_path / "x.jpg"))
    train = tmp_path / "merge" / "train.csv"
    r = verify("tad66k", tmp_path, threads=1)
    assert [x["where"] for x in r["outside_images"]["examples"]] == [f"{train}:3", f"{train}:2"]
    assert [e["where"] for e in r["parse_errors"]] == [f"{train}:4"]
    assert f"{tmp_path / 'merge' / 'test.csv'}:2" in r["parse_errors"][0]["message"] and not r["usable"]
    assert "images outside the image folder (skipped): 2" in format_report(r)
    r = verify("tad66k", tmp_path, threads=1, allow_external_images=True)
    assert r["outside_images"]["count"] == 0 and r["usable_counts"] == {"train": 2, "test": 1}


def test_allow_external_images_on_the_command_line(tmp_path):
    """`data verify --allow-external-images` and `run`/`eval`'s flag reach the loader (the
    plan's dataset options, so the record says so)."""
    from typer.testing import CliRunner

    from iaabench.cli import app
    from iaabench.commands import run as R

    F.write_tad66k(tmp_path, [("b.jpg", 5.0, None), ("../x.jpg", 5.0, None)], [("a.jpg", 6.0, None)],
                   images=False, unmerge=False)
    F.write_images(tmp_path / "images", ["a.jpg", "b.jpg"])
    F.write_image(tmp_path / "x.jpg")
    args = ["data", "verify", "--dataset", "tad66k", "--root", str(tmp_path), "--json"]
    counts = [json.loads(CliRunner().invoke(app, args + extra).stdout)["outside_images"]["count"]
              for extra in ([], ["--allow-external-images"])]
    assert counts == [1, 0]
    o = {name: opt.default for name, _, opt, _ in R.RUN_OPTIONS}
    o.update(model="nima", dataset="synth-tad66k", allow_external_images=True)
    assert R._plans(False, o)[0].dataset_options == {"allow_external_images": True}
