"""`iaabench export`: a trained model as one safetensors file that says what it is.

The file holds the model's full state_dict (frozen parts included, so it loads without any
other weight file) and, in the safetensors header, our metadata as JSON under the key
`iaabench` (plus `format` and `format_version` as plain strings, readable by any safetensors
tool):

- `model` (the registered name, which is the card's variant), `family`, `head`, `options`
  (the builder's keyword arguments from the recipe, e.g. MLSP's `max_side`);
- `input` (the model's `InputSpec.to_dict()`), `test_transforms` and `eval_batch_size` (the
  recipe's test-time transforms for the dataset it was trained on);
- `scale` ([low, high] of that dataset's scores), `dataset`, `split` (name and manifest),
  `train_ids_sha256` (the checksum of the training image ids, where the record or checkpoint
  names one; null otherwise), `trained_on` (dataset, split, loader options, count and checksum of
  the training ids, from the checkpoint: `eval` refuses test images among them, see
  `contamination.guard`), `metrics` (the record's, with CIs) and `record` (its run id);
- `code` (iaabench version, git commit and whether the tree was dirty), `source` (the file
  exported from and its sha256), `created`.

`predict`, `eval`, `run --weights` and `iaabench.load_scorer` load it. A file whose
`format_version` is newer than `FORMAT_VERSION` is refused with a message (`check_format`,
called by `weights.safe_load`); a safetensors file without our metadata loads as a plain
state_dict where the model is named (`--model`), and is refused where it would have to say
which model it is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import WeightsError

# The file format (constants, header reading) lives with the other weight loading code.
from .weights import FORMAT, FORMAT_VERSION, REQUIRED, check_format, read_metadata  # noqa: E402,F401


def code_version() -> dict:
    import iaabench

    from .results import git_state

    return {"iaabench": iaabench.__version__, **git_state()}


def export(weights: str | Path, out: str | Path, *, model: str | None = None, dataset: str | None = None,
           head: str | None = None) -> tuple[Path, dict]:
    """Write `weights` (a checkpoint, record, run id or exported file) as an exported
    safetensors file at `out`; returns (path, metadata)."""
    from .predict import load_source
    from .weights import sha256

    out = Path(out)
    if out.suffix != ".safetensors":
        raise WeightsError(f"--out {out}: an export is a .safetensors file", f"use {out.with_suffix('.safetensors')}")
    src = load_source(weights, model=model, dataset=dataset, head=head)
    meta = {
        "model": src.model_name, "family": src.family, "variant": src.model_name, "head": src.head,
        "options": src.options, "input": src.model.input.to_dict(),
        "test_transforms": src.transforms_dict(), "eval_batch_size": src.batch_size,
        "scale": list(src.scale), "dataset": src.dataset, "split": src.split,
        "train_ids_sha256": src.train_ids_sha256, "trained_on": src.trained_on, "metrics": src.metrics,
        "record": src.record.get("run_id") if src.record else None,
        "code": code_version(),
        "source": {"path": str(src.weights_path), "sha256": sha256(src.weights_path)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    state = {k: v.detach().cpu().contiguous().clone() for k, v in src.model.state_dict().items()}
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "iaabench": json.dumps(meta, default=str)}
    write_safetensors(out, state, header)
    return out, meta


def write_safetensors(out: Path, state: dict, header: dict[str, str]) -> None:
    """The safetensors bytes, written atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save

    from .io import atomic_write

    atomic_write(out, save(state, metadata=header))
