"""Where a sweep's plans run: in this process (`run_local`), as Slurm jobs through submitit
(`run_submitit`; submitit's LocalExecutor runs the same jobs as local processes), or as Ray
tasks (`run_ray`). Every executor runs `run_plan`, which returns at once for a plan whose
record exists and otherwise executes it with `resume` on, so a requeued, retried or restarted
plan continues from its checkpoint instead of starting again.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError, IAAError
from .paths import results_dir

#: Annotations name `sweep.PlanEntry` and `sweep.Board` (never imported here: sweep imports this module).


def _todo(entries, board) -> list:
    """The entries still to run; the done ones are marked so on the board."""
    for e in entries:
        if e.state == "done":
            e.outcome = "done"
            board.update(e, "done (record exists)")
    return [e for e in entries if e.state != "done"]


def records_by_key(root: Path | None = None) -> dict[str, tuple[Path, str]]:
    """plan_key -> (record path, run id) of every finished record under `root` (results/)."""
    root = root or results_dir()
    out: dict[str, tuple[Path, str]] = {}
    for p in sorted(root.glob("*/*/*.json")):
        if p.name.startswith("."):
            continue
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # `iaabench check` names unreadable records; a sweep only looks for its own
        key = rec.get("plan_key") if isinstance(rec, dict) else None
        if key:
            out.setdefault(key, (p, str(rec.get("run_id", p.stem))))
    return out


def has_checkpoint(plan) -> bool:
    """A checkpoint of an unfinished run of this plan (what `resume` continues)."""
    from .paths import runs_dir

    base = runs_dir() / plan.dataset / plan.model / plan.key()
    return base.is_dir() and any((p / "last.pt").is_file() and not (p / "done").exists() for p in base.iterdir())


def execute_plan(plan, log: Callable[..., None]) -> tuple[dict, Path]:
    from .runner import execute

    return execute(plan, rank=0, world_size=1, log=log)



def run_plan(plan, log: Callable[[str], None] | None = None) -> dict:
    """Run `plan` to its record: a plan already done returns its record; a partial one resumes
    from its checkpoint. Returns {state, run_id, record}."""
    found = records_by_key().get(plan.key())
    if found:
        return {"state": "done", "run_id": found[1], "record": str(found[0]), "ran": False}
    record, path = execute_plan(plan, log=log or (lambda *a, **k: None))
    return {"state": "done", "run_id": record.get("run_id", Path(path).stem), "record": str(path), "ran": True}


class PlanJob:
    """The callable a Slurm job runs (submitit pickles it). On a timeout or a preemption
    submitit calls `checkpoint`, which requeues the same plan; the new job resumes from the
    plan's last checkpoint (`run_plan`), or returns at once if the record was written."""

    def __init__(self, plan, env: dict | None = None):
        self.plan = plan
        self.env = dict(env or {})

    def __call__(self) -> dict:
        import os

        os.environ.update(self.env)
        return run_plan(self.plan, log=lambda *a, **k: print(*a, flush=True))

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(PlanJob(self.plan, self.env))


def _paths_env() -> dict:
    """The folders a job must write to: the same as this process's (results, runs, cache)."""
    import os

    from .paths import cache_dir, runs_dir

    env = {"IAABENCH_RESULTS": str(results_dir()), "IAABENCH_RUNS": str(runs_dir()),
           "IAABENCH_CACHE": str(cache_dir())}
    for k in ("IAABENCH_DATA", "IAABENCH_WEIGHTS", "IAABENCH_SHARED", "IAABENCH_FAULT"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    return env



@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    time: str = "24:00:00"  # minutes, or [D-]HH:MM[:SS]
    mem: str | None = None  # e.g. 64G (a bare number is GB)
    extra: dict = field(default_factory=dict)  # --slurm-option KEY=VALUE
    array: bool = True  # one job array; False: one job per plan
    wait: bool = True


def parse_time_minutes(text: str) -> int:
    """Slurm's time formats (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) as whole minutes."""
    t = str(text).strip()
    try:
        days, _, t = t.rpartition("-") if "-" in t else ("0", "", t)
        parts = [int(x) for x in t.split(":")]
        if not 1 <= len(parts) <= 3:
            raise ValueError
        if days != "0" or "-" in str(text):  # D-HH[:MM[:SS]]
            h, m, s = (parts + [0, 0])[:3]
        else:  # M, M:S, H:M:S
            h, m, s = [0] * (3 - len(parts)) + parts if len(parts) == 3 else (0, *(parts + [0])[:2])
        minutes = int(days) * 1440 + h * 60 + m + (1 if s else 0)
    except ValueError:
        raise ConfigError(f"--time {text}: expected minutes or [D-]HH:MM:SS") from None
    if minutes <= 0:
        raise ConfigError(f"--time {text}: must be positive")
    return minutes


def parse_key_values(values: Sequence[str], flag: str) -> dict:
    out = {}
    for v in values or []:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise ConfigError(f"{flag} {v}: expected KEY=VALUE")
        out[k] = val
    return out


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise IAAError("--executor slurm: sbatch was not found on PATH, so this machine cannot submit Slurm jobs; "
                       "nothing was submitted",
                       "run the sweep on a Slurm login node, or use --executor local (this machine) or ray")


def _last_line(text: str | None) -> str | None:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _fail(entry: PlanEntry, exc: BaseException, log_tail: str | None = None) -> None:
    import traceback

    entry.outcome = "failed"
    first = (str(exc).strip().splitlines() or [""])[0]
    entry.error = f"{type(exc).__name__}: {first}".strip()
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    entry.last_log_line = _last_line(log_tail) or _last_line(str(exc)) or _last_line(tb)


def _finish(entry: PlanEntry, out: dict) -> None:
    entry.outcome = "done"
    entry.run_id, entry.record = out.get("run_id"), out.get("record")


def run_local(entries: Sequence[PlanEntry], board: Board, save: Callable[[], None]) -> None:
    """One plan after another in this process; a failure is recorded and the next plan runs."""
    for e in entries:
        if e.state == "done":
            e.outcome = "done"
            board.update(e, "done (record exists)")
            continue
        board.update(e, "resuming" if e.state == "partial" else "running")
        lines: list[str] = []
        t0 = time.perf_counter()
        try:
            out = run_plan(e.plan, log=lambda *a, **k: lines.append(" ".join(str(x) for x in a)))
        except Exception as exc:  # noqa: BLE001 -- one failed plan never stops the others
            _fail(e, exc, lines[-1] if lines else None)
        else:
            _finish(e, out)
        e.seconds = round(time.perf_counter() - t0, 2)
        board.update(e, e.outcome)
        save()


def submitit_executor(folder: Path, cluster: str, opts: SlurmOptions, name: str):
    """A submitit executor: `slurm` (sbatch) or `local` (submitit's LocalExecutor, the same
    jobs as subprocesses of this machine: how the Slurm path is tested without a cluster)."""
    try:
        import submitit
    except ImportError:
        raise IAAError("--executor slurm needs submitit", "pip install submitit") from None
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"name": f"iaabench-{name}", "timeout_min": parse_time_minutes(opts.time),
                              "gpus_per_node": int(opts.gpus_per_job), "cpus_per_task": int(opts.cpus_per_job)}
    if cluster == "slurm":
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.mem:
            params["slurm_mem"] = opts.mem + ("G" if opts.mem.isdigit() else "")
        if opts.extra:
            params["slurm_additional_parameters"] = dict(opts.extra)
    else:
        params.pop("cpus_per_task")
    ex.update_parameters(**params)
    return ex


def run_submitit(entries: Sequence[PlanEntry], board: Board, save: Callable[[], None], opts: SlurmOptions,
                 folder: Path, name: str, cluster: str = "slurm", poll_s: float = 2.0) -> None:
    """Every plan not done as a submitit job (a job array by default). Jobs are checkpointable
    (`PlanJob`): a timed-out or preempted job is requeued and resumes from its checkpoint."""
    if cluster == "slurm":
        require_sbatch()
    todo = _todo(entries, board)
    if not todo:
        return
    ex = submitit_executor(folder, cluster, opts, name)
    env = _paths_env()
    if opts.array:
        with ex.batch():
            pending = [(e, ex.submit(PlanJob(e.plan, env))) for e in todo]
    else:
        pending = [(e, ex.submit(PlanJob(e.plan, env))) for e in todo]
    for e, job in pending:
        e.job_id = str(job.job_id)
        board.update(e, f"submitted (job {job.job_id})")
    save()
    if not opts.wait:
        return
    while pending:
        still = []
        for e, job in pending:
            if not job.done():
                still.append((e, job))
                continue
            try:
                out = job.result()
            except Exception as exc:  # noqa: BLE001 -- the job's failure, recorded
                tail = None
                try:
                    tail = job.stderr()
                except Exception:  # noqa: BLE001
                    pass
                _fail(e, exc, tail)
            else:
                _finish(e, out)
            board.update(e, e.outcome)
            save()
        pending = still
        if pending:
            time.sleep(poll_s)


def _ray_task(plan, env: dict) -> dict:
    import os

    os.environ.update(env)
    return run_plan(plan)


def run_ray(entries: Sequence[PlanEntry], board: Board, save: Callable[[], None], address: str | None,
            gpus_per_job: float, cpus_per_job: float, init_kwargs: dict | None = None) -> None:
    """Every plan not done as a Ray task with its GPU and CPU needs, on the cluster at
    `address` (or a local Ray instance when none is given)."""
    try:
        import ray
    except ImportError:
        raise IAAError("--executor ray needs Ray", "pip install 'iaabench[ray]'") from None
    todo = _todo(entries, board)
    if not todo:
        return
    if not ray.is_initialized():
        try:
            ray.init(address=address or None, **(init_kwargs or {}))
        except Exception as exc:  # noqa: BLE001 -- connection errors of every kind: one message
            raise IAAError(f"--ray-address {address or '(local)'}: cannot connect to Ray ({exc})",
                           "start a cluster (`ray start --head`) or give its address") from None
    have = ray.cluster_resources()
    for what, need in (("CPU", cpus_per_job), ("GPU", gpus_per_job)):
        if need and have.get(what, 0) < need:
            raise IAAError(f"--executor ray: each plan asks for {need:g} {what}(s) but the Ray cluster has "
                           f"{have.get(what, 0):g}", f"lower --{what.lower()}s-per-job or add nodes")
    task = ray.remote(num_gpus=gpus_per_job, num_cpus=cpus_per_job, max_retries=0)(_ray_task)
    env = _paths_env()
    refs = {task.remote(e.plan, env): e for e in todo}
    for e in todo:
        board.update(e, "submitted (Ray task)")
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            e = refs.pop(ref)
            try:
                _finish(e, ray.get(ref))
            except Exception as exc:  # noqa: BLE001 -- the task's failure, recorded
                cause = getattr(exc, "cause", None)
                _fail(e, cause if isinstance(cause, BaseException) else exc)
            board.update(e, e.outcome)
            save()
