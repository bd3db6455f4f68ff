"""Personalized aesthetics on FLICKR-AES: the k-shot protocol of the PIAA literature (Ren et al.,
ICCV 2017; TANet's Table 4), for every registered model.

`iaabench piaa --model M --dataset flickr-aes --shots 10,100 --repeats 10`:

1. The generic model is trained with the model's recipe for the dataset on the generic split's
   training images (split `workers`: every image none of the 37 PIAA test workers rated; see
   `data/flickr_aes.py`), through the runner, which writes the usual generic record; or, with
   `--weights`, that checkpoint is evaluated instead.
2. One pass of the generic model over the test images (every image a test worker rated) gives
   its predictions and, where the method allows, the input of the card's head module (cached
   features, as the runner caches MLSP's trunk): every episode then reuses them.
3. For each test worker w, each k in `--shots` and each repeat r, k of w's images are drawn
   (`random.Random("piaa:<seed>:<w>:<k>:<r>")` shuffles w's sorted image ids: the draw depends on
   neither file order nor the other workers) as adaptation data with w's own ratings; a copy of
   the generic model is adapted and scored on w's other images against w's ratings. The generic
   model's SRCC on the same images is the baseline. A worker with fewer than k + 2 usable images
   is skipped for that k and listed with the count; a k that no worker can serve is an error
   before anything is trained.
4. Per k: the mean over workers in each repeat, then mean and sample sd (ddof 1) over repeats,
   for personalized SRCC, generic SRCC and their difference (the literature's +- is over repeats).

Adaptation methods (the card's `piaa:` section picks the default and its settings; `--adapt`):

- `ridge`: ridge regression (scikit-learn) of the worker's residuals (rating minus the generic
  prediction, native scale) on the penultimate features (the input of the last linear layer of
  the card's `head_module`); personalized = generic + the fitted residual. A list of alphas is
  chosen by leave-one-out on the k adaptation images (RidgeCV). It follows Ren et al.'s
  residual adaptation (an offset learnt to compensate the generic score); the regressor is ours.
- `finetune-head`: a copy of the head module trained on the cached head inputs of the k images
  (Adam, `steps`, `lr`, `weight_decay`, batches of `batch_size`; MSE between the predicted mean
  score and the worker's rating on the unit scale, since a worker gives one rating, not a
  distribution; BatchNorm statistics frozen), the PIAA/BIAA baseline setting.
- `finetune-all`: a copy of the whole model trained the same way on the k images through the
  pixel pipeline (the recipe's train transforms), then evaluated on the worker's other images.
  Batch-dependent models (TANet) are evaluated in batches of that worker's test images.

The record (`results/<dataset>/<model>/<run>.json`, `"protocol": "piaa"`, split `piaa`) holds
the plan, the generic run's metrics, one entry per episode (`worker, k, repeat, n_adapt, n_test,
srcc_generic, srcc_personalized`), the summary per k and the skipped workers; the predictions
file has one row per episode and test image (`worker, k, repeat, image_id, true, pred,
pred_generic`), from which `verify_record` recomputes every episode and the summary. Its
`metrics` is empty: the generic metrics are in the generic record, named under `generic`.

Reported numbers (TANet paper, IJCAI 2022, Table 4; SRCC, k = 10 / k = 100, +- sd over 10
repeats): PAM (att&con) .520 +- .003 / .553 +- .012; PIAA .543 +- .003 / .639 +- .011; UGIAA
.559 +- .002 / .660 +- .013; BIAA .561 +- .005 / .669 +- .013; TANet .609 +- .005 / .717 +- .011.
Only TANet is a model here (its rows are in baselines/tanet.yaml, split `piaa`, with `k`); the
others are `REFERENCE_ONLY` below, shown by `table_rows` as reference rows.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .adapt import (METHODS, Settings, adapt_all, adapt_head, adapt_ridge, card_settings, head_of,  # noqa: F401 (re-exported)
                    head_scores, penultimate)
from .errors import ConfigError, IAAError

SPLIT = "piaa"
PROTOCOL = "piaa"
_T4 = "TANet paper (IJCAI 2022), Table 4"
#: Table 4's rows of methods that are not models here (numbers as printed; sd over 10 repeats).
REFERENCE_ONLY = [
    {"method": "PAM (att&con)", "k": 10, "value": 0.520, "sd": 0.003, "source": _T4},
    {"method": "PAM (att&con)", "k": 100, "value": 0.553, "sd": 0.012, "source": _T4},
    {"method": "PIAA", "k": 10, "value": 0.543, "sd": 0.003, "source": _T4},
    {"method": "PIAA", "k": 100, "value": 0.639, "sd": 0.011, "source": _T4},
    {"method": "UGIAA", "k": 10, "value": 0.559, "sd": 0.002, "source": _T4},
    {"method": "UGIAA", "k": 100, "value": 0.660, "sd": 0.013, "source": _T4},
    {"method": "BIAA", "k": 10, "value": 0.561, "sd": 0.005, "source": _T4},
    {"method": "BIAA", "k": 100, "value": 0.669, "sd": 0.013, "source": _T4},
]


def parse_shots(text: str | list) -> list[int]:
    """`"10,100"` -> [10, 100] (sorted, distinct, each >= 1)."""
    parts = text if isinstance(text, list) else str(text).split(",")
    try:
        shots = sorted({int(str(p).strip()) for p in parts if str(p).strip()})
    except ValueError:
        raise ConfigError(f"--shots {text}: expected whole numbers separated by commas, e.g. 10,100") from None
    if not shots or shots[0] < 1:
        raise ConfigError(f"--shots {text}: each k must be at least 1")
    return shots


# ----------------------------------------------------------------------------- episodes


def draw(image_ids, worker: str, k: int, repeat: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(adapt ids, test ids) of one episode: k of the worker's images and the rest, sorted.
    Depends only on the set of ids and (seed, worker, k, repeat)."""
    ids = sorted(set(image_ids))
    random.Random(f"piaa:{seed}:{worker}:{k}:{repeat}").shuffle(ids)
    return sorted(ids[:k]), sorted(ids[k:])


def _episode_seed(seed: int, worker: str, k: int, repeat: int) -> int:
    return int(hashlib.sha256(f"piaa:{seed}:{worker}:{k}:{repeat}".encode()).hexdigest()[:8], 16)


def worker_images(samples, workers: list[str]) -> dict[str, dict[str, float]]:
    """{worker: {image_id: that worker's rating}} over `samples` (their `extra["ratings"]`)."""
    own: dict[str, dict[str, float]] = {w: {} for w in workers}
    for s in samples:
        for w, r in s.extra.get("ratings", {}).items():
            if w in own:
                own[w].setdefault(s.image_id, float(r))
    return own


def eligibility(counts: dict[str, int], shots: list[int]) -> tuple[dict[int, list[str]], list[dict]]:
    """({k: workers with >= k + 2 images}, skipped entries); an error if a k fits no worker."""
    ok, skipped = {}, []
    for k in shots:
        ok[k] = sorted(w for w, n in counts.items() if n >= k + 2)
        skipped += [{"worker": w, "k": k, "n_images": n,
                     "reason": f"{n} usable images: a {k}-shot episode needs at least {k + 2}"}
                    for w, n in sorted(counts.items()) if n < k + 2]
        if not ok[k]:
            most = max(counts.values(), default=0)
            raise ConfigError(f"--shots: k={k} is larger than every test worker can serve (the most images a test "
                              f"worker rated is {most}; an episode needs k + 2)",
                              f"use k <= {max(most - 2, 0)}")
    return ok, skipped


def srcc_or_none(true, pred) -> float | None:
    from .metrics import srcc

    v = float(srcc(true, pred))
    return v if np.isfinite(v) else None


def summarize(episodes: list[dict], shots: list[int], repeats: int) -> dict[str, dict]:
    """Per k: mean and sample sd over repeats of the per-repeat mean over workers (undefined
    SRCCs, e.g. constant predictions, are left out of a repeat's mean and counted)."""
    out = {}
    for k in shots:
        per = {"personalized": [], "generic": [], "difference": []}
        undefined = 0
        for r in range(repeats):
            eps = [e for e in episodes if e["k"] == k and e["repeat"] == r]
            both = [e for e in eps if e["srcc_personalized"] is not None and e["srcc_generic"] is not None]
            undefined += len(eps) - len(both)
            if both:
                per["personalized"].append(float(np.mean([e["srcc_personalized"] for e in both])))
                per["generic"].append(float(np.mean([e["srcc_generic"] for e in both])))
                per["difference"].append(float(np.mean([e["srcc_personalized"] - e["srcc_generic"] for e in both])))
        entry = {"n_repeats": len(per["personalized"]),
                 "n_workers": len({e["worker"] for e in episodes if e["k"] == k}), "undefined_episodes": undefined}
        for name, values in per.items():
            entry[name] = {"mean": float(np.mean(values)) if values else None,
                           "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                           "per_repeat": values}
        out[str(k)] = entry
    return out


def run_episodes(usable: dict[str, dict[str, float]], generic: dict[str, float], eligible: dict[int, list[str]],
                 repeats: int, seed: int, personalize, ticker=None) -> tuple[list[dict], "EpisodePredictions"]:
    """Every episode: for each k, repeat and eligible worker, `draw` the adaptation images and
    call `personalize(worker, k, repeat, adapt_ids, adapt_ratings, test_ids, episode_seed)` ->
    (ids it predicted, native-scale predictions). `usable` = {worker: {image_id: rating}},
    `generic` = {image_id: the generic model's prediction}. Returns (episode entries, predictions)."""
    episodes, out = [], EpisodePredictions()
    for k in sorted(eligible):
        tick = ticker(k, len(eligible[k]) * repeats) if ticker else None
        for r in range(repeats):
            for w in eligible[k]:
                adapt_ids, test_ids = draw(usable[w], w, k, r, seed)
                y_a = np.array([usable[w][i] for i in adapt_ids])
                got_ids, pers = personalize(w, k, r, adapt_ids, y_a, test_ids, _episode_seed(seed, w, k, r))
                got = dict(zip(got_ids, np.asarray(pers, dtype=np.float64)))
                ids = [i for i in test_ids if i in got]  # finetune-all may lose an unreadable image
                y_t = np.array([usable[w][i] for i in ids])
                g_t = np.array([generic[i] for i in ids])
                p_t = np.array([got[i] for i in ids])
                episodes.append({"worker": w, "k": k, "repeat": r, "n_adapt": len(adapt_ids), "n_test": len(ids),
                                 "srcc_generic": srcc_or_none(y_t, g_t), "srcc_personalized": srcc_or_none(y_t, p_t)})
                out.add(w, k, r, ids, y_t, p_t, g_t)
                if tick:
                    tick()
    return episodes, out


# ----------------------------------------------------------------------------- records


class EpisodePredictions:
    """The predictions file of a piaa record: one row per (episode, test image). Its columns
    include `image_id, theme, true, pred` so that `results.Predictions.from_csv` reads it too."""

    HEAD = ["worker", "k", "repeat", "image_id", "theme", "true", "pred", "pred_generic"]

    def __init__(self):
        self.rows: list[list] = []

    def add(self, worker, k, repeat, ids, true, pred, generic) -> None:
        for i, t, p, g in zip(ids, true, pred, generic):
            self.rows.append([worker, k, repeat, i, "", repr(float(t)), repr(float(p)), repr(float(g))])

    def to_csv(self) -> str:
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.HEAD)
        w.writerows(self.rows)
        return buf.getvalue()


def verify_record(record: dict, predictions_path: Path, tol: float = 1e-9) -> list[str]:
    """Problems found when every episode's SRCCs and the summary are recomputed from the
    predictions file (empty: all agree)."""
    import csv

    with open(predictions_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["worker"], int(r["k"]), int(r["repeat"])), []).append(r)
    problems = []
    episodes = record["piaa"]["episodes"]
    for e in episodes:
        g = groups.pop((e["worker"], e["k"], e["repeat"]), [])
        true = [float(r["true"]) for r in g]
        for name, col in (("srcc_personalized", "pred"), ("srcc_generic", "pred_generic")):
            v = srcc_or_none(true, [float(r[col]) for r in g]) if len(g) > 1 else None
            if (v is None) != (e[name] is None) or (v is not None and abs(v - e[name]) > tol):
                problems.append(f"episode {e['worker']} k={e['k']} r={e['repeat']}: {name} stored {e[name]}, "
                                f"recomputed {v}")
        if len(g) != e["n_test"]:
            problems.append(f"episode {e['worker']} k={e['k']} r={e['repeat']}: {len(g)} rows, n_test {e['n_test']}")
    problems += [f"predictions of an episode the record does not list: {key}" for key in groups]
    shots = [int(k) for k in record["piaa"]["summary"]]
    again = summarize(episodes, shots, record["plan"]["repeats"])
    if json.dumps(again, sort_keys=True) != json.dumps(record["piaa"]["summary"], sort_keys=True):
        problems.append("the summary differs from the one recomputed from the episodes")
    return problems


def table_rows(records=None) -> list[dict]:
    """Rows of the leaderboard's FLICKR-AES personalized section: one per (model, k) of the
    newest piaa record of each model on each dataset, beside the reported number (split `piaa`,
    same k) of the model's card; then `REFERENCE_ONLY` rows (no model here). Keys: model,
    dataset, k, mean, sd, n_repeats, generic_mean, method, run_id, reported, reported_sd, source."""
    from .cards import load_card
    from .registry import model_info
    from .results import read_records

    records = read_records() if records is None else records
    newest: dict[tuple, dict] = {}
    for _, rec in records:
        if rec.get("protocol") != PROTOCOL:
            continue
        key = (rec["model"], rec["dataset"])
        if key not in newest or rec["created"] > newest[key]["created"]:
            newest[key] = rec
    rows = []
    for (model, dataset), rec in sorted(newest.items()):
        try:
            reported = [r for r in load_card(model_info(model).family).reported
                        if r["model"] == model and r.get("split") == SPLIT and r["metric"] == "srcc"]
        except IAAError:
            reported = []
        for k, s in rec["piaa"]["summary"].items():
            rep = next((r for r in reported if str(r.get("k")) == k and r["dataset"] == dataset.removeprefix("synth-")
                        and not dataset.startswith("synth-")), None)
            rows.append({"model": model, "dataset": dataset, "k": int(k), "mean": s["personalized"]["mean"],
                         "sd": s["personalized"]["sd"], "n_repeats": s["n_repeats"],
                         "generic_mean": s["generic"]["mean"], "method": rec["piaa"]["settings"]["method"],
                         "run_id": rec["run_id"], "reported": rep["value"] if rep else None,
                         "reported_sd": rep.get("sd") if rep else None, "source": rep["source"] if rep else None})
    rows += [{"model": r["method"], "dataset": "flickr-aes", "k": r["k"], "mean": None, "sd": None, "n_repeats": None,
              "generic_mean": None, "method": None, "run_id": None, "reported": r["value"], "reported_sd": r["sd"],
              "source": r["source"]} for r in REFERENCE_ONLY]
    return rows


# ----------------------------------------------------------------------------- the run


@dataclass
class PiaaConfig:
    model: str
    dataset: str = "flickr-aes"
    shots: list[int] = field(default_factory=lambda: [10, 100])
    repeats: int = 10
    adapt: str | None = None  # None: the card's method
    adapt_steps: int | None = None
    adapt_lr: float | None = None
    weights: Path | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "cpu"
    pretrained: str | None = None
    data_root: Path | None = None
    images: Path | None = None
    strict: bool = False
    workers: int = 0
    dataset_options: dict = field(default_factory=dict)
    results_root: Path | None = None


def _source_maker(model, test, recipe, cfg: PiaaConfig, label: str):
    """`make(samples, train=, seed=, batch_size=None)` -> a batch source: the reference pixel
    path, or the features of a frozen-trunk model (MLSP), extracted once for every test image
    (the runner's cache: same label, so a generic run's features are reused)."""
    from .data.batches import ReferenceSource

    min_last = 2 if getattr(model, "batch_dependent", False) else 1
    store = None
    if getattr(model, "feature_cache", False):
        from .features import FeatureStore

        store = FeatureStore.extract(model, {"test": test}, recipe.test_transforms, device=cfg.device,
                                     workers=cfg.workers, label=label)

    def make(samples, *, train: bool, seed: int, batch_size: int | None = None):
        bs = batch_size or recipe.eval_batch_size
        kw = dict(train=train, seed=seed, drop_last=False, min_last=1 if train else min_last)
        if store is not None:
            return store.source(samples, bs, **kw)
        return ReferenceSource(samples, recipe.train_transforms if train else recipe.test_transforms, bs,
                               workers=0 if train else cfg.workers, **kw)
    return make


def _resolve(run_cfg):
    """(what `runner.execute` takes, the resolved recipe): the `RunPlan` and its recipe (with
    the model's declared input) where the runner plans, else the request and the card's recipe."""
    try:
        from .plan import resolve
    except ImportError:
        from .runner import resolve_recipe

        return run_cfg, resolve_recipe(run_cfg)
    plan = resolve(run_cfg)
    return plan, plan.recipe_obj()


def _checkpoint_of(record: dict, record_path: Path, dataset: str, model: str) -> Path:
    """The weights the generic record's metrics come from: its `checkpoint` (relative to the
    runs folder), else best.pt (or last.pt) of the run folder whose `done` marker names it."""
    from .paths import runs_dir

    if record.get("checkpoint"):
        ck = Path(record["checkpoint"])
        ck = ck if ck.is_absolute() else runs_dir() / ck
        if ck.is_file():
            return ck
    for done in (runs_dir() / dataset / model).glob("*/*/done"):
        if done.read_text().strip() == str(record_path):
            for name in ("best.pt", "last.pt"):
                if (done.parent / name).is_file():
                    return done.parent / name
    raise IAAError(f"piaa: the checkpoint of the generic run {record_path} was not found under {runs_dir()}",
                   "pass the trained weights with --weights")


class _Ticker:
    """Progress of the episodes (workers x repeats per k): a rich task, or plain lines."""

    def __init__(self, progress, log, label: str, total: int):
        self.progress, self.log, self.label, self.total, self.done = progress, log, label, total, 0
        self.task = progress.add_task(label, total=total) if progress else None
        self.every = max(1, total // 10)

    def __call__(self):
        self.done += 1
        if self.progress:
            self.progress.update(self.task, advance=1)
        elif self.done % self.every == 0 or self.done == self.total:
            self.log(f"{self.label}: {self.done}/{self.total} episodes (workers x repeats)")


def run_piaa(cfg: PiaaConfig, progress=None, log=print) -> tuple[dict, Path]:
    """The whole protocol (module docstring); returns (record, record path)."""
    from . import api
    from .data.flickr_aes import list_workers
    from .evaluate import predict
    from .protocol import load_protocol
    from .registry import dataset_info, model_info
    from .results import environment, git_state, write_record
    from .runner import RunConfig, execute
    from .train import load_checkpoint, load_model_state

    t_start = time.perf_counter()
    info = model_info(cfg.model)
    dataset_info(cfg.dataset)
    if cfg.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {cfg.repeats}")
    shots = parse_shots(cfg.shots)
    settings = card_settings(cfg.model, cfg.adapt, {"steps": cfg.adapt_steps, "lr": cfg.adapt_lr})
    protocol = load_protocol()
    dp = protocol.dataset(cfg.dataset)
    run_cfg = RunConfig(model=cfg.model, dataset=cfg.dataset, data_root=cfg.data_root, images=cfg.images,
                        split=dp.split, recipe=cfg.recipe, epochs=cfg.epochs, batch_size=cfg.batch_size,
                        seed=cfg.seed, device=cfg.device, weights=cfg.weights, pretrained=cfg.pretrained,
                        strict=cfg.strict, workers=cfg.workers, dataset_options=dict(cfg.dataset_options),
                        train=cfg.weights is None, results_root=cfg.results_root)
    plan, recipe = _resolve(run_cfg)
    data = api.load_dataset(cfg.dataset, root=cfg.data_root, split=dp.split, images=cfg.images, strict=cfg.strict,
                            **{**dp.options, **cfg.dataset_options})
    test = data.splits.get("test") or []
    workers = list_workers(data)
    by_worker = worker_images(test, workers)
    eligibility({w: len(v) for w, v in by_worker.items()}, shots)  # a k no worker can serve: error before training

    log(f"piaa: generic model {cfg.model} on {cfg.dataset} ({data.split} split: {len(data.splits['train'])} "
        f"train / {len(test)} test images, {len(workers)} test workers)")
    generic, generic_path = execute(plan, progress=progress, log=log)
    head_kind = generic["head"]
    pretrained = cfg.pretrained or recipe.pretrained
    torch.manual_seed(cfg.seed)
    model = api.create_model(cfg.model, head=head_kind, pretrained=pretrained, weights=cfg.weights, **recipe.options)
    if cfg.weights is None and recipe.epochs > 0:
        load_model_state(model, load_checkpoint(_checkpoint_of(generic, generic_path, cfg.dataset, cfg.model))["model"])
    model.to(cfg.device).eval()
    scale_max = float(data.scale[1])

    sources = _source_maker(model, test, recipe, cfg, label=f"{cfg.dataset}-{data.split}")
    head = head_of(model, settings.head_module) if settings.method != "finetune-all" else None
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach().float().cpu())) if head else None
    t0 = time.perf_counter()
    try:
        preds, failed = predict(model, sources(test, train=False, seed=cfg.seed), scale_max=scale_max,
                                device=cfg.device, strict=cfg.strict)
    finally:
        if hook:
            hook.remove()
    row = {i: n for n, i in enumerate(preds.image_id)}
    gen = np.asarray(preds.pred, dtype=np.float64)
    crops, x_head, feats, head_check = 1, None, None, None
    if head is not None:
        x_head = torch.cat(captured)
        crops = len(x_head) // max(len(row), 1)
        if settings.method == "ridge":
            feats = penultimate(head, x_head, crops)
        else:
            with torch.no_grad():
                again = head_scores(model, head.eval(), x_head.to(cfg.device), crops).double().cpu().numpy() * scale_max
            head_check = float(np.max(np.abs(again - gen))) if len(gen) else 0.0
            if head_check > 0.02 * scale_max:
                raise IAAError(f"piaa: the head module '{settings.head_module}' does not reproduce the model's "
                               f"predictions from its input (max difference {head_check:.4f})",
                               "name the module that ends the forward pass in the card's piaa.head_module")
    failed_ids = {test[i].image_id: r for i, r in failed}
    usable = {w: {i: r for i, r in v.items() if i in row} for w, v in by_worker.items()}
    eligible, skipped = eligibility({w: len(v) for w, v in usable.items()}, shots)
    for s in skipped:
        lost = len(by_worker[s["worker"]]) - s["n_images"]
        if lost:
            s["reason"] += f" ({lost} of the worker's images could not be used)"
    t_features = time.perf_counter() - t0

    sample_of = {s.image_id: s for s in test}
    xs = x_head.reshape(len(row), crops, *x_head.shape[1:]) if x_head is not None else None

    def personalize(w, k, r, adapt_ids, y_a, test_ids, es):
        a_rows, t_rows = [row[i] for i in adapt_ids], [row[i] for i in test_ids]
        if settings.method == "ridge":
            return test_ids, gen[t_rows] + adapt_ridge(feats[a_rows], y_a - gen[a_rows], feats[t_rows],
                                                       settings.params["alpha"])
        if settings.method == "finetune-head":
            return test_ids, adapt_head(model, head, xs[a_rows].flatten(0, 1),
                                        torch.tensor(y_a / scale_max, dtype=torch.float32),
                                        xs[t_rows].flatten(0, 1), crops, settings.params, es, cfg.device) * scale_max
        own = lambda ids: [dataclasses.replace(sample_of[i], score=usable[w][i], votes=None) for i in ids]  # noqa: E731
        p_all, p_ids = adapt_all(model, own(adapt_ids), own(test_ids), recipe, settings.params, scale_max=scale_max,
                                 seed=es, device=cfg.device, sources=sources, strict=cfg.strict)
        return p_ids, np.asarray(p_all)

    t0 = time.perf_counter()
    episodes, out = run_episodes(usable, dict(zip(preds.image_id, gen)), eligible, cfg.repeats, cfg.seed,
                                 personalize, lambda k, n: _Ticker(progress, log, f"piaa k={k} ({settings.method})", n))
    t_episodes = time.perf_counter() - t0
    summary = summarize(episodes, shots, cfg.repeats)
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "protocol": PROTOCOL, "model": cfg.model, "family": info.family, "head": head_kind, "dataset": cfg.dataset,
        "scale": list(data.scale), "dataset_options": dict(cfg.dataset_options),
        "split": {"name": SPLIT, "generic_split": data.split, "manifest": data.manifest},
        "recipe": recipe.to_dict(),
        "plan": {"shots": shots, "repeats": cfg.repeats, "seed": cfg.seed, "min_images": "k + 2",
                 "draw": "random.Random('piaa:<seed>:<worker>:<k>:<repeat>').shuffle(sorted image ids)[:k]",
                 "weights": str(cfg.weights) if cfg.weights else None, "recipe": recipe.name,
                 "pretrained": pretrained, "device": cfg.device, "aggregate": "per k: mean and sd (ddof 1) over "
                 "repeats of the per-repeat mean over workers"},
        "metrics": {},
        "generic": {"run_id": generic_path.stem, "record": str(generic_path), "checkpoint": generic.get("checkpoint"),
                    "metrics": generic["metrics"],
                    "counts": generic["counts"]},
        "piaa": {"settings": settings.to_dict(), "summary": summary, "episodes": episodes,
                 "skipped_workers": skipped, "test_workers": workers,
                 "head_reproduces_generic_max_abs_diff": head_check},
        "counts": {"test_workers": len(workers), "episodes": len(episodes), "evaluated": len(out.rows),
                   "test": len(test), "skipped": len(failed_ids), "skipped_workers": len(skipped)},
        "skipped": [{"where": str(sample_of[i].path), "reason": r, "stage": "test"} for i, r in sorted(failed_ids.items())],
        "provenance": {**git_state(), **environment(cfg.device), "seed": cfg.seed, "label_files": data.label_files,
                       "weights": {"path": str(cfg.weights), "sha256": _sha(cfg.weights)} if cfg.weights else None},
        "timings": {"generic_s": round(generic["timings"].get("train_s", 0) + generic["timings"].get("eval_s", 0), 3),
                    "features_s": round(t_features, 3), "episodes_s": round(t_episodes, 3),
                    "total_s": round(time.perf_counter() - t_start, 3)},
    }
    path = write_record(record, out, root=cfg.results_root)
    record = json.loads(path.read_text(encoding="utf-8"))
    return record, path


def _sha(path) -> str:
    from .data.samples import sha256_file

    return sha256_file(path)


def print_summary(console, record: dict, path: Path) -> None:
    """The per-k table the command prints."""
    from rich.table import Table

    s = record["piaa"]["settings"]
    t = Table(title=f"{record['model']} on {record['dataset']}: personalized SRCC ({s['method']}, "
                    f"{record['plan']['repeats']} repeats, {record['counts']['test_workers']} test workers)")
    for c in ("k", "workers", "personalized", "generic", "difference"):
        t.add_column(c, justify="right")

    def ms(x):
        return "-" if x["mean"] is None else f"{x['mean']:.4f}" + (f" ± {x['sd']:.4f}" if x["sd"] is not None else "")

    for k, e in record["piaa"]["summary"].items():
        t.add_row(k, str(e["n_workers"]), ms(e["personalized"]), ms(e["generic"]), ms(e["difference"]))
    console.print(t)
    if record["piaa"]["skipped_workers"]:
        console.print(f"{len(record['piaa']['skipped_workers'])} (worker, k) pair(s) skipped: too few images "
                      "(listed in the record)")
    console.print(f"record: {path}")
