"""Bad labels: every label parser, fed random and mutated rows of its own format (and random
bytes), either parses or raises `LabelFileError` naming the file and, for a row, its 1-based
line; never another exception.

Each example is one of: random bytes; a file of random rows (fields drawn from numbers, odd
numbers such as `nan`, `1e309`, `１２`, names with `@`, quotes and commas, any Unicode) joined
by random separators and line ends, with or without the right header and a BOM; or a valid
file of the format with a few byte-level mutations (insert, delete, replace, truncate,
duplicate or swap lines, a NUL, a stray CR, invalid UTF-8). Every parser is run twice: raising
at the first bad row, and collecting every bad row (`iaabench data verify`), where each
collected error must name the file and a line as well.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iaabench.data import ava, flickr_aes, tad66k
from iaabench.data import labels as L
from iaabench.errors import ConfigError, LabelFileError

# 200 fixed examples per parser in the suite (repeatable); IAABENCH_FUZZ_EXAMPLES=5000 explores
# further with fresh random examples each run.
_EXTRA = os.environ.get("IAABENCH_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_EXTRA or 200), deadline=None, derandomize=not _EXTRA, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# ----------------------------------------------------------------------------- strategies

NAME = st.from_regex(r"[a-z0-9][a-z0-9@ _.-]{0,14}\.(jpg|JPG|png)", fullmatch=True)
ODD = st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "-0", "1e309", "0x10", "１２", "٣", "5,5", '"5"',
                       '"a,b"', "1_000", "+3", ".5", "5.", "1e-400", "99999999999999999999", "\t", "\\", "#"])
FIELD = st.one_of(
    st.integers(-5, 20).map(str),
    st.integers(0, 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    ODD,
    NAME,
    st.text(max_size=10),
)
SEP = st.sampled_from([",", ", ", " ", "  ", "\t", ";", ",,", ""])
EOL = st.sampled_from(["\n", "\r\n", "\r"])


def _encode(lines: list[str], eol: str, bom: bool) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + (eol.join(lines) + eol).encode("utf-8", "surrogatepass")


@st.composite
def random_rows(draw, header: str | None) -> bytes:
    """Rows of random fields; the format's header (or a random first row) when it has one."""
    sep = draw(SEP)
    rows = [sep.join(r) for r in draw(st.lists(st.lists(FIELD, max_size=16), max_size=8))]
    if header is not None and draw(st.booleans()):
        rows.insert(0, header)
    return _encode(rows, draw(EOL), draw(st.booleans()))


@st.composite
def valid_file(draw, header: str | None, row: st.SearchStrategy[str]) -> bytes:
    rows = draw(st.lists(row, min_size=1, max_size=8))
    return _encode(([header] if header is not None else []) + rows, draw(EOL), draw(st.booleans()))


MUTATIONS = ["insert", "delete", "replace", "truncate", "dup-line", "swap-lines", "nul", "cr", "bad-utf8"]


@st.composite
def mutated(draw, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid file after one to four byte-level mutations."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(MUTATIONS))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4)) if draw(st.booleans()) else \
                draw(st.sampled_from([b",", b" ", b"\n", b"\r\n", b"-", b".", b"e", b"\"", b"9" * 12]))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op in ("dup-line", "swap-lines"):
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if op == "dup-line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
        elif op == "nul":
            data[at:at] = b"\x00"
        elif op == "cr":
            data[at:at] = b"\r"
        elif op == "bad-utf8":
            data[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]))
    return bytes(data)


def label_files(header: str | None, row: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=200), random_rows(header), mutated(valid_file(header, row)))


BIG = st.integers(2**31 - 2, 2**70).map(str)  # past int32 (the AVA cache) and int64 (numpy)


def _ints(n: int, lo: int = 0, hi: int = 60) -> st.SearchStrategy[list[str]]:
    small = st.integers(lo, hi).map(str)
    return st.lists(st.one_of(small, small, small, BIG), min_size=n, max_size=n)


SCORE_1_10 = st.floats(1, 10).map(lambda x: f"{x:.2f}")
SCORE_1_5 = st.floats(1, 5).map(lambda x: f"{x:.1f}")
WORKER = st.from_regex(r"A[0-9A-Z]{5,13}", fullmatch=True)
IMAGE_ID = st.one_of(st.integers(1, 999999).map(str), st.integers(1, 999999).map(str), BIG)

TAD_ROW = st.builds(lambda n, s: f"{n},{s}", NAME, SCORE_1_10)
AVA_ROW = st.builds(lambda i, id_, v, t, c: " ".join([i, id_, *v, *t, c]),
                    st.integers(1, 9999).map(str), IMAGE_ID, _ints(10), _ints(2, 0, 66), st.integers(0, 1500).map(str))
NAMES_ROW = st.builds(lambda i, n: f"{i} {n}", st.integers(0, 2000).map(str), st.text(min_size=1, max_size=20))
JPGL_ROW = IMAGE_ID
TANET_ROW = st.builds(lambda id_, v, t: ",".join([id_, *v, *t]), IMAGE_ID, _ints(10), _ints(3, 0, 66))
MANIFEST_ROW = st.builds(lambda id_, s: f"{id_},{s}", st.sampled_from(["1", "2", "3", "4", "5"]),
                         st.sampled_from(["train", "val", "test", "TEST", "dev"]))
FLICKR_WORKER_ROW = st.builds(lambda w, n, s: f"{w}, {n}, {s}", WORKER, NAME, st.integers(1, 5).map(str))
FLICKR_SCORE_ROW = st.builds(lambda n, s: f"{n} {s}", NAME, SCORE_1_5)

TANET_HEADER = ",".join(ava.TANET_HEADER)
FLICKR_HEADER = "worker, imagePair, score"

# ----------------------------------------------------------------------------- the property


def _max_line(data: bytes) -> int:
    """The number of lines, counting LF, CRLF and lone CR line ends (as `labels.read_lines`)."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1


def check(parse: Callable[[L.Problems], object], path: Path, data: bytes, files: tuple[Path, ...] = ()) -> None:
    """`parse` must return, or raise LabelFileError naming `path` (or one of `files`) and, when
    it names a line, one that exists; collected errors (verify mode) likewise, always with a line."""
    allowed = {str(p) for p in (path, *files)}
    for collect in (None, []):
        try:
            parse(L.Problems(collect))
        except LabelFileError as e:
            assert e.path in allowed, e
            assert str(e).startswith(e.path), e
            assert e.line is None or 1 <= e.line <= _max_line(Path(e.path).read_bytes()), e
        for e in collect or []:
            assert isinstance(e, LabelFileError) and e.path in allowed, e
            assert isinstance(e.line, int) and 1 <= e.line <= _max_line(data), e


def _errors(problems: L.Problems) -> dict:
    """The loader option that switches it to collecting (verify) mode, like `problems`."""
    return {"errors": problems.collect} if problems.collect is not None else {}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- TAD66K


@FUZZ
@given(data=label_files("image,score", TAD_ROW))
def test_tad66k_score_csv(tmp_path, data):
    path = _write(tmp_path, "train.csv", data)
    check(lambda p: tad66k.read_scores(path, p, "TAD66K's merge/train.csv"), path, data)


@FUZZ
@given(data=label_files("image,score", TAD_ROW), which=st.sampled_from(["merge/train.csv", "unmerge/test/snow.csv"]))
def test_tad66k_loader(tmp_path, data, which):
    """The whole loader (labels only), with one of its files fuzzed and the others valid."""
    root = tmp_path / "tad66k"
    _write(root, "merge/train.csv", b"image,score\r\na@1.jpg,5.5\r\nb.jpg,3.25\r\n")
    for name in ("merge/test.csv", "unmerge/test/snow.csv"):  # test images are never train images
        _write(root, name, b"image,score\r\nc@2.jpg,5.5\r\nd.jpg,3.25\r\n")
    path = _write(root, which, data)

    def parse(problems):
        return tad66k.load(root, require_images=False, **_errors(problems))
    check(parse, path, data)


# ----------------------------------------------------------------------------- AVA


@FUZZ
@given(data=label_files(None, AVA_ROW))
def test_ava_txt(tmp_path, data):
    path = _write(tmp_path, "AVA.txt", data)
    check(lambda p: ava.read_ava_txt(path, problems=p, use_cache=False), path, data)


@FUZZ
@given(data=st.one_of(label_files(None, NAMES_ROW), label_files(None, JPGL_ROW)),
       which=st.sampled_from(["tags.txt", "generic_test.jpgl"]))
def test_ava_names_and_image_lists(tmp_path, data, which):
    path = _write(tmp_path, which, data)
    if which == "tags.txt":
        check(lambda p: ava.read_names(path, p), path, data)
    else:
        check(lambda p: ava.read_id_list(path, p), path, data)


def _ava_root(tmp_path: Path) -> Path:
    root = tmp_path / "ava"
    rows = "".join(f"{i} {i} 0 1 2 3 4 5 4 3 2 1 0 0 {i}\n" for i in range(1, 6))
    _write(root, "AVA.txt", rows.encode())
    _write(root, "aesthetics_image_lists/generic_test.jpgl", b"1\n2\n")
    return root


@FUZZ
@given(data=label_files(None, JPGL_ROW))
def test_ava_official_split(tmp_path, data):
    """The official split's test list, read by the whole loader (labels only)."""
    root = _ava_root(tmp_path)
    path = _write(root, "aesthetics_image_lists/generic_test.jpgl", data)
    check(lambda p: ava.load(root, require_images=False, cache=False, **_errors(p)), path, data)


@FUZZ
@given(data=label_files(TANET_HEADER, TANET_ROW), which=st.sampled_from(["test", "val"]))
def test_ava_tanet_split_csv(tmp_path, data, which):
    root = _ava_root(tmp_path)
    files = {s: _write(root, f"tanet-random/{s}.csv", (TANET_HEADER + "\n1," + "1," * 10 + "0,0,0\n").encode())
             for s in ("test", "val")}
    path = _write(root, f"tanet-random/{which}.csv", data)

    def parse(problems):
        return ava.load(root, split="tanet-random", require_images=False, cache=False, **_errors(problems))
    check(parse, path, data, files=tuple(files.values()))


@FUZZ
@given(data=label_files("image_id,split", MANIFEST_ROW))
def test_ava_manifest_csv(tmp_path, data):
    root = _ava_root(tmp_path)
    path = _write(tmp_path, "manifest.csv", data)

    def parse(problems):
        return ava.load(root, split="manifest", manifest=str(path), require_images=False, cache=False,
                        **_errors(problems))
    check(parse, path, data)


# ----------------------------------------------------------------------------- FLICKR-AES


@FUZZ
@given(data=label_files(FLICKR_HEADER, FLICKR_WORKER_ROW))
def test_flickr_worker_csv(tmp_path, data):
    path = _write(tmp_path, flickr_aes.WORKER_FILE, data)
    check(lambda p: flickr_aes.read_ratings(path, p), path, data)


@FUZZ
@given(data=label_files(None, FLICKR_SCORE_ROW))
def test_flickr_score_txt(tmp_path, data):
    path = _write(tmp_path, flickr_aes.SCORE_FILE, data)
    check(lambda p: flickr_aes.read_image_scores(path, p, []), path, data)


@FUZZ
@given(data=label_files(None, WORKER))
def test_flickr_workers_file(tmp_path, data):
    path = _write(tmp_path, "workers.txt", data)
    check(lambda p: flickr_aes.read_workers_file(path, {"A1B2C3", "AXYZ12345"}, p), path, data)


# ----------------------------------------------------------------------------- known cases


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\r\r", b"\x00\x01", b"image,score\r\n\xff\xfe,5\r\n",
                                  b"image,score\na.jpg,nan\n", b"image,score\na.jpg,1e309\n",
                                  b'image,score\n"a.jpg,5\n', b"image,score\na.jpg,\xd9\xa3\n"])
def test_tad66k_edge_cases(tmp_path, data):
    path = _write(tmp_path, "train.csv", data)
    check(lambda p: tad66k.read_scores(path, p, "TAD66K's merge/train.csv"), path, data)


@pytest.mark.parametrize("which, data", [
    ("aesthetics_image_lists/generic_test.jpgl", b"9223372036854775808"),
    ("tanet-random/test.csv", (TANET_HEADER + "\n0,0,0,0,0,0,0,0,0,1,9223372036854775808,0,0,0").encode()),
], ids=["jpgl-id", "tanet-count"])
def test_ava_values_beyond_int64(tmp_path, which, data):
    """The two inputs the fuzz tests once shrank to: values beyond int64 are malformed rows."""
    root = _ava_root(tmp_path)
    for s in ("test", "val"):
        _write(root, f"tanet-random/{s}.csv", (TANET_HEADER + "\n1," + "1," * 10 + "0,0,0\n").encode())
    path = _write(root, which, data)
    split = "official" if which.endswith(".jpgl") else "tanet-random"
    check(lambda p: ava.load(root, split=split, require_images=False, cache=False, **_errors(p)), path, data)


# ----------------------------------------------------------------------------- image paths


def _tad(root: Path, train: list[str], test: list[str], images: list[str]) -> Path:
    """TAD66K labels naming `train`/`test` as written (any path), and the files `images`
    (relative to root/images) written inside the image folder."""
    import fixtures_labels as F

    F.write_tad66k(root, [(n, 5.0, None) for n in train], [(n, 6.0, None) for n in test], images=False,
                   unmerge=False)
    F.write_images(root / "images", images)
    return root


def test_one_id_for_each_spelling_of_a_name(tmp_path):
    """`./x`, `x`, `a/../x` and the absolute path inside the image folder are one image."""
    root = _tad(tmp_path / "t", ["./b.jpg", "b.jpg", "sub/../b.jpg", str(tmp_path / "t" / "images" / "c.jpg"),
                                 "sub/d.jpg"], ["a.jpg"], ["a.jpg", "b.jpg", "c.jpg", "sub/d.jpg"])
    (tmp_path / "link").symlink_to(root)  # the dataset folder given through a symlink: the same ids
    assert [s.image_id for s in tad66k.load(tmp_path / "link").splits["train"]] == ["b.jpg", "c.jpg", "sub/d.jpg"]
    d = tad66k.load(root)
    assert [(s.image_id, s.path) for s in d.splits["train"]] == [
        ("b.jpg", root / "images" / "b.jpg"), ("c.jpg", root / "images" / "c.jpg"),
        ("sub/d.jpg", root / "images" / "sub" / "d.jpg")]
    assert [(k.where.rsplit("/", 1)[-1], k.reason.split(" (")[0]) for k in d.skipped] == [
        ("train.csv:3", f"{L.DUPLICATE} b.jpg"), ("train.csv:4", f"{L.DUPLICATE} b.jpg")]


def test_paths_leading_outside_the_image_folder_are_refused(tmp_path):
    import fixtures_labels as F

    outside = F.write_image(tmp_path / "secret.jpg")
    root = tmp_path / "t"
    (root / "images").mkdir(parents=True)
    (root / "images" / "link.jpg").symlink_to(outside)  # a symlink pointing out
    (root / "images" / "sub").symlink_to(tmp_path)  # a subfolder that is one
    F.write_image(root / "images" / "real.jpg")
    (root / "images" / "alias.jpg").symlink_to(root / "images" / "real.jpg")  # inside: fine
    train = ["../../secret.jpg", str(outside), "link.jpg", "sub/secret.jpg", "alias.jpg", "ok.jpg"]
    _tad(root, train, ["a.jpg"], ["a.jpg", "ok.jpg"])
    train_csv = root / "merge" / "train.csv"
    for require in (True, False):
        d = tad66k.load(root, require_images=require)
        assert [s.image_id for s in d.splits["train"]] == ["alias.jpg", "ok.jpg"]
        assert sorted(k.where for k in d.skipped) == [f"{train_csv}:{n}" for n in (2, 3, 4, 5)]
        assert all(L.OUTSIDE in k.reason and "--allow-external-images" in k.reason for k in d.skipped)
    with pytest.raises(LabelFileError) as e:
        tad66k.load(root, strict=True)
    assert e.value.path == str(train_csv) and e.value.line == 2 and L.OUTSIDE in str(e.value)
    d = tad66k.load(root, allow_external_images=True)
    assert [s.path.resolve() for s in d.splits["train"][:4]] == [outside] * 4
    assert not d.skipped and d.manifest["allow_external_images"] is True


def test_an_ava_image_symlinked_out_is_refused_with_its_row(tmp_path):
    import fixtures_labels as F

    rows = F.ava_rows(6)
    F.write_ava(tmp_path / "ava", rows, [rows[0][1]])
    target = tmp_path / "ava" / "images" / f"{rows[3][1]}.jpg"
    target.unlink()
    target.symlink_to(F.write_image(tmp_path / "elsewhere.jpg"))
    d = ava.load(tmp_path / "ava")
    assert str(rows[3][1]) not in {s.image_id for s in d.splits["train"]}
    assert [k.where for k in d.skipped] == [f"{tmp_path / 'ava' / 'AVA.txt'}:4"]
    assert str(rows[3][1]) in {s.image_id for s in ava.load(tmp_path / "ava", allow_external_images=True).splits["train"]}


def test_an_ava_image_in_tanet_test_and_val_is_an_error_naming_both(tmp_path):
    import fixtures_labels as F

    rows = F.ava_rows(12)
    F.write_ava(tmp_path / "ava", rows, [rows[0][1]])
    F.write_tanet_csv(tmp_path / "test.csv", rows[:4])
    F.write_tanet_csv(tmp_path / "val.csv", rows[4:7] + [rows[2]])
    with pytest.raises(LabelFileError) as e:
        ava.load(tmp_path / "ava", split="tanet-random", test_csv=tmp_path / "test.csv", val_csv=tmp_path / "val.csv")
    assert e.value.path == str(tmp_path / "val.csv") and e.value.line == 5
    assert f"{tmp_path / 'test.csv'}:4" in str(e.value)


def test_flickr_names_are_normalised_in_both_files(tmp_path):
    import fixtures_labels as F

    ratings = F.flickr_ratings(n_workers=40, n_images=60)
    F.write_flickr(tmp_path, ratings)
    score = tmp_path / F.FLICKR_SCORE_FILE
    lines = score.read_text().splitlines()
    first = lines[0].split()[0]
    lines[0] = "./" + lines[0]
    lines.append(f"../{first} 3.0")
    score.write_text("\n".join(lines) + "\n")
    d = flickr_aes.load(tmp_path, split="workers-random", test_workers=3)
    sample = next(s for v in d.splits.values() for s in v if s.image_id == first)
    assert sample.extra["ratings"] and sample.path == tmp_path / "images" / first
    assert [k.where for k in d.skipped] == [f"{score}:{len(lines)}"] and L.OUTSIDE in d.skipped[0].reason


def test_yes_no_loader_options_read_as_the_command_line_gives_them(tmp_path):
    """`--option allow_external_images=false` must not read as true (a non-empty string)."""
    root = _tad(tmp_path / "t", ["../x.jpg", "b.jpg"], ["a.jpg"], ["a.jpg", "b.jpg"])
    assert len(tad66k.load(root, allow_external_images="false").skipped) == 1
    assert not tad66k.load(root, allow_external_images="true", require_images=0).skipped
    with pytest.raises(ConfigError, match="allow_external_images"):
        tad66k.load(root, allow_external_images="maybe")
