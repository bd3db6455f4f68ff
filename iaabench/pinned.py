"""The pinned quick runs `iaabench check` re-runs: the machine they run on, the math libraries held
to one instruction set, each re-run in its own process, and the calibration that derives their
tolerances (`iaabench check --calibrate`).

Why a subprocess: MKL, oneDNN and PyTorch's own kernels choose their instruction set (and so their
floating-point rounding) when torch is imported, from `MKL_CBWR`, `ONEDNN_MAX_CPU_ISA` and
`ATEN_CPU_CAPABILITY`; the thread count also changes how reductions are split. These are set in
the environment of a fresh interpreter before it imports torch.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import IAAError

#: Environment variables that hold the math libraries to one instruction-set level. "native" sets none.
ISA_ENV = {
    "avx": {"ONEDNN_MAX_CPU_ISA": "AVX", "MKL_CBWR": "AVX", "ATEN_CPU_CAPABILITY": "default"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_CBWR": "AVX512", "ATEN_CPU_CAPABILITY": "avx512"},
}
ISA_VARS = sorted({k for env in ISA_ENV.values() for k in env})
ISA_ORDER = ("sse", "avx", "avx2", "avx512")  # ascending
#: CPU flags recorded with a pinned run (the ones the libraries dispatch on)
ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "amx_tile", "amx_bf16")
#: metrics whose derived tolerance may not exceed this (benchmark.yaml is refused otherwise)
TOLERANCE_CAP = {"srcc": 0.05, "plcc": 0.05}
#: what a pinned run must show to be worth re-running: it learns, on enough test images
MIN_SRCC = 0.2
MIN_TEST = 200
MIN_SEEDS = 5


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    from .results import cpu_model as model

    return model()


def native_isa(flags: set[str] | None = None) -> str:
    """The highest level of ISA_ORDER this CPU runs (from /proc/cpuinfo; else what torch reports)."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        try:
            import torch

            cap = torch.backends.cpu.get_cpu_capability().lower()
        except Exception:  # noqa: BLE001 - no torch capability query: assume the x86-64 baseline
            return "sse"
        return "avx512" if "avx512" in cap else "avx2" if "avx2" in cap else "sse"
    if "avx512f" in flags and "avx512bw" in flags and "avx512vl" in flags:
        return "avx512"
    if "avx2" in flags and "fma" in flags:
        return "avx2"
    return "avx" if "avx" in flags else "sse"


def supported_isas(native: str | None = None) -> list[str]:
    """The levels in ISA_ENV this CPU can be held to."""
    top = ISA_ORDER.index(native or native_isa())
    return [isa for isa in ISA_ENV if ISA_ORDER.index(isa) <= top]


def other_isa(standard: str, native: str | None = None) -> str:
    """An instruction set other than `standard` that this CPU runs: its native one where that
    differs (unheld libraries), else the level below."""
    native = native or native_isa()
    if standard == "native":
        return "avx2" if native != "avx2" and "avx2" in supported_isas(native) else "avx"
    if native != standard:
        return "native"
    lower = [i for i in supported_isas(native) if ISA_ORDER.index(i) < ISA_ORDER.index(standard)]
    if not lower:
        raise IAAError(f"this CPU ({native}) runs no instruction set other than {standard} to hold the libraries to")
    return lower[-1]


def isa_environment(isa: str, threads: int, base: dict | None = None) -> dict:
    """A process environment with the math libraries held to `isa` ("native": left free) and
    `threads` threads."""
    if isa != "native" and isa not in ISA_ENV:
        raise IAAError(f"unknown instruction set '{isa}'", f"known: native, {', '.join(ISA_ENV)}")
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in ISA_VARS}
    env.update(ISA_ENV.get(isa, {}))
    # idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads starve the one
    # working (the partition of the work, and so the numbers, depend on the thread count only)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"})
    return env


def machine(threads: int | None = None) -> dict:
    """This process's CPU, instruction set (native and held), threads and math-library versions."""
    import torch

    show = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", show)
    dnn = re.search(r"(?:MKL-DNN|oneDNN) v([\w.\-]+)", show)
    flags = cpu_flags()
    held = {k: os.environ[k] for k in ISA_VARS if k in os.environ}
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "isa": native_isa(flags),
        "flags": sorted(f for f in ISA_FLAGS if f in flags),
        "held": held or None, "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads or torch.get_num_threads(),
        "libraries": {"torch": torch.__version__, "mkl": mkl.group(1) if mkl else None,
                      "onednn": dnn.group(1) if dnn else None, "python": platform.python_version()},
    }


def describe_machine(m: dict | None) -> str:
    if not m:
        return "not recorded"
    lib = m.get("libraries", {})
    held = m.get("held")
    held_s = "held to " + "/".join(f"{k}={v}" for k, v in sorted(held.items())) if held else "not held"
    return (f"{m.get('cpu')}, ISA {m.get('isa')} ({held_s}; torch kernels {m.get('aten_capability')}), "
            f"{m.get('threads')} threads, torch {lib.get('torch')}, MKL {lib.get('mkl')}, oneDNN {lib.get('onednn')}")


# --- one pinned run in its own process ----------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One perturbation of a pinned run: a seed, an instruction-set hold and a thread count."""
    seed: int
    isa: str
    threads: int

    @property
    def label(self) -> str:
        return f"seed {self.seed}, ISA {self.isa}, {self.threads} thread{'s' if self.threads != 1 else ''}"


def run_variant(pin, variant: Variant, results_root: Path, device: str = "cpu", pretrained: str | None = None,
                log=print, calibrating: bool = False) -> dict:
    """Run pinned entry `pin` as `variant` in a fresh interpreter; returns its record (written
    under `results_root`/<dataset>/<model>/, with `provenance.machine` added). `calibrating`: the
    child loads benchmark.yaml as `check --calibrate` does (an entry not derived yet is accepted)."""
    spec = {"model": pin.model, "dataset": pin.dataset, "seed": variant.seed, "recipe": pin.recipe,
            "options": dict(pin.options), "device": device, "results_root": str(results_root),
            "threads": variant.threads, "pretrained": pretrained, "calibrating": bool(calibrating)}
    with tempfile.TemporaryDirectory(prefix="iaabench-pinned-") as tmp:
        out = Path(tmp) / "record.json"
        spec["out"] = str(out)
        env = isa_environment(variant.isa, variant.threads)
        env["IAABENCH_RUNS"] = str(Path(tmp) / "runs")  # checkpoints of a re-run are scratch
        env.update(_scratch_cache(Path(tmp)))
        proc = subprocess.run([sys.executable, "-m", "iaabench.pinned", json.dumps(spec)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise IAAError(f"pinned run {pin.model} on {pin.dataset} ({variant.label}) failed "
                           f"(exit {proc.returncode}):\n{tail}")
        done = json.loads(out.read_text(encoding="utf-8"))
        rec = json.loads(Path(done["record"]).read_text(encoding="utf-8"))
        rec["cpu_seconds"] = done["cpu_seconds"]  # not stored: what the run cost, for the CI budget
        return rec


def _scratch_cache(tmp: Path) -> dict:
    """A cache folder of the run's own, so that nothing computed under another hold (MLSP's cached
    features, cached pixels) is reused, sharing only the generated synthetic datasets (their bytes
    do not depend on the math libraries) and the weights folder."""
    from .paths import cache_dir, weights_dir

    real = cache_dir() / "synthetic"
    real.mkdir(parents=True, exist_ok=True)
    own = tmp / "cache"
    own.mkdir()
    (own / "synthetic").symlink_to(real, target_is_directory=True)
    return {"IAABENCH_CACHE": str(own), "IAABENCH_WEIGHTS": str(weights_dir())}


def _child(spec: dict) -> None:
    """Entry point of the subprocess: the environment is already set; torch is imported now."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from .results import amend_record
    from .runner import RunConfig, execute

    if spec.get("calibrating"):
        _load_protocol_calibrating()
    rec, path = execute(RunConfig(model=spec["model"], dataset=spec["dataset"], seed=spec["seed"],
                                  recipe=spec["recipe"] or None, dataset_options=spec["options"],
                                  device=spec["device"], results_root=Path(spec["results_root"]),
                                  pretrained=spec["pretrained"]), log=lambda *a: None)
    amend_record(path, lambda rec: rec["provenance"].update(machine=machine(int(spec["threads"]))))
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    Path(spec["out"]).write_text(json.dumps({"record": str(path), "cpu_seconds": round(use.ru_utime + use.ru_stime, 1)}))


def _load_protocol_calibrating() -> None:
    """In this (child) process, every `load_protocol` loads benchmark.yaml as `check --calibrate`
    does: the entry being calibrated has no derived tolerance yet, which a plain load refuses."""
    from functools import lru_cache

    from . import protocol

    plain = protocol.load_protocol

    @lru_cache(maxsize=None)
    def load(path=None, calibrating: bool = True):
        return plain(path, calibrating=True)

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("iaabench") and getattr(mod, "load_protocol", None) is plain:
            mod.load_protocol = load


# --- calibration ------------------------------------------------------------------------------------


def perturbations(standard: str, threads: int, native: str | None = None, seeds: int = MIN_SEEDS) -> list[Variant]:
    """The variants a correct change of machine stands for: `seeds` seeds on the standard hold,
    then seed 0 with the libraries free (native), held to every other level this CPU runs at or
    above AVX2, and on one thread (or two where the standard is one)."""
    native = native or native_isa()
    out = [Variant(s, standard, threads) for s in range(seeds)]
    isas = ["native"] + [i for i in supported_isas(native) if i != "avx"]
    out += [Variant(0, isa, threads) for isa in isas if isa != standard]
    out.append(Variant(0, standard, 1 if threads != 1 else 2))
    return out


def derive(values: list[dict[str, float]], reference: dict[str, float], metrics: list[str]) -> dict:
    """Per metric: sd over the runs (n-1), and tolerance = max(3 sd, the largest distance of any
    run from the reference), rounded up to 4 decimals."""
    if len(values) < 2:
        raise IAAError(f"calibration needs at least 2 runs, got {len(values)}")
    sd, tol = {}, {}
    for m in metrics:
        xs = [float(v[m]) for v in values]
        if any(math.isnan(x) for x in xs) or math.isnan(reference[m]):
            raise IAAError(f"calibration: metric {m} is NaN in a run (the model does not learn)")
        mean = sum(xs) / len(xs)
        s = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        sd[m] = round(s, 6)
        tol[m] = math.ceil(max(3 * s, max(abs(x - reference[m]) for x in xs)) * 1e4 - 1e-9) / 1e4
    return {"sd": sd, "tolerance": tol}


def calibrate(pin, runner: Callable[[object, Variant], dict], standard: str, threads: int,
              native: str | None = None, seeds: int = MIN_SEEDS, log=print, jobs: int = 1) -> dict:
    """Re-run `pin` over its perturbations with `runner(pin, variant) -> record`; returns
    {"reference": record, "tolerance": ..., "calibration": ..., "problems": [...]}. The reference is
    the seed's run on the standard hold. Problems (a run that does not learn, too few test images,
    a tolerance over the cap) are listed, not raised, so every entry is reported."""
    variants = perturbations(standard, threads, native, seeds)
    metrics = sorted(pin.tolerance) if pin.tolerance else ["plcc", "srcc"]

    def one(v: Variant) -> dict:
        t0 = time.perf_counter()
        rec = runner(pin, Variant(pin.seed + v.seed, v.isa, v.threads))
        log(f"  {pin.model}, {v.label}: " + ", ".join(f"{m} {rec['metrics'][m]['value']:.4f}" for m in metrics)
            + f" ({time.perf_counter() - t0:.0f} s, {rec.get('cpu_seconds', '?')} CPU-s)")
        return rec

    if jobs > 1:  # each run is its own process: results do not depend on how many run at once
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            records = list(zip(variants, pool.map(one, variants)))
    else:
        records = [(v, one(v)) for v in variants]
    reference = records[0][1]
    values = [{m: r["metrics"][m]["value"] for m in metrics} for _, r in records]
    d = derive(values, values[0], metrics)
    problems = []
    srcc, n_test = reference["metrics"]["srcc"]["value"], reference["counts"]["test"]
    if not srcc > MIN_SRCC:
        problems.append(f"SRCC {srcc:.3f} on seed {pin.seed}: the model does not learn on this run (needs > {MIN_SRCC})")
    if n_test < MIN_TEST:
        problems.append(f"{n_test} test images (needs >= {MIN_TEST}): raise options.n")
    for m, cap in TOLERANCE_CAP.items():
        if m in d["tolerance"] and d["tolerance"][m] > cap:
            problems.append(f"derived {m} tolerance {d['tolerance'][m]} is over the cap {cap} (sd {d['sd'][m]}): "
                            "make the run more stable (more images or epochs) or drop it")
    calibration = {
        "n_runs": len(records), "sd": d["sd"],
        "perturbations": [v.label for v, _ in records],
        "values": {m: [round(v[m], 4) for v in values] for m in metrics},
        "date": datetime.date.today().isoformat(),
        "machine": describe_machine(reference["provenance"].get("machine")),
    }
    return {"reference": reference, "tolerance": d["tolerance"], "calibration": calibration, "problems": problems}


def write_pinned_section(path: Path, updated: dict[int, dict]) -> None:
    """Rewrite the `pinned:` list of benchmark.yaml with entry i's tolerance and calibration
    replaced by updated[i]; every other line of the file (comments included) stays as it is."""
    import yaml

    from .config import read_yaml

    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip() in ("pinned:", "pinned: []")), None)
    if start is None:
        raise IAAError(f"{path}: no top-level 'pinned:' line to write the calibration under")
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "\n", "\r", "-", "")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    entries = read_yaml(path)["pinned"] or []
    body = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        if i in updated:
            entry.pop("tolerance", None)
            entry.pop("calibration", None)
            entry.update(updated[i])
        dumped = yaml.safe_dump([entry], default_flow_style=None, sort_keys=False, width=110, allow_unicode=True)
        body.append("".join("  " + line for line in dumped.splitlines(keepends=True)))
    new = "".join(lines[:start]) + "pinned:\n" + "".join(body) + "".join(lines[end:])
    from .io import atomic_write

    atomic_write(path, new)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
