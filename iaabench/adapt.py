"""Adapting a generic IAA model to one person from k rated images (the methods of
`iaabench piaa`, see `iaabench/piaa.py`): ridge on penultimate features, fine-tuning the head
on cached head inputs, fine-tuning the whole model; and the card's `piaa:` section that picks
one and its settings.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from .errors import ConfigError, IAAError


METHODS = ("ridge", "finetune-head", "finetune-all")
SETTINGS_KEY = {"ridge": "ridge", "finetune-head": "finetune_head", "finetune-all": "finetune_all"}
PIAA_KEYS = {"method", "head_module", "source", "ridge", "finetune_head", "finetune_all", "note"}
METHOD_KEYS = {"ridge": {"alpha"}, "finetune_head": {"steps", "lr", "weight_decay", "batch_size"},
               "finetune_all": {"steps", "lr", "weight_decay", "batch_size"}}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The adaptation a run uses: method, its parameters, the head module and the source."""

    method: str
    params: dict
    head_module: str | None
    source: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def card_settings(model: str, method: str | None = None, overrides: dict | None = None) -> Settings:
    """The card's `piaa:` section for `model` (or `method`, e.g. from `--adapt`), validated."""
    from .cards import load_card
    from .registry import model_info

    card = load_card(model_info(model).family)
    where = f"{card.path}: piaa"
    sec = card.data.get("piaa")
    if sec is None and method != "finetune-all":
        raise ConfigError(f"{card.path} has no piaa: section (the default adaptation method and its settings)",
                          "add one, or pass --adapt finetune-all with --adapt-steps and --adapt-lr")
    sec = dict(sec or {})
    bad = sorted(set(sec) - PIAA_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown key '{bad[0]}'", f"allowed: {', '.join(sorted(PIAA_KEYS))}")
    method = method or sec.get("method")
    if method not in METHODS:
        raise ConfigError(f"{where}.method (or --adapt): {method!r} is not one of {', '.join(METHODS)}")
    head = sec.get("head_module")
    if method != "finetune-all" and not head:
        raise ConfigError(f"{where}.head_module: method {method} needs the module whose input it reads",
                          "name it (e.g. classifier) or use --adapt finetune-all")
    key = SETTINGS_KEY[method]
    params = dict(sec.get(key) or {})
    bad = sorted(set(params) - METHOD_KEYS[key])
    if bad:
        raise ConfigError(f"{where}.{key}: unknown key '{bad[0]}'", f"allowed: {', '.join(sorted(METHOD_KEYS[key]))}")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given and method == "ridge":
        raise ConfigError(f"{', '.join('--adapt-' + k for k in sorted(given))}: no such setting for method ridge "
                          "(it has alpha, set in the card)")
    params.update(given)
    need = sorted(METHOD_KEYS[key] - set(params))
    if need:
        raise ConfigError(f"{where}.{key}: missing {', '.join(need)} for method {method}",
                          "set them in the card or on the command line (--adapt-steps, --adapt-lr)")
    _check_params(method, params, f"{where}.{key}")
    source = sec.get("source") or "no piaa: section in the card; method chosen on the command line"
    return Settings(method, params, head, str(source))


def _check_params(method: str, p: dict, where: str) -> None:
    if method == "ridge":
        alphas = p["alpha"] if isinstance(p["alpha"], list) else [p["alpha"]]
        if not alphas or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0 for a in alphas):
            raise ConfigError(f"{where}.alpha: expected a positive number or a list of them, got {p['alpha']!r}")
        return
    for k in ("steps", "batch_size"):
        if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 1:
            raise ConfigError(f"{where}.{k}: expected a positive whole number, got {p[k]!r}")
    for k in ("lr", "weight_decay"):
        if not isinstance(p[k], (int, float)) or isinstance(p[k], bool) or p[k] < 0:
            raise ConfigError(f"{where}.{k}: expected a non-negative number, got {p[k]!r}")


def head_of(model, name: str):
    """The sub-module `name`, looked up in `named_modules()` (not by attribute)."""
    mods = dict(model.named_modules())
    if name not in mods:
        raise ConfigError(f"piaa.head_module: model '{getattr(model, 'registered_name', type(model).__name__)}' has "
                          f"no sub-module '{name}'", "its top-level modules: " + ", ".join(n for n, _ in model.named_children()))
    return mods[name]


def last_linear(module) -> torch.nn.Linear:
    lins = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not lins:
        raise ConfigError(f"piaa: the head module {type(module).__name__} has no linear layer to read "
                          "penultimate features from (method ridge)")
    return lins[-1]


@torch.no_grad()
def penultimate(head, x: torch.Tensor, crops: int, chunk: int = 512) -> np.ndarray:
    """The input of the head's last linear layer for cached head inputs `x` (rows = images x
    crops), averaged over crops: (images, D) float64."""
    lin, got = last_linear(head), []
    hook = lin.register_forward_pre_hook(lambda m, a: got.append(a[0].detach().float().reshape(a[0].shape[0], -1)))
    was = head.training
    head.eval()
    try:
        for i in range(0, len(x), chunk):
            head(x[i:i + chunk])
    finally:
        hook.remove()
        head.train(was)
    f = torch.cat(got).double()
    return f.reshape(-1, crops, f.shape[1]).mean(1).numpy()


def adapt_ridge(feats: np.ndarray, resid: np.ndarray, test_feats: np.ndarray, alpha) -> np.ndarray:
    """The fitted residual for the test images (native scale)."""
    from sklearn.linear_model import Ridge, RidgeCV

    reg = RidgeCV(alphas=list(alpha)) if isinstance(alpha, list) else Ridge(alpha=float(alpha))
    reg.fit(feats, resid)
    return reg.predict(test_feats)


def _frozen_bn(module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def head_scores(model, head, x: torch.Tensor, crops: int) -> torch.Tensor:
    return model.predict(head(x)).score.float().reshape(-1, crops).mean(1)


def adapt_head(model, head, x_adapt: torch.Tensor, y_unit: torch.Tensor, x_test: torch.Tensor, crops: int,
               p: dict, seed: int, device: str) -> np.ndarray:
    """Unit-scale predictions of a copy of `head` trained on (x_adapt, y_unit)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    h = copy.deepcopy(head).to(device)
    opt = torch.optim.Adam([q for q in h.parameters() if q.requires_grad], lr=float(p["lr"]),
                           weight_decay=float(p["weight_decay"]))
    k = len(y_unit)
    xa = x_adapt.to(device).reshape(k, crops, *x_adapt.shape[1:])
    ya = y_unit.to(device)
    for _ in range(int(p["steps"])):
        h.train()
        _frozen_bn(h)
        idx = torch.randperm(k, generator=g)[:int(p["batch_size"])] if k > int(p["batch_size"]) else torch.arange(k)
        xb = xa[idx].reshape(len(idx) * crops, *x_adapt.shape[1:])
        loss = torch.nn.functional.mse_loss(head_scores(model, h, xb, crops), ya[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    h.eval()
    with torch.no_grad():
        return head_scores(model, h, x_test.to(device), crops).double().cpu().numpy()


def adapt_all(model, adapt, test, recipe, p: dict, *, scale_max: float, seed: int, device: str, sources,
              strict: bool) -> tuple[np.ndarray, list[str]]:
    """(native-scale predictions, their image ids) of a copy of the whole model trained on the
    adaptation samples (their `score` = the worker's rating); `sources(samples, train=, seed=,
    batch_size=)` makes the batch sources."""
    from .device import autocast
    from .evaluate import predict

    torch.manual_seed(seed)
    m = copy.deepcopy(model)
    params = [q for q in m.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
    min_last = 2 if getattr(m, "batch_dependent", False) else 1
    src = sources(adapt, train=True, seed=seed, batch_size=int(p["batch_size"]))
    steps, epoch = int(p["steps"]), 0
    while steps > 0:
        m.train()
        for batch in src.epoch(epoch):
            if len(batch.index) < max(min_last, 1) or steps <= 0:
                continue
            b, crops = batch.x.shape[:2]
            x = batch.x.reshape(b * crops, *batch.x.shape[2:]).to(device)
            y = (batch.score.float() / scale_max).to(device)
            with autocast(device):
                raw = m(x)
            score = m.predict(raw).score.float().reshape(b, crops).mean(1)
            loss = torch.nn.functional.mse_loss(score, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps -= 1
        epoch += 1
        if epoch > 10 * int(p["steps"]) + 10:
            raise IAAError("finetune-all: no usable adaptation batch (every adaptation image failed to load?)")
    preds, _ = predict(m, sources(test, train=False, seed=seed), scale_max=scale_max, device=device, strict=strict)
    return preds.pred, list(preds.image_id)
