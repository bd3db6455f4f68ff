"""Parity with the authors' code: load their state_dict layout, compute what they computed.

A cases file (the format of the shared `reference/parity_cases.json`) holds, per entry, the
authors' state_dict keys and shapes and, per case, an input batch description and the outputs
(and intermediate branch values) the authors' own code produced. Nobody's trained weights are
needed: every state_dict entry is filled with deterministic values computed from its name and
shape alone (`fill`), so two implementations with the same layout get the same weights.

The recipe, as the recording was made (CPU, float32):
1. build the model, fill every state_dict entry with `fill(name, shape)`, load it;
2. `calibrate_batchnorm`: one training-mode forward pass on `make_inputs(16, 224, 0.123)` with
   dropout off and cumulative BatchNorm statistics, then eval mode (filled running statistics
   do not match the activations, and deep networks would wash their input out);
3. per case, `model(make_inputs(batch, size, phase))` in eval mode under no_grad.

`run_parity` does this for every entry whose model is registered and reports, per case, the
largest absolute difference of the output and of each recorded branch. A case passes iff the
output's difference is within the entry's `atol` (or the caller's).
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError

#: Extra cases-file entries -> (registered model, head), beside those the models register
#: (`register_model(..., parity={entry: head})`); tests add ghosts here.
ENTRIES: dict[str, tuple[str, str]] = {}


def entries() -> dict[str, tuple[str, str]]:
    from .registry import parity_entries

    return {**parity_entries(), **ENTRIES}

CALIBRATION_BATCH, CALIBRATION_PHASE = 16, 0.123


# --- the deterministic fill and inputs (must reproduce the recording's values bit for bit) ---

def _wave(name: str, n: int) -> torch.Tensor:
    """n values in [-1, 1): the fractional part of a scaled sine at integer steps, with a phase
    taken from the CRC-32 of the entry's name (computed in float64)."""
    phase = (zlib.crc32(name.encode()) % 100003) / 7.0
    s = torch.sin(torch.arange(n, dtype=torch.float64) * 12.9898 + phase) * 43758.5453
    return 2.0 * (s - torch.floor(s)) - 1.0


def fill(name: str, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The value of state_dict entry `name`: zeros for BatchNorm's step counter; variances in
    [1, 1.5); means and biases in [-0.1, 0.1); 1-D weights (BatchNorm, PReLU) in [0.9, 1.1);
    conv and linear weights uniform with a He-like scale for their fan-in."""
    shape = list(shape)
    n = math.prod(shape)
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    w = _wave(name, n)
    if name.endswith("running_var"):
        v = 1.0 + 0.5 * w.abs()
    elif name.endswith("running_mean") or name.endswith("bias"):
        v = 0.1 * w
    elif len(shape) <= 1:
        v = 1.0 + 0.1 * w
    else:
        v = w * math.sqrt(6.0 / (n / shape[0]))
    return v.reshape(shape).to(torch.float32)


def fill_state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: fill(k, s) for k, s in shapes.items()}


def make_inputs(batch: int, size: int = 224, phase: float = 0.0) -> torch.Tensor:
    """A (batch, 3, size, size) float32 batch of smooth synthetic images, roughly in the range
    of ImageNet-normalised photographs; every image of the batch differs."""
    h = torch.arange(size, dtype=torch.float64).view(1, 1, size, 1)
    w = torch.arange(size, dtype=torch.float64).view(1, 1, 1, size)
    c = torch.arange(3, dtype=torch.float64).view(1, 3, 1, 1)
    b = torch.arange(batch, dtype=torch.float64).view(batch, 1, 1, 1)
    x = torch.sin(0.031 * h * (1 + 0.2 * b) + 0.017 * w * (1 + 0.1 * c) + 0.7 * c + 1.3 * b + phase)
    x = x + 0.5 * torch.cos(0.005 * (h - 112) * (w - 112) / (1 + b) + phase)
    return (1.2 * x).to(torch.float32)


def case_inputs(batch: int, size, phase: float = 0.0) -> torch.Tensor:
    """A case's input: `make_inputs` for a square `size`; for `[H, W]`, the top-left H x W crop
    of the square batch of side max(H, W) (as the modern cases were recorded)."""
    if isinstance(size, (list, tuple)):
        h, w = int(size[0]), int(size[1])
        return make_inputs(batch, max(h, w), phase)[:, :, :h, :w]
    return make_inputs(batch, size, phase)


def calibrate_batchnorm(model: nn.Module, size: int = 224) -> None:
    """Set every BatchNorm's running statistics to those of one calibration batch.

    The authors' models had every module in training mode during that pass, so the plain
    `nn.Module.train` is used: an IAAModel's `frozen_modules` (kept in eval mode by our
    trainer) must not change what is being reproduced.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if not norms:  # nothing to calibrate; the recording only switched such models to eval mode
        model.eval()
        return
    saved_p = [d.p for d in drops]
    saved_momentum = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly its statistics
    for d in drops:
        d.p = 0.0
    nn.Module.train(model, True)
    try:
        with torch.no_grad():
            model(make_inputs(CALIBRATION_BATCH, size, phase=CALIBRATION_PHASE))
    finally:
        for d, p in zip(drops, saved_p):
            d.p = p
        for m, mom in zip(norms, saved_momentum):
            m.momentum = mom
        model.eval()


# --- running the cases ---

def _shape_differences(expected: dict[str, list[int]], own: dict[str, torch.Tensor]) -> list[str]:
    diffs = [f"missing in model: {k} {tuple(s)}" for k, s in expected.items() if k not in own]
    diffs += [f"not in reference: {k} {tuple(v.shape)}" for k, v in own.items() if k not in expected]
    diffs += [f"shape of {k}: reference {tuple(expected[k])}, model {tuple(v.shape)}"
              for k, v in own.items() if k in expected and list(v.shape) != list(expected[k])]
    return diffs


def _max_diff(mine: torch.Tensor, ref) -> tuple[float | None, str | None]:
    ref = torch.as_tensor(ref, dtype=torch.float64)
    mine = mine.detach().to(torch.float64)
    if tuple(mine.shape) != tuple(ref.shape):
        return None, f"shape {tuple(mine.shape)} vs recorded {tuple(ref.shape)}"
    return float((mine - ref).abs().max()), None


def _build(entry: str, data: dict):
    """(the filled, calibrated model of one entry, []), or (None, its state_dict differences)."""
    from .registry import model_info

    name, head = entries()[entry]
    model = model_info(name).builder(head=head, pretrained="none")
    own = model.state_dict()
    shapes = data.get("state_dict_shapes")
    state = None
    if shapes is not None and hasattr(model, "convert_state_dict"):
        # Filled under the reference's names, then mapped onto ours by the model's documented
        # converter (the one its released checkpoints go through); the entry's `not_filled`
        # constants (e.g. Swin's relative_position_index) are the converter's to rebuild or drop.
        skip = set(data.get("not_filled", []))
        state = model.convert_state_dict(fill_state_dict({k: s for k, s in shapes.items() if k not in skip}))
        shapes = {k: list(v.shape) for k, v in state.items()}
    diffs = _shape_differences(shapes, own) if shapes is not None else []
    if diffs:
        return None, diffs
    # Without recorded shapes (a trimmed cases file), the model's own layout is filled by name:
    # a renamed key still gets other values, so the outputs catch it.
    if state is None:
        state = fill_state_dict(shapes if shapes is not None else {k: list(v.shape) for k, v in own.items()})
        # `not_filled`: constant buffers derived from the geometry (Swin/DAT relative_position_index,
        # attn_mask) that the recording left at their constructed values; ours keep theirs too.
        for key in data.get("not_filled", []):
            if key not in own:
                raise ConfigError(f"parity entry '{entry}': not_filled names {key}, which the model does not have")
            state[key] = own[key]
    model.load_state_dict(state, strict=True)
    calibrate_batchnorm(model)
    return model, []


def run_parity(cases_path: str | Path, atol: float | None = None, only: list[str] | None = None) -> list[dict]:
    """Check every entry of a cases file against our implementation of its model.

    Returns one dict per case run, and one per entry that was skipped or could not be built:
    `entry`, `model`, `head`, `status` ("pass", "fail", "skipped", "error"), `passed` (True,
    False, or None when skipped), `reason`, `atol`, and for cases `batch`, `size`, `phase`,
    `output_diff` and `branch_diffs` (recorded branch -> max abs difference, None where the
    model does not produce that branch), and `shape_differences` for a layout mismatch.
    """
    from .registry import list_models

    path = Path(cases_path)
    try:
        cases = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: parity cases file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(cases, dict):
        raise ConfigError(f"{path}: expected a mapping of entry name -> entry")
    if only:
        unknown = [e for e in only if e not in cases]
        if unknown:
            raise ConfigError(f"{path}: no entry {', '.join(unknown)}", f"entries: {', '.join(cases)}")
    registered = set(list_models())
    known = entries()
    results: list[dict] = []
    for entry, data in cases.items():
        if entry.startswith("_") or (only and entry not in only):
            continue  # "_source" and the like are notes, not entries
        base = {"entry": entry, "model": None, "head": None, "atol": None, "reason": None}
        if entry not in known:
            results.append({**base, "status": "skipped", "passed": None,
                            "reason": "skipped: no model known for this entry"})
            continue
        name, head = known[entry]
        tol = float(atol if atol is not None else data.get("atol", 1e-4))
        base.update(model=name, head=head, atol=tol)
        if name not in registered:
            results.append({**base, "status": "skipped", "passed": None, "reason": "skipped: model not registered"})
            continue
        try:
            model, diffs = _build(entry, data)
        except Exception as e:  # a model that fails to build or load is a result, not a crash
            results.append({**base, "status": "error", "passed": False, "reason": f"{type(e).__name__}: {e}"})
            continue
        if model is None:
            results.append({**base, "status": "fail", "passed": False, "shape_differences": diffs,
                            "reason": f"state_dict differs from the reference in {len(diffs)} entries"})
            continue
        for case in data.get("cases", []):
            results.append({**base, **_run_case(model, case, tol)})
    return results


def _run_case(model: nn.Module, case: dict, atol: float) -> dict:
    row = {"batch": case["batch"], "size": case["size"], "phase": case["phase"]}
    x = case_inputs(case["batch"], case["size"], case["phase"])
    try:
        with torch.no_grad():
            if hasattr(model, "forward_with_branches"):
                out, branches = model.forward_with_branches(x)
            else:
                out, branches = model(x), {}
    except Exception as e:
        return {**row, "status": "error", "passed": False, "reason": f"{type(e).__name__}: {e}",
                "output_diff": None, "branch_diffs": {}}
    output_diff, problem = _max_diff(out, case["output"])
    branch_diffs = {}
    for name, ref in case.get("branches", {}).items():
        branch_diffs[name] = _max_diff(branches[name], ref)[0] if name in branches else None
    passed = output_diff is not None and output_diff <= atol
    reason = problem or (None if passed else f"output differs by {output_diff:.3g} > atol {atol:g}")
    return {**row, "status": "pass" if passed else "fail", "passed": passed, "reason": reason,
            "output_diff": output_diff, "branch_diffs": branch_diffs}


def format_parity(results: list[dict]) -> str:
    """A plain-text table: one line per case, then a summary line."""

    def num(v):
        return "-" if v is None else f"{v:.2e}"

    lines = [f"{'entry':<14} {'model/head':<18} {'batch':>5} {'output':>9} {'atol':>8}  status  branches"]
    for r in results:
        mh = f"{r['model']}/{r['head']}" if r.get("model") else "-"
        if "batch" not in r:
            lines.append(f"{r['entry']:<14} {mh:<18} {'':>5} {'':>9} {num(r.get('atol')):>8}  {r['status']:<6}  "
                         f"{r.get('reason') or ''}")
            for d in r.get("shape_differences", [])[:20]:
                lines.append(f"    {d}")
            continue
        branches = "  ".join(f"{k}={num(v)}" for k, v in r.get("branch_diffs", {}).items())
        tail = branches if r["status"] != "error" else r.get("reason", "")
        lines.append(f"{r['entry']:<14} {mh:<18} {r['batch']:>5} {num(r.get('output_diff')):>9} "
                     f"{num(r['atol']):>8}  {r['status']:<6}  {tail}")
    counts = {s: sum(r["status"] == s for r in results) for s in ("pass", "fail", "error", "skipped")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no entries")
    return "\n".join(lines)
