"""The command line as a user meets it: listings, and one clear message (no traceback, a
non-zero exit) for every kind of bad input."""
import os
import subprocess
import sys

import pytest


def cli(*args, env=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "iaabench", *args], capture_output=True, text=True, env=e,
                          timeout=300)


def test_models_lists_variants_papers_and_warnings():
    r = cli("models")
    assert r.returncode == 0, r.stderr
    for name in ("nima", "nima-vgg16", "nima-inception"):
        assert name in r.stdout
    assert "Talebi" in r.stdout


def test_datasets_lists_splits_and_whether_found(tmp_path):
    r = cli("datasets", env={"IAABENCH_DATA": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "tad66k" in r.stdout and "official" in r.stdout and "no" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "nimaa"], "unknown model 'nimaa'"),
    (["run", "--model", "nima", "--dataset", "tad66"], "unknown dataset 'tad66'"),
    (["run", "--lr", "head"], "expected GROUP=VALUE"),
    (["run", "--device", "tpu"], "--device tpu"),
    (["run", "--recipe", "quik"], "no recipe 'quik'"),
])
def test_bad_input_is_one_clear_message(args, message):
    r = cli(*args)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_model_suggests_the_closest():
    r = cli("run", "--model", "nimaa")
    assert "did you mean nima" in r.stderr


def test_missing_dataset_says_what_to_put_where(tmp_path):
    r = cli("run", "--model", "nima", "--dataset", "tad66k", "--data-root", str(tmp_path / "nowhere"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "merge" in r.stderr or "nowhere" in r.stderr


def test_invalid_cli_value_is_rejected_by_the_parser():
    r = cli("run", "--epochs", "-1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
