"""What a result record promises about itself: strict JSON, digests, older schemas.

The record format of schema 2 (`SCHEMA`):

- **Strict JSON.** No `NaN` or `Infinity` token anywhere. A value that is not a finite number
  (a correlation of constant predictions, a validation metric of a degenerate epoch) is written
  as `null`, and the record's top-level `undefined` object maps its location, a JSON pointer,
  to why: `{"/metrics/srcc/value": "undefined: constant predictions"}`. The reason is the
  metric's own (`warning`, or a per-theme row's `notes`) where it gives one, else "not a number"
  or "infinite". Readers show such a value as undefined, never as 0 or NaN in a number column.
- **Digests.** `predictions_sha256` is the sha256 of the predictions CSV's bytes. `digest` holds
  `sha256`, the sha256 of the record's canonical JSON without `digest` itself (`canonical`:
  sorted keys, no spaces, UTF-8), and `fields`, a short digest of each top-level field and of
  each entry of a top-level object (`counts/test`, `provenance/commit`, `metrics/srcc`), so
  that `iaabench check` can name what was edited. A digest detects edits made after the record
  was written (by hand, by a script, by a damaged disk); it is not a signature: whoever can
  write the file can recompute it.

Records of schema 1 (no digests; `NaN` tokens allowed) are read and moved to this shape in
memory (`migrate`), never rewritten on disk; they are unverified ("no digest, older schema").
Any other schema is refused with a message naming the file and the schema.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .data.samples import sha256_file

SCHEMA = 2
#: Schemas this iaabench reads (older ones migrated in memory).
KNOWN_SCHEMAS = (1, SCHEMA)
#: Length (hex digits) of a field's digest: enough to tell an edit, short enough to read.
FIELD_HEX = 12
OLDER = "no digest, older schema {schema}"


def canonical(obj) -> bytes:
    """The canonical JSON of `obj`: sorted keys, no spaces, UTF-8, strict (no NaN/Infinity)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pointer(parts) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _why(value: float, parent, key) -> str:
    """The reason a value is not a finite number: its metric's own, else what it is."""
    if isinstance(parent, dict):
        if key == "value" and parent.get("warning"):
            return str(parent["warning"])
        notes = parent.get("notes")
        if isinstance(notes, dict) and notes.get(key):
            return str(notes[key])
        if parent.get("reason"):
            return str(parent["reason"])
    return "not a number" if math.isnan(value) else "infinite" if value > 0 else "infinite (negative)"


def strict(obj, undefined: dict | None = None) -> tuple[object, dict]:
    """(copy of `obj` with every non-finite float replaced by None, {JSON pointer: why})."""
    undefined = {} if undefined is None else undefined

    def walk(o, parts):
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                if isinstance(v, float) and not math.isfinite(v):
                    undefined[_pointer([*parts, k])] = _why(v, o, k)
                    out[k] = None
                else:
                    out[k] = walk(v, [*parts, k])
            return out
        if isinstance(o, list):
            out = []
            for i, v in enumerate(o):
                if isinstance(v, float) and not math.isfinite(v):
                    undefined[_pointer([*parts, i])] = _why(v, None, i)
                    out.append(None)
                else:
                    out.append(walk(v, [*parts, i]))
            return out
        return o

    return walk(obj, []), undefined


def strict_record(record: dict) -> dict:
    """`record` as strict JSON data: non-finite numbers are null, explained in `undefined`."""
    rec, undefined = strict({k: v for k, v in record.items() if k != "undefined"},
                            dict(record.get("undefined") or {}))
    if undefined:
        rec["undefined"] = dict(sorted(undefined.items()))
    return rec


def _field_digests(rec: dict) -> dict[str, str]:
    out = {}
    for k, v in rec.items():
        if k == "digest":
            continue
        out[k] = sha256_bytes(canonical(v))[:FIELD_HEX]
        if isinstance(v, dict):
            for sub, w in v.items():
                out[f"{k}/{sub}"] = sha256_bytes(canonical(w))[:FIELD_HEX]
    return dict(sorted(out.items()))


def stamp(rec: dict) -> dict:
    """`rec` (strict JSON data, `predictions_sha256` set) with its `digest`."""
    body = {k: v for k, v in rec.items() if k != "digest"}
    return {**body, "digest": {"sha256": sha256_bytes(canonical(body)), "fields": _field_digests(body)}}


def digest_problems(rec: dict) -> list[str]:
    """What was edited in `rec` since its digest was made ([] when nothing)."""
    d = rec.get("digest")
    if not isinstance(d, dict) or not isinstance(d.get("sha256"), str):
        return ["its digest is missing or malformed"]
    body = {k: v for k, v in rec.items() if k != "digest"}
    try:
        whole = sha256_bytes(canonical(body))
    except (TypeError, ValueError) as e:
        return [f"not strict JSON ({e})"]
    if whole == d["sha256"]:
        return []
    stored = d.get("fields") if isinstance(d.get("fields"), dict) else {}
    now = _field_digests(body)
    changed = [k for k in now if k in stored and now[k] != stored[k]]
    # name the deepest edits: 'counts/test' rather than 'counts' too
    changed = [k for k in changed if not any(c.startswith(k + "/") for c in changed)]
    parts = [f"{', '.join(changed)} changed"] if changed else []
    added = [k for k in now if k not in stored]
    removed = [k for k in stored if k not in now]
    parts += [f"{', '.join(added)} added"] if added else []
    parts += [f"{', '.join(removed)} removed"] if removed else []
    return [f"edited after it was written (digest mismatch: {'; '.join(parts) or 'the digest itself'})"]


def migrate(rec: dict) -> dict:
    """A record of an older known schema in the current shape, in memory (strict JSON data;
    no digest is added: it stays unverified)."""
    return strict_record(rec) if rec.get("schema") != SCHEMA else rec


def structure_problems(rec: dict) -> list[str]:
    """Fields the readers rely on that are missing or of the wrong type (each named)."""
    out = []
    for key in ("model", "dataset"):
        if not isinstance(rec.get(key), str) or not rec.get(key):
            out.append(f"'{key}' is {_what(rec.get(key))}, expected a name")
    metrics = rec.get("metrics")
    if not isinstance(metrics, dict):
        return out + [f"'metrics' is {_what(metrics)}, expected an object of metrics"]
    for name, m in metrics.items():
        if not isinstance(m, dict):
            out.append(f"metric {name} is {_what(m)}, expected an object with a value")
            continue
        v = m.get("value")
        if v is not None and not _number(v):
            out.append(f"metric {name}: value is {_what(v)}, expected a number or null")
        ci = m.get("ci95")
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(x is None or _number(x) for x in ci)):
            out.append(f"metric {name}: ci95 is {_what(ci)}, expected [low, high] or null")
    counts = rec.get("counts")
    if counts is not None and not isinstance(counts, dict):
        out.append(f"'counts' is {_what(counts)}, expected an object")
    elif counts:
        out += [f"counts/{k} is {_what(v)}, expected a whole number" for k, v in counts.items()
                if v is not None and not (isinstance(v, int) and not isinstance(v, bool))]
    for key in ("provenance", "split", "recipe"):
        if rec.get(key) is not None and not isinstance(rec[key], (dict, str) if key == "recipe" else dict):
            out.append(f"'{key}' is {_what(rec[key])}, expected an object")
    skipped = rec.get("skipped")
    if skipped is not None and not (isinstance(skipped, list) and all(isinstance(s, dict) for s in skipped)):
        out.append(f"'skipped' is {_what(skipped)}, expected a list of objects")
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _what(v) -> str:
    if v is None:
        return "missing"
    text = json.dumps(v, default=str, allow_nan=True)
    return f"a {type(v).__name__} ({text[:40] + '...' if len(text) > 40 else text})"


def verification(path: Path, rec: dict) -> tuple[str, str]:
    """(status, why) of a record read from `path`: status "verified", "older" (no digest, an
    older schema: a warning) or "failed" (edited, predictions missing or changed)."""
    why = []
    if rec.get("schema") == SCHEMA:
        why += digest_problems(rec)
    preds = path.parent / str(rec.get("predictions") or "")
    if not rec.get("predictions") or not preds.is_file():
        why.append(f"predictions file {preds.name if rec.get('predictions') else '(none named)'} missing")
    elif rec.get("schema") == SCHEMA:
        want = rec.get("predictions_sha256")
        if not isinstance(want, str):
            why.append("no predictions_sha256")
        elif sha256_file(preds) != want:
            why.append(f"predictions file {preds.name} changed after the record was written (sha256 differs)")
    if why:
        return "failed", "; ".join(why)
    if rec.get("schema") != SCHEMA:
        return "older", OLDER.format(schema=rec.get("schema"))
    return "verified", ""
