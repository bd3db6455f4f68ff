"""Where tensors run: the autocast policy, channels_last and crop flattening, shared by
training, evaluation and the benchmark (one code path for every precision, as nanoGPT has)."""
from __future__ import annotations

import contextlib

import torch


def on_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


#: Precisions of a forward pass: "float32" (no autocast) or "bf16" (bf16 autocast).
PRECISIONS = ("float32", "bf16")


def autocast(device: str, precision: str | None = None):
    """The autocast of a forward pass on `device`. `precision` None is the training policy: bf16
    autocast on CUDA, a no-op on the CPU (one code path for every precision). Evaluation names
    its precision: "float32" (no autocast; the default of `evaluate.predict`, the precision
    released checkpoints' parity is measured in) or "bf16" (bf16 autocast on the device's type,
    the CPU included)."""
    if precision is None:
        precision = "bf16" if on_cuda(device) else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "bf16":
        return torch.autocast(device_type="cuda" if on_cuda(device) else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def place_model(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """Move `model` to `device`, in channels_last layout on CUDA (what cuDNN's convolutions prefer)."""
    model.to(device)
    if on_cuda(device):
        model.to(memory_format=torch.channels_last)
    return model


def flatten_crops(x: torch.Tensor, device: str) -> torch.Tensor:
    """(B, crops, C, H, W) -> (B * crops, C, H, W) on `device` (channels_last on CUDA)."""
    x = x.reshape(-1, *x.shape[2:]).to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if on_cuda(device) and x.dim() == 4 else x


def repeat_per_crop(score: torch.Tensor, dist: torch.Tensor | None, crops: int):
    """Each crop is a training sample with its image's label: repeat the targets `crops` times."""
    if crops <= 1:
        return score, dist
    return score.repeat_interleave(crops), dist.repeat_interleave(crops, 0) if dist is not None else None


def sync(device: str) -> None:
    """Wait for the device (only a timer needs it; training never does)."""
    if on_cuda(device):
        torch.cuda.synchronize()


def targets(batch, scale_max: float, device: str):
    """A batch's training targets on `device`: (unit-scale scores (B,) float32, normalized vote
    histograms (B, 10) or None)."""
    score = (batch.score / scale_max).float().to(device, non_blocking=True)
    dist = batch.dist.to(device, non_blocking=True) if batch.dist is not None else None
    return score, dist
