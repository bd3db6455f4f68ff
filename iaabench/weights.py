"""Offline-first weight resolution and loading that never executes code from a file.

Resolution order for a named weight file: an explicit path, then the weights folder
(`IAABENCH_WEIGHTS`, default `~/.cache/iaabench/weights`), then the backbone library's own
cache (torch hub's `checkpoints/`), then a download - only when the user asked for one
(`--download` / `IAABENCH_DOWNLOAD=1`). Anything else is a `WeightsError` that says which file
to put where, and that `--pretrained none` trains without it.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WeightsError
from .paths import weights_dir


@dataclass(frozen=True)
class WeightSpec:
    """A pretrained weight file a model needs: its file name, what it is, where it comes from."""

    filename: str
    description: str
    url: str | None = None
    licence: str = "see the source"


def download_allowed() -> bool:
    return os.environ.get("IAABENCH_DOWNLOAD", "") in ("1", "true", "yes")


def resolve(spec: WeightSpec, explicit: str | Path | None = None) -> Path:
    """The local path of `spec`'s file, searched offline-first (see the module docstring)."""
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise WeightsError(f"weight file {p} does not exist", f"expected {spec.description}")
        return p
    candidates = [weights_dir() / spec.filename, Path(torch.hub.get_dir()) / "checkpoints" / spec.filename]
    for p in candidates:
        if p.is_file():
            return p
    if spec.url and download_allowed():
        dest = weights_dir() / spec.filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        try:
            torch.hub.download_url_to_file(spec.url, str(tmp), progress=True)
        except Exception as e:  # network errors come in many types
            raise WeightsError(f"could not download {spec.url}: {e}") from None
        os.replace(tmp, dest)
        return dest
    where = "\n    ".join(str(c) for c in candidates)
    src = f" (source: {spec.url})" if spec.url else ""
    raise WeightsError(
        f"missing pretrained weights: {spec.filename} - {spec.description}{src}",
        f"put the file in one of:\n    {where}\n  or pass its path explicitly; "
        "`--pretrained none` trains from random initialisation instead"
        + ("; set IAABENCH_DOWNLOAD=1 to download it" if spec.url else ""),
    )


def safe_load(path: str | Path) -> dict:
    """Load a checkpoint without executing code: safetensors, or torch.load(weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weight file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
        check_format(path)  # an `iaabench export` file of a newer format is refused, naming the file
        try:
            return load_file(str(path))
        except Exception as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise unsafe_pickle(path, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable checkpoint, truncated or corrupt ({str(e)[:200]})") from None
    return obj


def unsafe_pickle(path: Path, e: Exception) -> WeightsError:
    """Our refusal of a pickle that needs more than tensors (torch's own message, which ends in
    advice to turn the safety off, is not shown): what the file is, why, what to do."""
    text = str(e)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    op = re.search(r"Unsupported operand (\d+)", text)
    what = (f"it refers to the Python object {found.group(1)}" if found else
            f"it uses pickle opcode {op.group(1)}, which tensor files never need" if op else
            "it holds Python objects beyond tensors")
    return WeightsError(
        f"{path}: refused to load: this is a pickled file that needs Python code to rebuild ({what}); "
        "unpickling it could run arbitrary code, so iaabench reads only tensors from pickles",
        "if you trust the file's source, convert it once to plain tensors in Python: "
        "torch.save(<the model or state_dict it holds>.state_dict(), 'plain.pt') after loading it with "
        "torch.load(path, weights_only=False), then pass plain.pt (or a .safetensors file); a run's "
        "checkpoint becomes a self-describing file with `iaabench export`")


def extract_state_dict(obj, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded checkpoint (plain, or under 'state_dict'/'model'/'params',
    the last being IQA-PyTorch's layout), with any DataParallel `module.` prefix removed."""
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state", "params"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state_dict (expected a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path = "<checkpoint>") -> None:
    """Load `state` into `module` only if keys and shapes match exactly; else list the differences."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        def cut(xs):
            return ", ".join(xs[:8]) + (f" ... (+{len(xs) - 8})" if len(xs) > 8 else "")
        lines = []
        if shape:
            lines.append(f"shape mismatches ({len(shape)}): {cut(shape)}")
        if missing:
            lines.append(f"missing keys ({len(missing)}): {cut(missing)}")
        if unexpected:
            lines.append(f"unexpected keys ({len(unexpected)}): {cut(unexpected)}")
        raise WeightsError(f"{path} does not fit {type(module).__name__}:\n  " + "\n  ".join(lines),
                           "is this a checkpoint of another model or of the other head?")
    module.load_state_dict(state, strict=True)


def sha256(path: str | Path) -> str:
    from .data.samples import sha256_file

    return sha256_file(path)


# --- files written by `iaabench export` (iaabench/export.py) ---------------------------------

FORMAT = "iaabench-export"
FORMAT_VERSION = 1
#: Metadata keys every exported file of this format carries.
REQUIRED = ("model", "family", "head", "input", "test_transforms", "eval_batch_size", "scale", "dataset", "code")


def _header(path: Path) -> dict[str, str]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise WeightsError(f"{path}: reading .safetensors needs the 'safetensors' package",
                           "pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise WeightsError(f"{path}: not a readable safetensors file ({str(e)[:200]})") from None


def check_format(path: str | Path) -> dict[str, str]:
    """The raw header metadata of a safetensors file; refuses an export of a newer format."""
    path = Path(path)
    meta = _header(path)
    if meta.get("format") == FORMAT:
        try:
            version = int(meta.get("format_version", ""))
        except ValueError:
            raise WeightsError(f"{path}: exported file with an unreadable format_version "
                               f"{meta.get('format_version')!r}") from None
        if version > FORMAT_VERSION:
            raise WeightsError(
                f"{path}: exported with format version {version}; this iaabench reads version {FORMAT_VERSION} "
                "and older", "upgrade iaabench to load this file")
    return meta


def read_metadata(path: str | Path) -> dict | None:
    """Our metadata of an exported file (dict), or None for a safetensors file without it.
    Damaged or incomplete metadata is a `WeightsError` naming the file and the key."""
    path = Path(path)
    raw = check_format(path)
    if raw.get("format") != FORMAT and "iaabench" not in raw:
        return None
    if raw.get("format") != FORMAT:
        raise WeightsError(f"{path}: metadata key 'format' is {raw.get('format')!r}, expected {FORMAT!r}")
    try:
        meta = json.loads(raw.get("iaabench", ""))
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: the exported metadata (key 'iaabench') is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{path}: the exported metadata (key 'iaabench') is not a JSON object")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise WeightsError(f"{path}: the exported metadata lacks {', '.join(missing)}",
                           "re-export it with `iaabench export`")
    return meta
