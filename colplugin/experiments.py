"""Pipelines over any registered task: train a run, reproduce a figure, export, the main job.

Nothing here knows a task by name: every task-specific step (network, stimuli, training
defaults, evaluation, figures, report section, reproduction) is a method of the
:class:`~colplugin.training.Task` (see :mod:`colplugin.training.task`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_write_text
from .analysis.twin import TwinSettings, twin_report_section, twin_run
from .analysis.validation import VALIDATE_DURATION, ValidationSettings, validate_microcircuit
from .export import export_brian2_script, to_brian2
from .export.neo import check_neo_format, save_neo, to_neo
from .network import ColumnNetwork
from .params import Params, resolve_params
from .plotting import plot_overlay, plot_training, save_figure
from .solve.simulate import Solver, simulate
from .spiking.network import SCALE
from .stimulus import Stimulus
from .tasks import TASKS, get_task, task_class
from .training.task import Task
from .training.trainer import TrainResult, check_resume, load_best_weights, load_checkpoint, train

__all__ = ["train_run", "reproduce", "export_run", "main_run", "agreement", "load_run", "load_twin_run",
           "STIMULUS_FILE"]

#: File of a run directory that holds the task's evaluation stimulus and trial duration.
STIMULUS_FILE = "evaluation_stimulus.json"


def _task(task: Task | str) -> Task:
    return get_task(task) if isinstance(task, str) else task


def train_run(task: Task | str, seed: int, out: Path, *, updates: int | None = None, gradient: Any = None,
              lr: float | None = None, progress: bool = True, resume: bool = False,
              preset: str | None = None) -> TrainResult:
    """Train one seed of a task into ``out``, then evaluate it and draw its figures.

    Writes ``params.json``, ``network.json`` (the network's spec), ``checkpoint.pt`` and
    ``metrics.json`` (:func:`colplugin.train`), ``evaluation_stimulus.json`` (the trials
    that exports simulate), ``training.png``, the task's figures (:meth:`Task.figures`)
    and evaluation files (:meth:`Task.evaluate`).

    Parameters
    ----------
    task : Task or str
        A task object or a registered task name.
    seed : int
        Seeds the network's initial weights and the trial sampling.
    out : Path
        Run directory.
    updates, gradient, lr : optional
        Override the task's training settings (``None``: ``task.settings``).
    preset : str, optional
        Parameter preset of the network, a preset name or a parameter file (``None``: the
        task's, e.g. ``"dl25"``); a resumed run must use the parameters it was trained with.
    progress : bool
        Show a progress bar.
    resume : bool
        Continue from ``out/checkpoint.pt``.

    Returns
    -------
    TrainResult
        With ``evaluation`` (the task's numbers) and ``files`` (the figures written).
    """
    task = _task(task)
    out = Path(out)
    if resume:  # a run of another task is refused before any of its files is touched
        check_resume(out, task)
    net = task.build_network(resolve_params(preset) if preset else None, seed=seed)
    stored = out / "params.json"
    if resume and stored.is_file():
        before = Params.from_dict(_read_json(stored, "the run's parameters"))
        if not before.same_values(net.params):
            raise ValueError(f"cannot resume {out}: it was trained with parameters {before.name!r} "
                             f"{'(other values)' if before.name == net.params.name else ''}, now "
                             f"{net.params.name!r}; resume with --preset {before.name} or start a new run")
    out.mkdir(parents=True, exist_ok=True)
    net.params.save(out / "params.json")
    atomic_write_text(out / "network.json", json.dumps(net.spec(), indent=2))
    stim = task.evaluation_stimulus()
    atomic_write_text(out / STIMULUS_FILE, json.dumps({"task": task.name, "duration_s": task.duration,
                                                       "times_s": stim.times.tolist(),
                                                       "rates_hz": stim.rates.tolist()}))
    res = train(net, task, updates, gradient=gradient, lr=lr, seed=seed, out=out, progress=progress, resume=resume)
    figures = {"training.png": plot_training({seed: res.metrics}, title=f"{task.name}: test accuracy per update")}
    figures.update(task.figures(net, res))
    for name, fig in figures.items():
        save_figure(fig, out / name)
    res.files = list(figures)
    res.evaluation = task.evaluate(net, out)
    return res


def reproduce(task: Task | str, out: Path, *, seeds: int | None = None, seed: int = 0, updates: int | None = None,
              gradient: Any = None, lr: float | None = None, progress: bool = True,
              preset: str | None = None) -> dict[str, Any]:
    """Train the runs of a task's reproduction and draw its figure (:meth:`Task.reproduce`).

    Tasks with ``reproduce_seeds`` (figures over seeds) train seeds
    ``seed, seed + 1, ...`` into ``out/seed<k>/``; the others train one run (``seed``)
    directly into ``out``.

    Parameters
    ----------
    task : Task or str
    out : Path
    seeds : int, optional
        Number of seeds (default: the task's ``reproduce_seeds``).
    seed : int
        First seed.
    updates, gradient, lr : optional
        Override the task's training settings.
    progress : bool
    preset : str, optional
        Parameters of every run's network (as :func:`train_run`).

    Returns
    -------
    dict
        The task's summary, with a one-line ``"headline"``.
    """
    task = _task(task)
    if not task.can_reproduce():
        raise ValueError(f"task {task.name!r} defines no reproduction")
    if task.reproduce_seeds is None and seeds not in (None, 1):
        raise ValueError(f"task {task.name!r} reproduces one run; choose it with seed=, not seeds={seeds}")
    if seeds is not None and (not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds}")
    n = seeds or task.reproduce_seeds or 1
    out = Path(out)
    runs = {}
    for s in range(seed, seed + n):
        run_dir = out / f"seed{s}" if task.reproduce_seeds is not None else out
        runs[s] = train_run(task, s, run_dir, updates=updates, gradient=gradient, lr=lr, progress=progress,
                            preset=preset)
    return task.reproduce(runs, out)


def agreement(torch_rates: np.ndarray, brian_rates: np.ndarray, names: list[str],
              floor_hz: float = 1e-3) -> dict[str, Any]:
    """Max absolute (Hz) and relative differences, overall and per population."""
    n = min(len(torch_rates), len(brian_rates))
    a, b = torch_rates[:n], brian_rates[:n]
    diff = np.abs(a - b)
    rel = diff / np.maximum(np.abs(a), floor_hz)
    return {"max_abs_hz": float(diff.max()), "max_rel": float(rel.max()), "relative_floor_hz": floor_hz,
            "per_population": {nm: {"max_abs_hz": float(diff[:, i].max()), "max_rel": float(rel[:, i].max())}
                               for i, nm in enumerate(names)}}


def _read_json(path: Path, what: str) -> Any:
    """A JSON file, or a ValueError that names the file, what it should hold and the fix."""
    if Path(path).is_dir():
        raise ValueError(f"{path} is a directory, not a file; it should hold {what} as written by colplugin - "
                         "move the directory away and restore the file from the run, or write the run again")
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it should hold {what} as written by colplugin - "
                         "restore it from the run or write the run again") from None


def _read_stimulus(path: Path, n_inputs: int) -> tuple[Stimulus, float]:
    """The trials and trial duration of a run's ``evaluation_stimulus.json``, checked; errors name the file and fix."""
    data = _read_json(path, "the evaluation stimulus")
    fix = ("it should hold the run's evaluation stimulus as colplugin writes it ({'task', 'duration_s', 'times_s', "
           "'rates_hz'}) - restore it from the run, or delete it to export the registered task's own trials")
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not an object; {fix}")
    missing = [k for k in ("duration_s", "times_s", "rates_hz") if k not in data]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(map(repr, missing))}; {fix}")
    try:
        duration = float(data["duration_s"])
        stim = Stimulus(data["times_s"], data["rates_hz"], dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} holds no valid stimulus ({str(exc).splitlines()[0][:160]}); {fix}") from None
    if not (duration > 0 and np.isfinite(duration)):
        raise ValueError(f"{path}: duration_s = {data['duration_s']!r} is not a positive trial duration in s; {fix}")
    if stim.n_inputs != n_inputs:
        raise ValueError(f"{path}: the stimulus has {stim.n_inputs} input channel(s), the run's network "
                         f"{n_inputs}; {fix}")
    if float(stim.times[-1]) >= duration:
        raise ValueError(f"{path}: the stimulus changes at {float(stim.times[-1]):g} s, not before the end of the "
                         f"trial (duration_s = {duration:g}); {fix}")
    return stim, duration


def load_run(path: Path, command: str = "export") -> tuple[Any, Stimulus, float]:
    """The trained network of a run directory with the trials to export and their duration.

    ``path`` is a directory of ``colplugin train`` (``checkpoint.pt``) or ``colplugin run``
    (``train/checkpoint.pt``), or a network spec (``network.json`` or a directory with
    one: initial weights; one trial, no input for 0.5 s, then 20 Hz on every input for
    0.5 s). A run that kept its best weights (``best_weights.pt``) exports those. The
    trials are those of ``evaluation_stimulus.json``, else the evaluation stimulus of the
    registered task named in the checkpoint. ``command``: the ``colplugin`` command the
    messages name (``"export"`` or ``"twin"``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or holds none of these.
    ValueError, CheckpointError
        If a file is not what it should be (a directory, not JSON, not a network spec,
        non-finite weights), naming the file and the fix.
    """
    path = Path(path)
    doing = {"twin": "run as a spiking twin"}.get(command, command)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (so there is no checkpoint.pt or network.json to read); pass "
                                "a run directory of `colplugin train` or `colplugin run` (or the network.json in one)")
    if path.is_file() and path.suffix != ".json":
        raise ValueError(f"{path} is a file, not a run directory or a network spec (.json); pass the run directory "
                         f"that holds it, e.g. `colplugin {command} {path.parent}`")
    ckpt_path = next((p for p in (path / "checkpoint.pt", path / "train" / "checkpoint.pt") if p.exists()), None)
    if ckpt_path is not None:
        best = ckpt_path.parent / "best_weights.pt"
        ck = load_checkpoint(ckpt_path, finite=not best.is_file(), non_finite_fix=(
            f"this run's weights are not finite (its training diverged), so there is nothing to {doing}; {command} "
            "a run whose training did not diverge, or train this one again with a lower learning rate (--lr)"))
        net = ck["network"]
        if best.is_file():  # the kept weights replace the checkpoint's (which may have diverged)
            load_best_weights(best, net)
        stim_path = ckpt_path.parent / STIMULUS_FILE
        if stim_path.is_file():
            return (net, *_read_stimulus(stim_path, net.n_inputs))
        name = ck["task"]["name"]
        try:
            task = task_class(name).from_config(ck["task"])  # the options the run was trained with
        except TypeError:  # a task built from data (e.g. a fit target) cannot be rebuilt from its name
            raise ValueError(f"{ckpt_path.parent} has no {STIMULUS_FILE} and task {name!r} needs its options to "
                             "say which trials to export; train the run again with this version") from None
        return net, task.evaluation_stimulus(), task.duration
    if (path / "network.json").exists() or path.suffix == ".json":
        spec_path = path if path.suffix == ".json" else path / "network.json"
        spec = _read_json(spec_path, "a network spec (ColumnNetwork.spec())")
        fix = ("pass a run directory of `colplugin train` or `colplugin run`, or the network.json in one "
               "(Python: json.dump(network.spec(), file))")
        if not isinstance(spec, dict):
            kind = {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
                    type(None): "null"}.get(type(spec), type(spec).__name__)
            raise ValueError(f"{spec_path} is not a network spec: it holds a JSON {kind}, not the JSON "
                             f"object of ColumnNetwork.spec(); {fix}")
        try:
            net = ColumnNetwork.from_spec(spec)
        except Exception as exc:  # any error of the builder is the spec's fault
            raise ValueError(f"{spec_path} is not a network spec ({exc.__class__.__name__}: {exc}); it should hold "
                             "the network.json of a run - restore it from the run, or " + fix) from None
        return net, Stimulus([0.0, 0.5], [[0.0] * net.n_inputs, [20.0] * net.n_inputs]), 1.0
    seeds = _reproduce_runs(path)
    if seeds:
        raise FileNotFoundError(
            f"{path} holds no checkpoint.pt: it is a directory of `colplugin reproduce`, whose runs are in "
            f"{', '.join(p.name + '/' for p in seeds[:4])}{' ...' if len(seeds) > 4 else ''}; {command} one run, "
            f"e.g. `colplugin {command} {seeds[0]}`")
    raise FileNotFoundError(f"{path} holds no checkpoint.pt (or train/checkpoint.pt) and no network.json; "
                            "pass a run directory of `colplugin train`/`run` or a network spec")


def _reproduce_runs(path: Path) -> list[Path]:
    """The run directories (``seed<k>/`` with a checkpoint.pt) of a ``colplugin reproduce`` directory, by seed."""
    if not path.is_dir():
        return []
    runs = [p for p in path.glob("seed*") if p.name[4:].isdigit() and (p / "checkpoint.pt").is_file()]
    return sorted(runs, key=lambda p: int(p.name[4:]))


def _task_from_checkpoint(config: dict[str, Any]):
    """The registered task of a checkpoint's task config, built with the options it records; None if it cannot be."""
    cls = TASKS.get(config.get("name", ""))
    if cls is None:
        return None
    try:
        return cls.from_config(config)
    except (TypeError, ValueError):  # a task built from data (e.g. a fit target): no read-out
        return None


def load_twin_run(path: str | Path) -> tuple[Any, Stimulus, float, Any]:
    """The trained network, conditions, trial duration and task (or None) of a run directory.

    As :func:`load_run`, plus the registered task named in the
    checkpoint, rebuilt with the options its config records (``None`` for a network spec
    or a task that cannot be rebuilt: the twin then reports no accuracy).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run directory of `colplugin train` or `colplugin run`")
    net, stim, duration = load_run(path, command="twin")
    ckpt = next((p for p in (path / "checkpoint.pt", path / "train" / "checkpoint.pt") if p.exists()), None)
    task = _task_from_checkpoint(load_checkpoint(ckpt, finite=False)["task"]) if ckpt is not None else None
    return net, stim, duration, task


#: The accurate torch reference that :func:`export_run` compares every Brian2 run with.
ACCURATE_SOLVER = dict(method="dopri5", rtol=1e-8, atol=1e-8, backend="torchdiffeq")


def export_run(net, stim: Stimulus, duration: float, out: Path, *, device: str = "runtime",
               methods: tuple[str, ...] = ("euler", "rk4"), dt: float = 1e-4,
               seed: int | None = None, target: str = "cython", neo_format: str = "nix") -> dict[str, Any]:
    """Export to Brian2, run every trial there and in torch with the same method and dt, compare.

    The first method is the export's (``model.py``, the NIX files, the overlay figures and
    the top-level ``method`` / ``max_abs_hz`` / ``max_rel`` of ``agreement.json``).
    ``"euler"`` (the default, first) is exact: Brian2's and torch's Euler steps agree to
    rounding. ``"rk4"`` is kept as the documented inexact comparison: Brian2 updates the
    summed coupling once per step, so its multi-stage methods hold it fixed within a step.

    Each Brian2 run is also compared with an accurate torch reference (torchdiffeq's
    dopri5, rtol = atol = 1e-8; key ``vs_accurate_torch`` of each method's entry and at
    the top level for the first method): the discretisation error of ``dt``.

    ``neo_format`` (``"nix"``, ``"nwb"`` or ``"both"``, the command line's ``--format``) chooses
    the file format(s) of the rates. ``device`` runs the first method (``"runtime"`` or
    ``"cpp_standalone"``); the others run on
    the runtime device, all with the code-generation ``target`` (``"cython"`` by default:
    compiled once per model, many times faster per step than ``"numpy"``).

    Writes the standalone script (+ data, model description), the Brian2 rates as NIX
    (``brian2.nix``, one Segment per trial), the torch rates (``torch.nix``),
    ``agreement.json`` and an overlay figure per trial.
    """
    check_neo_format(neo_format)

    out.mkdir(parents=True, exist_ok=True)
    export_brian2_script(net, out / "model.py", stim, duration, method=methods[0], dt=dt)
    report: dict[str, Any] = {"dt_s": dt, "device": device, "duration_s": duration,
                              "accurate_torch_solver": dict(ACCURATE_SOLVER)}
    with torch.no_grad():
        accurate = simulate(net, stim, duration, dt_out=dt, solver=Solver(**ACCURATE_SOLVER)).rate.numpy()

    def compare(reference: np.ndarray, rates_b2: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        per_trial = [agreement(reference[:, b], rates_b2[:, b], net.channel_names) for b in range(stim.batch_size)]
        return {"max_abs_hz": max(p["max_abs_hz"] for p in per_trial),
                "max_rel": max(p["max_rel"] for p in per_trial)}, per_trial

    for mi, method in enumerate(methods):
        with torch.no_grad():
            traj = simulate(net, stim, duration, dt_out=dt, solver=Solver(method, step=dt))
        run = to_brian2(net, stim, duration, trial=None, method=method, dt=dt,
                        device=device if mi == 0 else "runtime", target=target).run()
        rates_b2 = run.trial_rates
        same, per_trial = compare(traj.rate.numpy(), rates_b2)
        vs_accurate, _ = compare(accurate, rates_b2)
        entry = {**same, "brian2_wall_seconds": run.wall_seconds, "exact": method == "euler",
                 "vs_accurate_torch": vs_accurate, "per_trial": per_trial}
        report[method] = entry
        if mi == 0:
            report.update({"method": method, "max_abs_hz": entry["max_abs_hz"], "max_rel": entry["max_rel"],
                           "vs_accurate_torch": vs_accurate, "per_trial": per_trial})
            for b in range(stim.batch_size):
                save_figure(plot_overlay(traj, run, b), out / f"overlay_trial{b}.png")
            save_neo(to_neo(run, seed=seed), out / "brian2.nix", neo_format)
            save_neo(to_neo(traj, seed=seed), out / "torch.nix", neo_format)
    atomic_write_text(out / "agreement.json", json.dumps(report, indent=2))
    return report


def _finished_training(path: Path, task: Task, seed: int) -> TrainResult:
    """The result of a finished training run in ``path`` (for a resumed main run), checked against the request."""
    best = path / "best_weights.pt"
    ck = load_checkpoint(path / "checkpoint.pt", finite=not best.is_file(), non_finite_fix=(
        "this run's training diverged, so it cannot go on to the export; start a new run with another --out and a "
        "lower learning rate (--lr)"))
    stored = _read_json(path / "metrics.json", "the metrics of a finished training run")
    if not isinstance(stored, dict) or not isinstance(stored.get("per_update"), list):
        raise ValueError(f"{path / 'metrics.json'} holds no per-update metrics ('per_update'); it should hold the "
                         "metrics of a finished training run as colplugin writes them - restore it from the run or "
                         "start a new run with another --out")
    name, their_seed = ck["task"].get("name"), stored.get("seed")
    if name != task.name or their_seed != seed:
        again = f"colplugin run {name} --resume --out {path.parent}" + (f" --seed {their_seed}"
                                                                        if their_seed not in (None, 0) else "")
        raise ValueError(f"{path.parent} holds a run of task {name!r} seed {their_seed}, not {task.name!r} seed "
                         f"{seed}; resume with `{again}`, or start a new run with another --out")
    net = ck["network"]
    if best.is_file():
        load_best_weights(best, net)
    metrics = stored.pop("per_update")
    res = TrainResult(net, metrics, stored)
    res.evaluation = task.evaluate(net, None)  # the numbers only; the run's files stay as they are
    res.files = sorted(f.name for f in path.glob("*.png"))
    return res


#: Spike trains per population that the main run's validation writes to spiking.nix (``colplugin
#: validate microcircuit`` writes 100): Neo's NIX writer spends about 15 ms per annotated train.
MAIN_RUN_NIX_NEURONS = 20


#: The main run's spiking twin: a quick one (scale 0.02, k 0.1: 6,000 neurons and 5 M synapses per
#: condition of the XOR network, one trial), a first look; `colplugin twin RUN` runs the full one.
MAIN_RUN_TWIN = {"scale": 0.02, "k_scale": 0.1, "trials": 1}


def main_run(out: Path, task: Task | str, progress: bool = True, updates: int | None = None,
             validate_scale: float | None = SCALE, validate_duration: float = VALIDATE_DURATION,
             resume: bool = False, seed: int = 0, gradient: Any = None, lr: float | None = None,
             twin_scale: float | None = MAIN_RUN_TWIN["scale"], twin_trials: int = MAIN_RUN_TWIN["trials"],
             twin_k_scale: float = MAIN_RUN_TWIN["k_scale"], twin_backend: str = "brian2",
             preset: str | None = None, neo_format: str = "nix") -> dict[str, Any]:
    """The main job: train, export to Brian2 and run there, compare, validate, write Neo/NIX and a report.

    Writes ``train/`` (:func:`train_run`), ``brian2/`` (:func:`export_run` of the task's
    evaluation stimulus), ``validation/`` (the spiking microcircuit against the DMF column;
    skipped when ``validate_scale`` is ``None`` or 0) and ``report.md``.

    Parameters
    ----------
    out : Path
        Run directory.
    task : Task or str
        A task object or a registered task name.
    progress : bool
    updates, gradient, lr : optional
        Override the task's training settings (``None``: ``task.settings``).
    validate_scale : float, optional
        Neuron scale of the spiking validation (``None`` or 0: no validation).
    validate_duration : float
        Simulated time (s) of the spiking validation.
    resume : bool
        Continue an interrupted training in ``out/train``.
    seed : int
        Seed of the trained run.
    twin_scale : float, optional
        Neuron scale of the spiking twin of the trained network (``twin/``,
        :func:`colplugin.analysis.twin.twin_run` on the task's evaluation stimulus; ``None``
        or 0: no twin).
    twin_trials, twin_k_scale, twin_backend
        Spiking trials per condition, in-degree scale and backend of the twin (Brian2 runs
        on its runtime device).
    preset : str, optional
        Parameters of the trained network (a preset name or file; default the task's). The
        validation judges the PD14 column of the same transfer: ``pd14_lif`` for a network
        of the Siegert transfer (e.g. ``dl25_lif``), ``pd14`` otherwise.
    neo_format : {"nix", "nwb", "both"}
        File format(s) of every Neo result (``--format``).
    """
    check_neo_format(neo_format)  # before any work
    t0 = time.perf_counter()
    if resume and (Path(out) / "report.md").exists():  # before any option is checked: nothing of it would run
        raise ValueError(f"{out} is a finished run (report.md); nothing to resume; start a new run with another "
                         "--out (or --overwrite)")
    task = _task(task)
    validation_settings = None
    if validate_scale:  # refused before training, not after it
        try:
            validation_settings = ValidationSettings(scale=validate_scale, duration=validate_duration,
                                                     nix_neurons=MAIN_RUN_NIX_NEURONS, neo_format=neo_format)
        except ValueError as exc:
            raise ValueError(f"the validation of the main run (--validate-scale {validate_scale:g}, "
                             f"--validate-duration {validate_duration:g}): {exc}") from None
    twin_settings = TwinSettings(backend=twin_backend, device="runtime", scale=twin_scale, k_scale=twin_k_scale,
                                 trials=twin_trials, seed=seed, nix_neurons=5) if twin_scale else None
    phases = ["training", "export to Brian2"] + ["spiking validation"] * bool(validate_scale) + \
        ["spiking twin"] * bool(twin_scale)

    def heading(name: str, detail: str = "") -> None:
        if progress:
            print(f"\n== {phases.index(name) + 1}/{len(phases)} {name}{': ' + detail if detail else ''} ==",
                  flush=True)
    out = Path(out)
    if resume and not (out / "train" / "checkpoint.pt").exists():
        raise ValueError(f"cannot resume {out}: it is not a run of `colplugin run` (no train/checkpoint.pt); "
                         "start a new run with another --out")
    if resume and (out / "train" / "metrics.json").exists():  # training finished: continue after it
        res = _finished_training(out / "train", task, seed)
        if preset is not None and not resolve_params(preset).same_values(res.network.params):
            raise ValueError(f"cannot resume {out} with --preset {preset}: its training finished with parameters "
                             f"{res.network.params.name!r}; resume without --preset (or with the run's own), or "
                             "start a new run")
    else:
        heading("training", f"{task.name}, seed {seed}")
        res = train_run(task, seed, out / "train", progress=progress, updates=updates, gradient=gradient, lr=lr,
                        resume=resume, preset=preset)
    net = res.network
    heading("export to Brian2", f"{task.evaluation_stimulus().batch_size} trial(s) of {task.duration:g} s at dt 0.1 ms")
    agree = export_run(net, task.evaluation_stimulus(), task.duration, out / "brian2", seed=seed,
                       device="cpp_standalone", neo_format=neo_format)
    validation = None
    if validate_scale:
        heading("spiking validation", f"PD14 microcircuit at scale {validate_scale}, {validate_duration:g} s")
        validation = validate_microcircuit(out / "validation", validation_settings, progress=progress,
                                           preset="pd14_lif" if net.transfer.name == "siegert" else "pd14")
    twin = None
    if twin_scale:
        heading("spiking twin", f"scale {twin_scale}, {twin_backend}, {twin_trials} trial(s) per condition")
        twin = twin_run(out / "twin", net, task.evaluation_stimulus(), task.duration, task, settings=twin_settings,
                        progress=progress, source=str(out / "train"), neo_format=neo_format)
    wall = time.perf_counter() - t0
    s = res.summary
    lines = [f"# colplugin run: {task.name}", "",
             f"Column: `{net.params.name}`, the {net.transfer.label} ({net.transfer.description}).", "",
             "## Did it learn?", "",
             f"{s['updates']} update{'' if s['updates'] == 1 else 's'} "
             f"({s['gradient']['name']} gradients, {s['solver']['method']}), final test "
             f"accuracy **{s['final_accuracy']}**, final loss {s['final_loss']:.4g}"
             f"{' (' + s['final_loss_on'] + ')' if s.get('final_loss_on') else ''}, {s['wall_seconds']:.1f} s.", ""]
    for name in res.files:
        lines += [f"![{Path(name).stem}](train/{name})", ""]
    lines += task.report_section(net, res, res.evaluation, prefix="train/")
    methods = [m for m in agree if isinstance(agree[m], dict) and "brian2_wall_seconds" in agree[m]]
    lines += ["", "## Does Brian2 agree?", "",
              f"Same network in Brian2 ({agree['method']} on {agree['device']}, the others on the runtime device "
              "with Cython, dt = 0.1 ms) vs torch with the same method, every trial "
              "and population: " + "; ".join(f"{m} max relative difference **{agree[m]['max_rel']:.2e}** "
                                             f"({agree[m]['max_abs_hz']:.2e} Hz)" for m in methods)
              + f". The export uses {agree['method']} (exact: euler on both sides agrees to rounding); Brian2 "
              "updates a summed variable once per step, so its multi-stage methods (rk4) hold the coupling fixed "
              "within a step. Against an accurate torch reference (dopri5, rtol 1e-8), the discretisation error "
              "of dt = 0.1 ms: " + "; ".join(f"{m} {agree[m]['vs_accurate_torch']['max_rel']:.2e} relative "
                                             f"({agree[m]['vs_accurate_torch']['max_abs_hz']:.2e} Hz)"
                                             for m in methods) + ".", "",
              "![overlay](brian2/overlay_trial0.png)", ""]
    if validation is not None:
        lines += ["## How close is the column to the spiking circuit?", "",
                  validation["table_md"], "", "![rates](validation/rates.png)", ""]
    if twin is not None:
        lines += ["## Does it still work in spiking neurons?", ""] + twin_report_section(twin, prefix="twin/") + [""]
    lines += [f"Total wall time {wall:.1f} s. Files: `train/` (checkpoint, metrics.json, figures), "
              "`brian2/` (standalone script, NIX files, agreement.json)"
              + (", `validation/` (report.md, comparison.json, NIX files)" if validation else "") + "."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return {"summary": s, "evaluation": res.evaluation,
            "agreement": {m: {k: agree[m][k] for k in ("max_abs_hz", "max_rel")} for m in methods},
            "validation": validation,
            "twin": None if twin is None else {k: twin[k] for k in ("accuracy", "dmf_accuracy", "rate_model", "scale",
                                                                    "backend", "wall_seconds")},
            "wall_seconds": wall}
