"""The real-dataset loaders (AVA, TAD66K, FLICKR-AES) on generated label files in the published
formats, with each quirk of the real files, and on the real label files in ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import fixtures_labels as F
from conftest import require_shared
from iaabench.api import load_dataset
from iaabench.data import ava, flickr_aes, tad66k
from iaabench.data import labels as L
from iaabench.errors import ConfigError, DatasetNotFoundError, LabelFileError, UnknownNameError
from iaabench.registry import dataset_info


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and mtime: loaders must not write there."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def mean_rating(votes) -> float:
    return sum((i + 1) * c for i, c in enumerate(votes)) / sum(votes)


# ============================================================================== AVA


@pytest.fixture
def ava_root(tmp_path):
    rows = F.ava_rows(30)
    F.write_ava(tmp_path / "ava", rows, [r[1] for r in rows[:8]] + [99999999])
    return tmp_path / "ava", rows


def test_ava_official_split(ava_root):
    root, rows = ava_root
    before = snapshot(root)
    d = ava.load(root)
    assert d.counts() == {"train": 22, "test": 8}
    assert [s.image_id for s in d.splits["test"]] == [str(r[1]) for r in rows[:8]]
    s = d.splits["train"][0]
    r = rows[8]
    assert s.votes == tuple(r[2:12]) and s.score == pytest.approx(mean_rating(r[2:12]))
    assert s.path == root / "images" / f"{r[1]}.jpg"
    names = {0: None, 1: "Abstract", 2: "Black and White", 3: "Nature"}
    assert s.extra["tags"] == tuple(names[t] for t in r[12:14] if t)
    assert s.extra["challenge"] == {1: "100_Meters", 2: "Fish Eye", 3: "1970s"}[r[14]]
    assert d.manifest["name"] == "official"
    assert set(d.manifest["files"]) == {"AVA.txt", "aesthetics_image_lists/generic_test.jpgl"}
    assert d.manifest["test_list_ids_not_in_labels"] == 1
    assert set(d.label_files) == {"AVA.txt", "tags.txt", "challenges.txt", "aesthetics_image_lists/generic_test.jpgl"}
    assert d.scale == (1.0, 10.0) and d.skipped == [] and d.root == root
    assert snapshot(root) == before  # nothing written into the dataset folder


@pytest.mark.parametrize("eol,bom,trailing", [("\n", False, 0), ("\r\n", True, 3), ("\r", False, 1),
                                              ("\r\n", False, 0)])
def test_ava_line_ends_bom_and_blank_lines(tmp_path, eol, bom, trailing):
    rows = F.ava_rows(12)
    F.write_ava(tmp_path, rows, [rows[0][1], rows[1][1]], eol=eol, bom=bom, trailing_blank=trailing)
    d = ava.load(tmp_path, cache=False)
    assert d.counts() == {"train": 10, "test": 2}
    assert [s.score for s in d.splits["train"]] == pytest.approx([mean_rating(r[2:12]) for r in rows[2:]])


def test_ava_names_optional(tmp_path):
    rows = F.ava_rows(5)
    F.write_ava(tmp_path, rows, [rows[0][1]], names=False)
    s = ava.load(tmp_path).splits["test"][0]
    assert s.extra["tags"] == tuple(t for t in rows[0][12:14] if t) and s.extra["challenge"] == rows[0][14]


def test_ava_zero_votes_skipped_or_strict(tmp_path):
    rows = F.ava_rows(10)
    rows[4][2:12] = [0] * 10
    F.write_ava(tmp_path, rows, [rows[0][1]])
    d = ava.load(tmp_path)
    assert d.counts() == {"train": 8, "test": 1}
    assert [(k.where, k.reason) for k in d.skipped] == [(f"{tmp_path / 'AVA.txt'}:5", L.NO_VOTES)]
    with pytest.raises(LabelFileError) as e:
        ava.load(tmp_path, strict=True)
    assert e.value.line == 5 and "no votes" in str(e.value)


def test_ava_duplicate_ids_first_kept(tmp_path):
    rows = F.ava_rows(6)
    dup = list(rows[2])
    dup[2:12] = [1] * 10
    F.write_ava(tmp_path, rows + [dup], [rows[0][1]])
    d = ava.load(tmp_path)
    assert d.counts() == {"train": 5, "test": 1}
    kept = next(s for s in d.splits["train"] if s.image_id == str(rows[2][1]))
    assert kept.votes == tuple(rows[2][2:12])
    assert len(d.skipped) == 1 and d.skipped[0].reason.startswith(L.DUPLICATE)
    assert d.skipped[0].where.endswith("AVA.txt:7") and "AVA.txt:3" in d.skipped[0].reason


def test_ava_missing_images(tmp_path):
    rows = F.ava_rows(10)
    F.write_ava(tmp_path, rows, [rows[0][1], rows[1][1]], image_ids=[r[1] for r in rows if r is not rows[3]])
    d = ava.load(tmp_path)
    assert d.counts() == {"train": 7, "test": 2}
    expected = str(tmp_path / "images" / f"{rows[3][1]}.jpg")
    assert [(k.where, k.reason) for k in d.skipped] == [(expected, L.MISSING_IMAGE)]
    with pytest.raises(DatasetNotFoundError, match=f"{rows[3][1]}.jpg"):
        ava.load(tmp_path, strict=True)
    assert ava.load(tmp_path, require_images=False).counts() == {"train": 8, "test": 2}


def test_ava_image_name_case_is_tolerated(tmp_path):
    rows = F.ava_rows(4)
    F.write_ava(tmp_path, rows, [rows[0][1]], image_ids=[])
    F.write_images(tmp_path / "images", [f"{r[1]}.JPG" for r in rows])
    d = ava.load(tmp_path)
    assert d.counts() == {"train": 3, "test": 1} and d.splits["test"][0].path.name == f"{rows[0][1]}.JPG"


def test_ava_wrong_image_folder_is_an_error(tmp_path):
    rows = F.ava_rows(4)
    F.write_ava(tmp_path, rows, [rows[0][1]], image_ids=[])
    (tmp_path / "images").mkdir()
    F.write_images(tmp_path / "images", ["unrelated.jpg"])
    with pytest.raises(DatasetNotFoundError, match="none of the 1 test images"):
        ava.load(tmp_path)
    (tmp_path / "images" / "unrelated.jpg").unlink()
    (tmp_path / "images").rmdir()
    with pytest.raises(DatasetNotFoundError, match="image folder not found") as e:
        ava.load(tmp_path)
    assert "require_images=False" in str(e.value)


@pytest.mark.parametrize("layout,image_dir", [("AVA_dataset", "AVA_dataset/images"), ("flat", "image"),
                                              ("AVA_dataset", "images")])
def test_ava_layouts(tmp_path, layout, image_dir):
    rows = F.ava_rows(6)
    F.write_ava(tmp_path, rows, [rows[0][1]], layout=layout, image_dir=image_dir)
    d = ava.load(tmp_path)
    assert d.counts() == {"train": 5, "test": 1}
    assert d.splits["test"][0].path.parent == tmp_path / image_dir
    key = "AVA_dataset/AVA.txt" if layout == "AVA_dataset" else "AVA.txt"
    assert key in d.label_files


def test_ava_images_argument(tmp_path):
    rows = F.ava_rows(5)
    F.write_ava(tmp_path / "labels", rows, [rows[0][1]], image_ids=[])
    F.write_images(tmp_path / "elsewhere", [f"{r[1]}.jpg" for r in rows])
    d = ava.load(tmp_path / "labels", images=tmp_path / "elsewhere")
    assert d.counts() == {"train": 4, "test": 1}


@pytest.mark.parametrize("bad,line_no,message", [
    ("1 2 3", 4, "expected 15 columns"),
    ("4 1021 0 1 2 3 4 x 6 7 8 9 1 1 1", 4, "column 8 is not a whole number"),
    ("4 1021 0 1 2 3 4 -5 6 7 8 9 1 1 1", 4, "column 8 is not a whole number"),
    ("4 1021 0 1 2 3 4 99999999999 6 7 8 9 1 1 1", 4, "column 8 is too large"),
])
def test_ava_malformed_row_names_file_and_line(tmp_path, bad, line_no, message):
    rows = [" ".join(map(str, r)) for r in F.ava_rows(6)]
    rows[3] = bad
    F.write_text(tmp_path / "AVA.txt", rows, "\r\n")
    F.write_text(tmp_path / "aesthetics_image_lists" / "generic_test.jpgl", ["1000"])
    with pytest.raises(LabelFileError) as e:
        ava.load(tmp_path, require_images=False)
    assert e.value.path == str(tmp_path / "AVA.txt") and e.value.line == line_no
    assert message in str(e.value)


def test_ava_errors_are_collected_when_asked(tmp_path):
    rows = [" ".join(map(str, r)) for r in F.ava_rows(8)]
    rows[2] = "oops"
    rows[5] = "6 1035 1 1"
    F.write_text(tmp_path / "AVA.txt", rows)
    F.write_text(tmp_path / "aesthetics_image_lists" / "generic_test.jpgl", ["1000"])
    errors: list = []
    d = ava.load(tmp_path, require_images=False, errors=errors)
    assert [(e.line, e.path) for e in errors] == [(3, str(tmp_path / "AVA.txt")), (6, str(tmp_path / "AVA.txt"))]
    assert d.counts() == {"train": 5, "test": 1}


def test_ava_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("IAABENCH_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as e:
        ava.load()
    assert "AVA.txt" in str(e.value) and "IAABENCH_DATA" in str(e.value) and "--data-root" in str(e.value)
    assert dataset_info("ava").locate() is None
    rows = F.ava_rows(5)
    F.write_ava(tmp_path / "ava", rows, [rows[0][1]])
    monkeypatch.setenv("IAABENCH_DATA", str(tmp_path))
    assert ava.load().counts() == {"train": 4, "test": 1}
    assert load_dataset("ava").counts() == {"train": 4, "test": 1}
    assert dataset_info("ava").locate() == tmp_path / "ava"


def test_ava_wrong_root_names_expected_file(tmp_path):
    (tmp_path / "somewhere").mkdir()
    with pytest.raises(DatasetNotFoundError) as e:
        ava.load(tmp_path / "somewhere")
    assert str(tmp_path / "somewhere" / "AVA.txt") in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        ava.load(tmp_path / "nothing-here")


def test_ava_label_file_of_another_dataset(tmp_path):
    F.write_text(tmp_path / "AVA.txt", ["image,score", "a.jpg,5.5", "b.jpg,6.1"], "\r\n")
    with pytest.raises(LabelFileError) as e:
        ava.load(tmp_path, require_images=False)
    assert "not AVA.txt" in str(e.value) and "TAD66K" in str(e.value) and e.value.line == 1


def test_ava_official_list_missing(tmp_path):
    rows = F.ava_rows(4)
    F.write_ava(tmp_path, rows, [rows[0][1]])
    (tmp_path / "aesthetics_image_lists" / "generic_test.jpgl").unlink()
    with pytest.raises(DatasetNotFoundError, match="generic_test.jpgl"):
        ava.load(tmp_path)


def test_ava_options_and_split_names(tmp_path):
    rows = F.ava_rows(4)
    F.write_ava(tmp_path, rows, [rows[0][1]])
    with pytest.raises(ConfigError, match="unknown option"):
        ava.load(tmp_path, colour="blue")
    with pytest.raises(UnknownNameError):
        ava.load(tmp_path, split="random")


def test_ava_parse_cache(tmp_path, monkeypatch):
    rows = F.ava_rows(20)
    F.write_ava(tmp_path / "ava", rows, [rows[0][1]])
    first = ava.load(tmp_path / "ava")
    cached = list((Path(os.environ["IAABENCH_CACHE"]) / "index").glob(f"ava-*{first.label_files['AVA.txt']}.npz"))
    assert len(cached) == 1

    def no_parse(*a, **k):
        raise AssertionError("AVA.txt parsed again despite the cache")

    monkeypatch.setattr(ava, "_parse_fast", no_parse)
    monkeypatch.setattr(ava, "_parse_lines", no_parse)
    again = ava.load(tmp_path / "ava")
    assert [s.votes for s in again.splits["train"]] == [s.votes for s in first.splits["train"]]
    monkeypatch.undo()
    cached[0].write_bytes(b"damaged")
    assert ava.load(tmp_path / "ava").counts() == first.counts()  # re-parsed and rewritten
    assert ava.load(tmp_path / "ava").counts() == first.counts()


def test_ava_full_size_parse(tmp_path, monkeypatch):
    """255,530 rows (the release's size) take the vectorized parse (the line-by-line parser
    is never needed for a clean file), every row and line number comes back as written, and
    the cached table equals the parsed one. No wall-clock assert: a loaded machine must not
    fail it."""
    path = F.big_ava_txt(tmp_path / "AVA.txt")

    def no_line_parse(*a, **k):
        raise AssertionError("a clean AVA.txt fell back to the line-by-line parser")

    monkeypatch.setattr(ava, "_parse_lines", no_line_parse)
    table, lines = ava.read_ava_txt(path, use_cache=False)
    assert table.shape == (255_530, 15) and np.array_equal(lines, np.arange(1, 255_531))
    text = path.read_text().splitlines()
    for i in (0, 1, 127_764, 255_529):
        assert table[i].tolist() == [int(v) for v in text[i].split()]
    ava.read_ava_txt(path)  # fills the cache
    table2, lines2 = ava.read_ava_txt(path)
    assert np.array_equal(table, table2) and np.array_equal(lines, lines2)


def tanet_split_files(tmp_path, rows):
    test, val = rows[:6], rows[6:10]
    F.write_tanet_csv(tmp_path / "test.csv", test, trailing_blank=0)
    F.write_tanet_csv(tmp_path / "val.csv", val, trailing_blank=1)
    return test, val


def test_ava_tanet_random(tmp_path):
    rows = F.ava_rows(25)
    F.write_ava(tmp_path / "ava", rows, [rows[0][1]])
    csv_rows = [list(r) for r in rows[:10]]
    csv_rows[0][2:12] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # the CSV's votes are used, not AVA.txt's
    csv_rows[7][2:12] = [0] * 10
    test, val = tanet_split_files(tmp_path, csv_rows)
    d = ava.load(tmp_path / "ava", split="tanet-random", test_csv=tmp_path / "test.csv", val_csv=tmp_path / "val.csv")
    assert d.counts() == {"train": 15, "val": 3, "test": 6}
    assert d.splits["test"][0].votes == (1, 0, 0, 0, 0, 0, 0, 0, 0, 1) and d.splits["test"][0].score == 5.5
    assert {s.image_id for s in d.splits["train"]} == {str(r[1]) for r in rows[10:]}
    assert [k.reason for k in d.skipped] == [L.NO_VOTES]
    assert set(d.manifest["files"]) == {"AVA.txt", str((tmp_path / "test.csv").resolve()),
                                        str((tmp_path / "val.csv").resolve())}
    # default location <root>/tanet-random/
    (tmp_path / "ava" / "tanet-random").mkdir()
    for name in ("test.csv", "val.csv"):
        (tmp_path / "ava" / "tanet-random" / name).write_bytes((tmp_path / name).read_bytes())
    assert ava.load(tmp_path / "ava", split="tanet-random").counts() == d.counts()


def test_ava_tanet_random_needs_its_files(tmp_path):
    rows = F.ava_rows(5)
    F.write_ava(tmp_path, rows, [rows[0][1]])
    with pytest.raises(DatasetNotFoundError, match="test_csv=PATH"):
        ava.load(tmp_path, split="tanet-random")
    F.write_text(tmp_path / "t.csv", ["image,score", "a.jpg,5"])
    with pytest.raises(LabelFileError, match="TAD66K"):
        ava.load(tmp_path, split="tanet-random", test_csv=tmp_path / "t.csv", val_csv=tmp_path / "t.csv")


def test_ava_manifest_split(tmp_path):
    rows = F.ava_rows(12)
    F.write_ava(tmp_path / "ava", rows, [rows[0][1]])
    lines = ["image_id, split"] + [f"{r[1]}, train" for r in rows[:6]] + [f"{r[1]},val" for r in rows[6:8]]
    lines += [f"{r[1]},TEST" for r in rows[8:11]] + ["424242,test", f"{rows[0][1]},train"]
    F.write_text(tmp_path / "m.csv", lines, "\r\n", bom=True, trailing_blank=2)
    d = ava.load(tmp_path / "ava", split="manifest", manifest=tmp_path / "m.csv")
    assert d.counts() == {"train": 6, "val": 2, "test": 3}
    assert sorted(k.reason.split()[0] for k in d.skipped) == ["duplicate", "image"]
    assert d.manifest["name"] == "manifest" and len(d.manifest["files"]) == 2


@pytest.mark.parametrize("row,message", [("1007,train", "must not share"), ("1014,holdout", "train, val or test")])
def test_ava_manifest_errors(tmp_path, row, message):
    rows = F.ava_rows(4)
    F.write_ava(tmp_path / "ava", rows, [rows[0][1]])
    F.write_text(tmp_path / "m.csv", ["image_id,split", "1007,test", row])
    with pytest.raises(LabelFileError) as e:
        ava.load(tmp_path / "ava", split="manifest", manifest=tmp_path / "m.csv")
    assert e.value.line == 3 and message in str(e.value)


def test_real_generic_test_list():
    path = require_shared("data", "labels", "ava", "AVA_dataset", "aesthetics_image_lists", "generic_test.jpgl")
    ids = ava.read_id_list(path, L.Problems())
    assert len(ids) == 20_000 and len({i for _, i in ids}) == 20_000


def test_real_tanet_csvs_with_an_ava_txt_built_from_them(tmp_path):
    """AVA.txt is not in the shared folder: rebuild one from the TANet rows (plus extra train
    rows) and load both published splits from it, with the real split files."""
    base = require_shared("data", "labels", "ava")
    rows = []
    for name in ("test.csv", "val.csv"):
        for _, line in L.nonblank(L.read_lines(base / "tanet_code_AVA_dataset" / name)[1:]):
            rows.append([int(x) for x in line.split(",")])
    extra = F.ava_rows(500, first_id=2_000_000)
    lines = [" ".join(map(str, [i + 1, *r])) for i, r in enumerate(rows)]
    lines += [" ".join(map(str, [len(rows) + 1 + i, *r[1:]])) for i, r in enumerate(extra)]
    F.write_text(tmp_path / "AVA.txt", lines)
    (tmp_path / "aesthetics_image_lists").symlink_to(base / "AVA_dataset" / "aesthetics_image_lists")
    d = ava.load(tmp_path, split="tanet-random", require_images=False,
                 test_csv=base / "tanet_code_AVA_dataset" / "test.csv",
                 val_csv=base / "tanet_code_AVA_dataset" / "val.csv")
    assert d.counts() == {"train": 500, "val": 12_775, "test": 12_776}
    first = rows[0]
    s = d.splits["test"][0]
    assert s.image_id == str(first[0]) and s.votes == tuple(first[1:11])
    official = ava.load(tmp_path, require_images=False)
    listed = {i for _, i in ava.read_id_list(base / "AVA_dataset" / "aesthetics_image_lists" / "generic_test.jpgl",
                                               L.Problems())}
    in_rows = listed & {r[0] for r in rows}
    assert official.counts() == {"train": len(rows) + 500 - len(in_rows), "test": len(in_rows)}
    assert official.manifest["test_list_ids"] == 20_000


# ============================================================================== TAD66K


THEMES = ["art", "tree", "flower", "night"]


def tad_fixture(root, n_train=24, n_test=12, **kw):
    names = F.tad66k_names(n_train + n_test)
    train = F.tad66k_rows(names[:n_train], THEMES, seed=1)
    test = F.tad66k_rows(names[n_train:], THEMES, seed=2)
    cross = [n for n, _, t in test if t in ("tree", "flower")][:3]
    labels = F.write_tad66k(root, train, test, cross_listed=cross, **kw)
    return train, test, cross, labels


def test_tad66k_official_split_and_themes(tmp_path):
    train, test, cross, _ = tad_fixture(tmp_path)
    before = snapshot(tmp_path)
    d = tad66k.load(tmp_path)
    assert d.counts() == {"train": 24, "test": 12}
    assert [(s.image_id, s.score, s.theme) for s in d.splits["test"]] == test
    assert [(s.image_id, s.score, s.theme) for s in d.splits["train"]] == train
    assert any("@" in s.image_id for s in d.splits["train"])
    assert d.themes == sorted(THEMES) and d.manifest["themed_from_other_split"] == len(cross) == 3
    assert d.manifest["unthemed"] == 0 and set(d.manifest["files"]) == {"merge/train.csv", "merge/test.csv"}
    assert "unmerge/train/tree.csv" in d.label_files and d.splits["test"][0].votes is None
    assert d.splits["test"][0].path == tmp_path / "images" / test[0][0]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("eol,bom,trailing,layout", [("\n", False, 0, "flat"), ("\r\n", True, 2, "dataset"),
                                                     ("\r\n", False, 1, "flat")])
def test_tad66k_quirks_and_layouts(tmp_path, eol, bom, trailing, layout):
    train, test, _, labels = tad_fixture(tmp_path, eol=eol, bom=bom, trailing_blank=trailing, layout=layout)
    d = tad66k.load(tmp_path)
    assert d.counts() == {"train": 24, "test": 12} and len(d.themes) == 4
    prefix = "dataset/" if layout == "dataset" else ""
    assert f"{prefix}merge/test.csv" in d.manifest["files"]


def test_tad66k_spaces_after_commas(tmp_path):
    F.write_text(tmp_path / "merge" / "train.csv", ["image, score", "a@N01b.jpg, 5.25", "c.jpg ,3"], "\r\n")
    F.write_text(tmp_path / "merge" / "test.csv", ["image,score", '"d.jpg", 4.5'], "\r\n")
    d = tad66k.load(tmp_path, require_images=False)
    assert [(s.image_id, s.score) for s in d.splits["train"]] == [("a@N01b.jpg", 5.25), ("c.jpg", 3.0)]
    assert d.splits["test"][0].image_id == "d.jpg" and d.themes is None and d.splits["test"][0].theme is None


def test_tad66k_duplicates_keep_the_first_row(tmp_path):
    train = [("a.jpg", 5.0, "art"), ("b.jpg", 6.0, "art"), ("b.jpg", 6.5, "art")]
    test = [("c.jpg", 4.0, "tree"), ("d.jpg", 5.0, "tree")]
    F.write_tad66k(tmp_path, train, test)
    d = tad66k.load(tmp_path)
    assert [s.image_id for s in d.splits["train"]] == ["a.jpg", "b.jpg"]
    assert [s.image_id for s in d.splits["test"]] == ["c.jpg", "d.jpg"]
    assert [k.where.rsplit("/", 1)[-1] for k in d.skipped] == ["train.csv:4"]
    with pytest.raises(LabelFileError, match="duplicate id"):
        tad66k.load(tmp_path, strict=True)


def test_tad66k_image_in_train_and_test_is_an_error_naming_both_rows(tmp_path):
    """A test image listed in train (here as `./a.jpg`, the same file) would be trained on."""
    F.write_tad66k(tmp_path, [("b.jpg", 6.0, "art"), ("./a.jpg", 5.0, "art")], [("c.jpg", 4.0, "tree"),
                                                                                ("a.jpg", 5.0, "tree")])
    with pytest.raises(LabelFileError) as e:
        tad66k.load(tmp_path)
    assert e.value.path == str(tmp_path / "merge" / "train.csv") and e.value.line == 3
    assert f"{tmp_path / 'merge' / 'test.csv'}:3" in str(e.value) and "a.jpg" in str(e.value)


@pytest.mark.parametrize("row,message", [("x.jpg,high", "score is not a number"), ("x.jpg,11.5", "outside 1..10"),
                                         ("x.jpg,5,extra", "expected 2 fields"), (",5", "empty image name")])
def test_tad66k_bad_rows(tmp_path, row, message):
    F.write_text(tmp_path / "merge" / "train.csv", ["image,score", "a.jpg,5", row], "\r\n")
    F.write_text(tmp_path / "merge" / "test.csv", ["image,score", "b.jpg,5"], "\r\n")
    with pytest.raises(LabelFileError) as e:
        tad66k.load(tmp_path, require_images=False)
    assert e.value.line == 3 and e.value.path == str(tmp_path / "merge" / "train.csv") and message in str(e.value)


def test_tad66k_given_ava_txt(tmp_path):
    F.write_text(tmp_path / "merge" / "train.csv", [" ".join(map(str, r)) for r in F.ava_rows(3)])
    F.write_text(tmp_path / "merge" / "test.csv", ["image,score", "b.jpg,5"])
    with pytest.raises(LabelFileError) as e:
        tad66k.load(tmp_path, require_images=False)
    msg = str(e.value)
    assert "merge/train.csv" in msg and "looks like AVA.txt" in msg and "header `image,score`" in msg


def test_tad66k_missing_files_and_images(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        tad66k.load(tmp_path)
    assert str(tmp_path / "merge" / "train.csv") in str(e.value)
    train, test, _, _ = tad_fixture(tmp_path)
    (tmp_path / "images" / train[0][0]).unlink()
    d = tad66k.load(tmp_path)
    assert d.counts() == {"train": 23, "test": 12}
    assert d.skipped[0].where == str(tmp_path / "images" / train[0][0]) and d.skipped[0].reason == L.MISSING_IMAGE


def test_real_tad66k_labels():
    base = require_shared("data", "labels", "tad66k")
    d = tad66k.load(base, require_images=False)
    assert d.counts() == {"train": 52_248, "test": 14_079}
    assert len(d.themes) == 47 and d.manifest["unthemed"] == 0
    assert all(s.theme for v in d.splits.values() for s in v)
    assert d.manifest["themed_from_other_split"] == 478
    test_themed_from_train = {}
    train_listing = {name for _, name, _ in tad66k.read_scores(base / "dataset" / "unmerge" / "train" / "tree.csv",
                                                          L.Problems(), "tree")}
    for s in d.splits["test"]:
        if s.image_id in train_listing:
            test_themed_from_train[s.theme] = test_themed_from_train.get(s.theme, 0) + 1
    assert test_themed_from_train == {"tree": 242}
    assert all(1.0 <= s.score <= 10.0 for v in d.splits.values() for s in v)
    assert d.skipped == []


# ============================================================================== FLICKR-AES


@pytest.fixture
def flickr_root(tmp_path):
    ratings = F.flickr_ratings(n_workers=50, n_images=200, per_image=4)
    means = F.write_flickr(tmp_path / "flickr-aes", ratings)
    return tmp_path / "flickr-aes", ratings, means


def test_flickr_workers_split(flickr_root):
    root, ratings, means = flickr_root
    before = snapshot(root)
    d = flickr_aes.load(root, split="workers-random")
    test_workers = d.manifest["test_workers"]
    assert len(test_workers) == 37 and test_workers == sorted(test_workers)
    assert d.manifest["worker_choice"] == "seeded" and d.manifest["split_seed"] == 0
    assert d.manifest["workers_total"] == 50 and len(d.manifest["test_workers_sha256"]) == 64
    rated_by_test = {im for w, im, _ in ratings if w in set(test_workers)}
    assert {s.image_id for s in d.splits["test"]} == rated_by_test
    assert sum(d.counts().values()) == 200
    s = d.splits["test"][0]
    assert s.score == pytest.approx(means[s.image_id], abs=1e-4)
    assert s.extra["ratings"] == {w: float(r) for w, im, r in ratings if im == s.image_id}
    assert d.scale == (1.0, 5.0) and set(d.label_files) == {F.FLICKR_WORKER_FILE, F.FLICKR_SCORE_FILE}
    assert snapshot(root) == before
    again = flickr_aes.load(root, split="workers-random")
    assert again.manifest["test_workers"] == test_workers
    other = flickr_aes.load(root, split="workers-random", split_seed=1, test_workers=5)
    assert len(other.manifest["test_workers"]) == 5
    assert other.manifest["test_workers_sha256"] != d.manifest["test_workers_sha256"]


def test_flickr_workers_file(flickr_root, tmp_path):
    root, ratings, _ = flickr_root
    workers = sorted({w for w, _, _ in ratings})
    F.write_text(tmp_path / "w.txt", [workers[3], workers[1], "", workers[3]], "\r\n", bom=True)
    d = flickr_aes.load(root, workers_file=tmp_path / "w.txt")
    assert d.manifest["test_workers"] == [workers[1], workers[3]] and d.manifest["worker_choice"] == "file"
    assert str((tmp_path / "w.txt").resolve()) in d.manifest["files"]
    F.write_text(tmp_path / "bad.txt", [workers[0], "NOBODY"])
    with pytest.raises(LabelFileError) as e:
        flickr_aes.load(root, workers_file=tmp_path / "bad.txt")
    assert e.value.line == 2 and "NOBODY" in str(e.value)
    with pytest.raises(ConfigError, match="test_workers=50"):
        flickr_aes.load(root, split="workers-random", test_workers=50)


@pytest.mark.parametrize("eol,bom,trailing", [("\r\n", True, 2), ("\n", False, 1)])
def test_flickr_quirks_and_40k_folder(tmp_path, eol, bom, trailing):
    ratings = F.flickr_ratings(n_workers=40, n_images=60, per_image=3, seed=3)
    F.write_flickr(tmp_path, ratings, eol=eol, bom=bom, trailing_blank=trailing, image_dir="40K")
    d = flickr_aes.load(tmp_path, split="workers-random", test_workers=3)
    assert sum(d.counts().values()) == 60
    assert {s.path.parent for v in d.splits.values() for s in v} == {tmp_path / "40K"}


def test_flickr_bad_rows_and_missing_scores(tmp_path):
    ratings = F.flickr_ratings(n_workers=40, n_images=30, per_image=3)
    F.write_flickr(tmp_path, ratings, skip_scores=[ratings[0][1]])
    d = flickr_aes.load(tmp_path, split="workers-random")
    assert sum(d.counts().values()) == 29 and d.manifest["rated_without_score"] == 1
    lines = (tmp_path / F.FLICKR_WORKER_FILE).read_text().splitlines()
    F.write_text(tmp_path / F.FLICKR_WORKER_FILE, lines[:3] + ["W1, x.jpg, 7"] + lines[3:])
    with pytest.raises(LabelFileError) as e:
        flickr_aes.load(tmp_path)
    assert e.value.line == 4 and "outside 1..5" in str(e.value)


def test_flickr_personalized_episode(flickr_root):
    root, ratings, _ = flickr_root
    d = flickr_aes.load(root, split="workers-random")
    workers = flickr_aes.list_workers(d)
    assert workers == d.manifest["test_workers"]
    assert set(flickr_aes.list_workers(d, "train")) | set(workers) == {w for w, _, _ in ratings}
    qualified = flickr_aes.list_workers(d, min_images=12)
    assert qualified and set(qualified) <= set(workers)
    w = qualified[0]
    own = {im: float(r) for ww, im, r in ratings if ww == w}
    adapt, test = flickr_aes.personalized_episode(d, w, k=10, seed=0)
    assert len(adapt) == 10 and len(adapt) + len(test) == len(own)
    assert not {s.image_id for s in adapt} & {s.image_id for s in test}
    assert all(s.score == own[s.image_id] and s.extra["worker"] == w for s in adapt + test)
    shuffled = list(reversed(d.splits["test"])) + d.splits["train"]
    assert flickr_aes.personalized_episode(shuffled, w, 10, seed=0) == (adapt, test)
    assert flickr_aes.personalized_episode(d, w, 10, seed=1)[0] != adapt
    with pytest.raises(ConfigError, match="at least"):
        flickr_aes.personalized_episode(d, w, k=len(own), seed=0)
    with pytest.raises(ConfigError):
        flickr_aes.list_workers(d.splits["test"], "test")


def test_real_flickr_derivative_is_refused(tmp_path):
    """The shared FLICKR-AES files are a third party's normalised derivative, not the original
    format: given in place of the originals, each is refused with a message saying so."""
    base = require_shared("data", "labels", "flickr-aes", "crp94")
    (tmp_path / F.FLICKR_WORKER_FILE).symlink_to(base / "test_workers_dataset_normalized.csv")
    F.write_text(tmp_path / F.FLICKR_SCORE_FILE, ["a.jpg 3.5"])
    with pytest.raises(LabelFileError, match="normalised"):
        flickr_aes.load(tmp_path, require_images=False)
    (tmp_path / F.FLICKR_WORKER_FILE).unlink()
    F.write_flickr(tmp_path, F.flickr_ratings(40, 10, 2), image_dir=None)
    (tmp_path / F.FLICKR_SCORE_FILE).unlink()
    (tmp_path / F.FLICKR_SCORE_FILE).symlink_to(base / "test_means_normalized.csv")
    with pytest.raises(LabelFileError, match="normalised"):
        flickr_aes.load(tmp_path, require_images=False)


# ============================================================================== registry


@pytest.mark.parametrize("name,splits,votes,themes", [("ava", ("official", "tanet-random", "manifest"), True, False),
                                                      ("tad66k", ("official",), False, True),
                                                      ("flickr-aes", ("workers", "workers-random"), False, False)])
def test_registered(name, splits, votes, themes):
    info = dataset_info(name)
    assert info.splits == splits and info.has_votes is votes and info.themes is themes
    assert "require_images" in info.options and "errors" in info.options and info.description


def test_label_files_without_rows(tmp_path):
    F.write_text(tmp_path / "ava" / "AVA.txt", [""], trailing_blank=2)
    F.write_text(tmp_path / "ava" / "aesthetics_image_lists" / "generic_test.jpgl", ["1"])
    with pytest.raises(LabelFileError, match="no data rows"):
        ava.load(tmp_path / "ava", require_images=False)
    F.write_text(tmp_path / "tad" / "merge" / "train.csv", ["image,score"], "\r\n")
    F.write_text(tmp_path / "tad" / "merge" / "test.csv", ["image,score", "a.jpg,5"], "\r\n")
    with pytest.raises(LabelFileError, match="no data rows") as e:
        tad66k.load(tmp_path / "tad", require_images=False)
    assert e.value.path == str(tmp_path / "tad" / "merge" / "train.csv")
