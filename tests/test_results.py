"""Result records: atomic, never clobbered, predictions round-trip exactly."""
import json
import threading

import numpy as np

from iaabench.results import SCHEMA, Predictions, read_records, write_record


def _preds(n=5, dist=True):
    rng = np.random.default_rng(0)
    d = rng.dirichlet(np.ones(10), size=n)
    return Predictions([f"img{i}@N0" for i in range(n)], rng.uniform(1, 10, n), rng.uniform(1, 10, n),
                       ["snow", None, "sea", "snow", "sea"][:n], d if dist else None, d[::-1].copy() if dist else None)


def test_predictions_round_trip_exactly(tmp_path):
    p = _preds()
    path = tmp_path / "p.csv"
    path.write_text(p.to_csv())
    q = Predictions.from_csv(path)
    assert q.image_id == p.image_id and q.theme == p.theme
    np.testing.assert_array_equal(q.true, p.true)
    np.testing.assert_array_equal(q.pred_dist, p.pred_dist)


def test_concurrent_writers_get_distinct_records(tmp_path):
    rec = {"model": "nima", "dataset": "synth-tad66k", "created": "2026-01-01T00:00:00Z", "metrics": {}}
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(write_record(dict(rec), _preds(), root=tmp_path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 8
    records = read_records(tmp_path)
    assert len(records) == 8
    for path, r in records:
        assert (path.parent / r["predictions"]).is_file()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.claim"))


def test_reader_ignores_temporary_files(tmp_path):
    write_record({"model": "m", "dataset": "d", "created": "x", "metrics": {}}, _preds(), root=tmp_path)
    (tmp_path / "d" / "m" / ".half.json.123.tmp").write_text('{"schema": 1, "trunc')
    assert len(read_records(tmp_path)) == 1
    assert json.loads(next((tmp_path / "d" / "m").glob("2*.json")).read_text())["schema"] == SCHEMA
