"""`iaabench sweep` and `iaabench tune`: the matrix and the learning-rate search."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from .common import DataRoot, console, _device, _parse_lr, _parse_options


def _sweep_run_options(recipe, epochs, batch_size, lr, device, pretrained, fast, workers, option, strict, split,
                       data_root, head) -> dict:
    return {"recipe": recipe, "epochs": epochs, "batch_size": batch_size, "lr": _parse_lr(lr), "device": device,
            "pretrained": pretrained, "fast": fast, "workers": workers, "options": _parse_options(option),
            "strict": strict, "split": split, "data_root": data_root, "head": head}


def sweep(
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated models (default: the leaderboard's)."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Comma-separated datasets (default: the "
                                           "leaderboard's)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (default: 0)."),
    matrix: Optional[Path] = typer.Option(None, "--matrix", help="A YAML matrix file (see iaabench/sweep.py)."),
    name: Optional[str] = typer.Option(None, "--name", help="The sweep's name: its summary is "
                                       "results/sweeps/<name>.json (default: leaderboard, the file's, or a hash)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the plans and their state; run nothing."),
    executor: str = typer.Option("local", "--executor", help="local (this process, one plan after another), slurm "
                                 "(submitit), ray, or submitit-local (the Slurm path as local processes)."),
    recipe: Optional[str] = typer.Option(None, help="Recipe for every plan (default: each model's for the dataset)."),
    epochs: Optional[int] = typer.Option(None, min=0),
    batch_size: Optional[int] = typer.Option(None, min=1),
    lr: List[str] = typer.Option([], "--lr", help="GROUP=VALUE for every plan (repeatable)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto (auto: cuda in Slurm/Ray jobs with GPUs)."),
    pretrained: Optional[str] = typer.Option(None),
    fast: bool = typer.Option(False),
    workers: int = typer.Option(0, min=0),
    option: List[str] = typer.Option([], "--option", help="Dataset loader option KEY=VALUE for every plan."),
    strict: bool = typer.Option(False),
    split: Optional[str] = typer.Option(None),
    data_root: Optional[Path] = DataRoot,
    head: Optional[str] = typer.Option(None),
    partition: Optional[str] = typer.Option(None, help="Slurm partition."),
    gpus_per_job: int = typer.Option(1, min=0, help="GPUs per Slurm job or Ray task (with a cuda device)."),
    cpus_per_job: int = typer.Option(8, min=1, help="CPUs per Slurm job or Ray task."),
    time_limit: str = typer.Option("24:00:00", "--time", help="Slurm time limit: minutes or [D-]HH:MM:SS; a job "
                                   "that reaches it is requeued and resumes from its checkpoint."),
    mem: Optional[str] = typer.Option(None, help="Slurm memory per job (e.g. 64G)."),
    slurm_option: List[str] = typer.Option([], "--slurm-option", help="Any other sbatch option KEY=VALUE "
                                           "(e.g. account=abc, qos=high)."),
    job_array: bool = typer.Option(True, "--job-array/--one-job-per-plan", help="Submit one Slurm job array, or "
                                   "one job per plan."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the Slurm jobs (and fill the summary)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: a local "
                                              "Ray instance)."),
):
    """Run a matrix of plans (models x datasets x seeds); skip the done ones, resume the partial ones.
    Exit code: the number of failed plans (at most 255).

    Examples: iaabench sweep --dry-run;
    iaabench sweep --models nima,tanet --datasets synth-tad66k --seeds 0,1,2 --device cpu;
    iaabench sweep --executor slurm --partition gpu --gpus-per-job 1 --time 12:00:00
    """
    from ..sweep import SlurmOptions, matrix_from_args, parse_key_values, run_sweep

    if device == "auto":
        device = ("cuda" if gpus_per_job > 0 else "cpu") if executor in ("slurm", "ray") else _device("auto")
    elif executor == "local":
        device = _device(device)
    run = _sweep_run_options(recipe, epochs, batch_size, lr, device, pretrained, fast, workers, option, strict,
                             split, data_root, head)
    m = matrix_from_args(models, datasets, seeds, matrix, run, name)
    slurm = SlurmOptions(partition=partition, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job,
                         time=time_limit, mem=mem, extra=parse_key_values(slurm_option, "--slurm-option"),
                         array=job_array, wait=wait)
    out = run_sweep(m, executor=executor, dry_run=dry_run, slurm=slurm, ray_address=ray_address, console=console)
    if not dry_run:
        console.print(f"summary: {out['path']}" + (f"; [red]{out['failed']} plan(s) failed[/red]" if out["failed"]
                                                   else ""))
    raise typer.Exit(min(out["failed"], 255))


def tune(
    model: Optional[str] = typer.Option(None, "--model", "-m"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    trials: int = typer.Option(20, min=0, help="Trials to run in this call (the study keeps the earlier ones)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite file under "
                                          "results/tune/); a shared database lets many machines run one study."),
    study: Optional[str] = typer.Option(None, help="Study name (default: MODEL-DATASET)."),
    recipe: Optional[str] = typer.Option(None, help="The recipe to tune (default: the card's for the dataset)."),
    lr_group: List[str] = typer.Option([], "--lr-group", help="Tune only these parameter groups (repeatable)."),
    lr_range: List[str] = typer.Option([], "--lr-range", help="GROUP=LOW:HIGH, a log-uniform range replacing the "
                                       "card's for that group (repeatable)."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Also search the batch size among these "
                                              "(comma-separated)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Every trial trains this many epochs."),
    epoch_range: Optional[str] = typer.Option(None, "--epoch-range", help="Also search the epochs: LOW,HIGH."),
    choices: bool = typer.Option(False, "--choices", help="Draw learning rates from the card's released sets "
                                 "(as the authors' NNI search did), not log-uniformly between their ends."),
    pruner: str = typer.Option("median", help="median or none."),
    seed: int = typer.Option(0, help="Seed of every trial's run and of the sampler."),
    device: str = typer.Option("auto"),
    fast: bool = typer.Option(False),
    workers: int = typer.Option(0, min=0),
    option: List[str] = typer.Option([], "--option", help="Dataset loader option KEY=VALUE."),
    split: Optional[str] = typer.Option(None),
    data_root: Optional[Path] = DataRoot,
    recipe_name: Optional[str] = typer.Option(None, "--recipe-name", help="Name of the tuned recipe (default: "
                                              "tuned-STUDY)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds."),
    jobs: int = typer.Option(0, min=0, help="Run the trials as this many Slurm jobs on one study (with --executor)."),
    tune_executor: str = typer.Option("slurm", "--executor", help="With --jobs: slurm or submitit-local."),
    partition: Optional[str] = typer.Option(None, help="With --jobs: Slurm partition."),
    gpus_per_job: int = typer.Option(1, min=0, help="With --jobs: GPUs per job."),
    time_limit: str = typer.Option("24:00:00", "--time", help="With --jobs: Slurm time limit per job."),
    show: bool = typer.Option(False, "--show", help="Print the study's trials and best parameters; run nothing."),
    plots: bool = typer.Option(False, "--plots", help="With --show: also draw the study into results/tune/."),
):
    """Tune a recipe's per-group learning rates with Optuna on the validation SRCC; write the best
    trial as a named recipe in baselines/<family>.tuned.yaml.

    Examples: iaabench tune --model tanet --dataset tad66k --trials 50;
    iaabench tune --model nima --dataset synth-tad66k --show --plots
    """
    from ..tune import TuneRequest, parse_lr_ranges, parse_pair, run_tune, show_study

    if show:
        show_study(study, model, dataset, storage, console=console, plots=plots)
        return
    if not model or not dataset:
        raise ConfigError("iaabench tune needs --model and --dataset (or --show)")
    req = TuneRequest(model=model, dataset=dataset, trials=trials, storage=storage, study=study, recipe=recipe,
                      lr_groups=list(lr_group), lr_ranges=parse_lr_ranges(lr_range),
                      batch_sizes=[int(b) for b in (batch_sizes or "").split(",") if b.strip()],
                      epochs=epochs, epoch_range=parse_pair(epoch_range, "--epoch-range") if epoch_range else None,
                      choices=choices, pruner=pruner, seed=seed, device=_device(device), fast=fast, workers=workers,
                      options=_parse_options(option), split=split, data_root=data_root, recipe_name=recipe_name,
                      timeout=timeout)
    if jobs:
        from ..executors import SlurmOptions
        from ..tune import run_tune_jobs

        run_tune_jobs(req, jobs, tune_executor, SlurmOptions(partition=partition, gpus_per_job=gpus_per_job,
                                                             time=time_limit), console=console)
        return
    run_tune(req, console=console)
