"""The ``colplugin`` command: a thin layer over the Python API.

Exit status: 0 on success; 1 when a validation check fails (``validate microcircuit``; every
result is still written); 2 on an error (bad input, a failed simulation), reported on stderr,
with the command's new directories removed. ``run`` reports its validation checks in
report.md and on stderr but exits 0 once every step has run: the DMF column's known
deviations from the spiking circuit (L5E) are a finding of the main job, not a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _new_run_dir(out: str | None, prefix: str, overwrite: bool = False, resume: bool = False,
                 reads: Sequence[str | Path] = ()) -> Path:
    """Claim the command's output directory (see `OutputDirectory`); return where it writes.

    ``reads``: files and directories the command reads; ``--overwrite`` must not replace them.
    """
    import time

    from colplugin._io import OutputDirectory, OutputInUse

    if out is not None and not str(out).strip():
        raise SystemExit("error: --out is empty; give a directory path, or leave --out out for "
                         f"runs/{prefix}-TIMESTAMP")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(out) if out is not None else Path("runs") / f"{prefix}-{stamp}"
    if os.environ.get("RANK", "0") != "0" and "WORLD_SIZE" in os.environ:
        return path  # a torchrun worker: rank 0 claims the directory; this rank writes below it (ranks/N)
    if overwrite and "WORLD_SIZE" in os.environ:
        raise SystemExit("error: --overwrite is not supported under torchrun (the ranks share one directory); "
                         "give a new --out")
    if overwrite:
        _check_overwrite_reads(path, reads)
    for attempt in range(100):
        try:
            claim = OutputDirectory(path, overwrite=overwrite, resume=resume)
            written = claim.claim()
            break
        except OutputInUse as exc:
            if out is not None:
                raise SystemExit(f"error: {exc}") from None
        except (ValueError, OSError) as exc:  # refused before any work: exit status 2, as every refusal
            if out is not None or not path.exists():
                raise SystemExit(f"error: {exc}") from None
        # a default directory another command took this second: the next free name
        path = Path("runs") / f"{prefix}-{stamp}-{attempt + 2}"
    else:
        raise SystemExit(f"error: no free directory runs/{prefix}-{stamp}-N; give --out")
    _CLAIMED.append(claim)
    return written


def _check_overwrite_reads(out: str | Path, reads: Sequence[str | Path]) -> None:
    """Refuse an ``--overwrite`` of a directory that holds (or is) something the command reads."""
    try:
        target = Path(out).resolve()
    except (OSError, RuntimeError):
        return  # OutputDirectory names the problem with the path
    for src in reads:
        src_path = Path(src).resolve()
        if src_path == target or target in src_path.parents:
            raise SystemExit(f"error: --out {out} --overwrite would replace {src}, which this command reads; "
                             "choose another --out")


def _reads(args: argparse.Namespace) -> list[Path]:
    """The existing files and directories a command reads (its run, parameter, target and spec files)."""
    names = ("run_dir", "params", "preset", "target", "network", "spiking")
    return [Path(v) for v in (getattr(args, n, None) for n in names) if isinstance(v, str) and Path(v).exists()]


def _run_dir(args: argparse.Namespace, prefix: str) -> Path:
    """The run directory of a command with ``--resume``: the existing ``--out``, or a new one."""
    if args.resume:
        if args.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")
        if not args.out:
            raise ValueError("--resume needs --out DIR of an earlier (interrupted) run")
        if not Path(args.out).is_dir():
            raise ValueError(f"--resume --out {args.out}: "
                             + ("no such directory" if not Path(args.out).exists() else "not a directory")
                             + "; give the directory of an earlier (interrupted) run, or leave --resume out "
                               "to start a new one")
        return _new_run_dir(args.out, prefix, resume=True)
    return _new_run_dir(args.out, prefix, args.overwrite, reads=_reads(args))


#: Output directories this command claimed: committed on success, cleaned up on failure or a signal.
_CLAIMED: list = []


def _shown(path: Path) -> Path:
    """A path inside a claimed directory as the user will find it (an --overwrite run writes beside it)."""
    for claim in _CLAIMED:
        shown = claim.shown(path)
        if shown != Path(path):
            return shown
    return Path(path)


def _end_claims(ok: bool) -> None:
    """Swap in (success) or clean up (failure) every claimed directory, saying what was done."""
    while _CLAIMED:
        claim = _CLAIMED.pop()
        if ok:
            claim.commit()
        else:
            said = claim.abort()
            if said:
                print(said, file=sys.stderr)


def _cmd_simulate(args: argparse.Namespace) -> int:
    import torch

    import colplugin as cp
    from colplugin.plotting import plot_rates

    from colplugin.params import DEFAULT_PRESET, resolve_params

    params = resolve_params(args.preset if args.preset is not None else DEFAULT_PRESET)
    if args.area is not None and not args.area.strip():
        raise ValueError("--area is empty; give an area name (e.g. --area mt), or leave --area out for the "
                         f"parameters' default area ({params.default_area})")
    area = args.area or params.default_area
    net = cp.ColumnNetwork(params, {area: cp.Area(area, args.columns, split=not args.full)}, [cp.Input(area)])
    if args.duration < 0.01:
        raise ValueError(f"--duration {args.duration:g} s: give at least 0.01 s (the rates are recorded every 1 ms, "
                         "and the input starts halfway)")
    t_on = args.duration / 2
    rates = [[0.0] * net.n_inputs, [args.input] * net.n_inputs]
    stim = cp.Stimulus([0.0, t_on], rates)
    out = _new_run_dir(args.out, "simulate", args.overwrite, reads=_reads(args))
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=args.duration)
    params.save(out / "params.json")
    r = traj.rate[:, 0].numpy()
    i_pre = int(round(0.95 * t_on / (traj.t[1] - traj.t[0]).item()))
    summary = {name: {"before_input_hz": float(r[i_pre, i]), "end_hz": float(r[-1, i])}
               for i, name in enumerate(net.channel_names)}
    from colplugin._io import atomic_write_text

    atomic_write_text(out / "rates.json", json.dumps(summary, indent=2))
    fig = plot_rates(traj, title=f"{params.name}: {area}, {args.input:g} Hz input from t = {t_on:g} s")
    fig.savefig(out / "rates.png", dpi=120)
    print(f"{'population':<16}{'before input (Hz)':>20}{'with input (Hz)':>18}")
    for name, v in summary.items():
        print(f"{name:<16}{v['before_input_hz']:>20.4f}{v['end_hz']:>18.4f}")
    print(f"\nwrote {_shown(out)}/rates.json, rates.png, params.json")
    return 0


def _task_from_args(args: argparse.Namespace):
    """The task named on the command line, built from its own options; refuse other tasks' options."""
    from colplugin.tasks import TASKS

    cls = TASKS[args.task]
    for name, options in getattr(args, "_task_options", {}).items():
        if name == args.task:
            continue
        for dest, flag in options:
            if getattr(args, dest, None) is not None:
                raise ValueError(f"{flag} belongs to task {name!r}, not {args.task!r}; "
                                 f"see `colplugin {args.command} {args.task} --help`")
    task = cls.from_args(args)
    task.settings.override(updates=args.updates, gradient=args.gradient, lr=args.lr)  # refuse bad values up front
    return task


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from colplugin.experiments import train_run

    torch.set_num_threads(args.threads)
    task = _task_from_args(args)
    _check_preset(args)
    if args.device is not None:
        from colplugin.training.settings import check_device

        args.device = str(check_device(args.device))
    out = _run_dir(args, f"train-{task.name}-s{args.seed}")
    from colplugin.training.distributed import launched_by_torchrun, train_distributed

    if args.nproc > 1 or args.device is not None or launched_by_torchrun():  # data-parallel and/or on a device
        r = train_distributed(task, args.nproc, seed=args.seed, out=out, device=args.device, pipeline=train_run,
                              threads=args.threads, updates=args.updates, gradient=args.gradient, lr=args.lr,
                              progress=not args.no_progress, resume=args.resume, preset=args.preset)
        s, evaluation = r["summary"], r["evaluation"]
    else:
        res = train_run(task, args.seed, out, updates=args.updates, gradient=args.gradient, lr=args.lr,
                        progress=not args.no_progress, resume=args.resume, preset=args.preset)
        s, evaluation = res.summary, res.evaluation
    accuracy = evaluation.get("final_accuracy", s["final_accuracy"])  # a task's own held-out accuracy, if any
    print(f"{task.name} seed {args.seed}: {_updates(s)}, final loss {s['final_loss']:.4g}{_loss_on(s)}, "
          f"test accuracy {accuracy}, {s['wall_seconds']:.1f} s")
    print(f"wrote {_shown(out)}")
    return 0


def _updates(summary: dict) -> str:
    n = summary["updates"]
    return f"{n} update" if n == 1 else f"{n} updates"


def _loss_on(summary: dict) -> str:
    """Which loss ``final_loss`` is: of the returned weights on the test set, or on the last batch."""
    on = summary.get("final_loss_on")
    return f" ({on})" if on else ""


def _cmd_reproduce(args: argparse.Namespace) -> int:
    import torch

    from colplugin.experiments import reproduce

    torch.set_num_threads(args.threads)
    task = _task_from_args(args)
    _check_preset(args)
    out = _new_run_dir(args.out, f"reproduce-{task.name}", args.overwrite, reads=_reads(args))
    r = reproduce(task, out, seeds=args.seeds, seed=args.seed, updates=args.updates, gradient=args.gradient,
                  lr=args.lr, progress=not args.no_progress, preset=args.preset)
    print(r["headline"])
    print(f"wrote {_shown(out)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import torch

    from colplugin.experiments import main_run

    torch.set_num_threads(args.threads)
    task = _task_from_args(args)
    if args.validate_scale < 0:
        raise ValueError(f"--validate-scale must be >= 0 (0: no spiking validation), got {args.validate_scale}")
    _check_preset(args)
    out = _run_dir(args, f"run-{task.name}")
    print(f"run directory: {_shown(out)}", flush=True)
    r = main_run(out, task, progress=not args.no_progress, updates=args.updates, resume=args.resume,
                 validate_scale=args.validate_scale or None, validate_duration=args.validate_duration, seed=args.seed,
                 gradient=args.gradient, lr=args.lr, twin_scale=args.twin_scale or None, twin_trials=args.twin_trials,
                 twin_k_scale=args.twin_k_scale, neo_format=args.format,
                 preset=args.preset)
    s = r["summary"]
    print(f"\n== colplugin run {task.name} ==")
    print(f"learned:   {_updates(s)}, test accuracy {s['final_accuracy']}, final loss {s['final_loss']:.4g}"
          f"{_loss_on(s)}")
    for m, a in r["agreement"].items():
        print(f"Brian2 {m:<6} max |diff| {a['max_abs_hz']:.3g} Hz, max rel {a['max_rel']:.3g}")
    v = r.get("validation")
    if v:
        key = "lif_vs_spiking" if v.get("preset") == "pd14_lif" else "dmf_vs_spiking"
        worst = max(v["rows"], key=lambda row: abs(row[key]))
        judged = (f"LIF column within 10 % of spiking on average: {v['lif_mean_within10']}"
                  if key == "lif_vs_spiking" else f"DMF within 30 % of spiking: {v['within30']}")
        print(f"spiking:   rates within 20 % of published: {v['within20']}; {judged} "
              f"(worst {worst['population']} {100 * worst[key]:+.1f} %)")
    tw = r.get("twin")
    if tw:
        print(f"twin:      spiking ({tw['backend']}, scale {tw['scale']}) task accuracy {tw['accuracy']} "
              f"({tw.get('rate_model', 'DMF')} {tw['dmf_accuracy']})")
    print(f"wall time: {r['wall_seconds']:.1f} s")
    print(f"report:    {_shown(out) / 'report.md'}")
    _validation_status(v)  # reported; the main job itself succeeded
    return 0


#: Exit status of a command whose validation check failed (2: an error, nothing decided).
EXIT_CHECK_FAILED = 1


def _validation_status(r: dict | None) -> int:
    """0 if every check of a microcircuit validation passed (or none ran), else EXIT_CHECK_FAILED."""
    if not r:
        return 0
    failed = [k for k in ("within20", "within30", "ordering", "lif_mean_within10", "lif_each_within25")
              if k in r and not r[k]]
    if failed:
        print(f"validation check(s) failed: {', '.join(failed)} (see the report)", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return 0


def _check_device(args: argparse.Namespace) -> None:
    """Refuse --device for a backend without devices (NEST) instead of ignoring it."""
    from colplugin.spiking.simulate import spiking_backend

    if args.device is not None and not spiking_backend(args.backend).devices:
        raise ValueError(f"--device {args.device} belongs to Brian2; --backend {args.backend} has no devices: "
                         "leave --device out")


def _cmd_validate(args: argparse.Namespace) -> int:
    from colplugin.analysis import validation

    _check_device(args)
    if args.what == "stimulus" and args.format != "nix":
        raise ValueError(f"--format {args.format}: the stimulus validation writes no Neo file (report.md and "
                         "stimulus.json); leave --format out")
    if args.what == "stimulus" and args.preset is not None:
        raise ValueError(f"--preset {args.preset} applies to `validate microcircuit` only; the stimulus validation "
                         "compares the DMF column's response with the spiking circuit's: leave it out")
    # duration, seeds, device and preset default differently for the two validations: None here, the
    # settings class fills them
    chosen = {k: getattr(args, k) for k in ("duration", "seeds", "device", "preset") if getattr(args, k) is not None}
    common = dict(scale=args.scale, seed=args.seed, k_scale=args.k_scale, backend=args.backend, threads=args.threads)
    if args.what == "microcircuit":  # checked once, before any work
        settings = validation.ValidationSettings(**common, neo_format=args.format, **chosen)
    else:
        settings = validation.StimulusValidationSettings(**common, rate=args.rate, **chosen)
    out = _new_run_dir(args.out, f"validate-{args.what}", args.overwrite)
    if args.what == "microcircuit":
        r = validation.validate_microcircuit(out, settings)
        print(r["table_md"])
        judged = (f"DMF within 30 % of spiking: {r['within30']}; I above E in every layer (DMF): {r['ordering']}"
                  if settings.preset == "pd14" else
                  f"LIF column within 10 % on average: {r['lif_mean_within10']} "
                  f"({100 * r['lif_mean_deviation']:.1f} %), each within 25 %: {r['lif_each_within25']} "
                  f"(largest {100 * r['lif_max_deviation']:.1f} %)")
        print(f"\nspiking within 20 % of published: {r['within20']}; {judged}; {r['wall_seconds']:.1f} s, "
              f"peak {r['peak_mb']:.0f} MB")
        print(f"wrote {_shown(out)}/report.md")
        return _validation_status(r)
    r = validation.validate_stimulus(out, settings)
    print(f"directions agree in {r['directions_agree']}/8 populations, Spearman rho {r['spearman_rho']:.2f}")
    print(f"wrote {_shown(out)}/report.md")
    return 0


def _cmd_twin(args: argparse.Namespace) -> int:
    import torch

    from colplugin.analysis.twin import TwinSettings, twin_run
    from colplugin.experiments import load_twin_run

    _check_device(args)
    settings = TwinSettings(backend=args.backend, device=args.device, scale=args.scale, k_scale=args.k_scale,
                            trials=args.trials, seed=args.seed, threads=args.threads,
                            nix_neurons=args.nix_neurons, reuse=not args.rebuild_per_trial)  # checked before any work
    net, stim, duration, task = load_twin_run(Path(args.run_dir))
    settings.check_network(net)  # the scale floor of this network's smallest population
    out = _new_run_dir(args.out, "twin", args.overwrite, reads=_reads(args))
    torch.set_num_threads(1)
    print(f"spiking twin of {args.run_dir} ({task.name if task else 'no task'}): {stim.batch_size} conditions x "
          f"{args.trials} trials on {args.backend} ...", flush=True)
    r = twin_run(out, net, stim, duration, task, source=str(args.run_dir), progress=not args.no_progress,
                 neo_format=args.format, settings=settings)
    print(r["table_md"])
    acc = r["accuracy"]
    print(f"\ntask accuracy of the spiking twin: {'none (the task has no read-out from rates)' if acc is None else acc}"
          f"; DMF: {'none' if r['dmf_accuracy'] is None else r['dmf_accuracy']}; {r['wall_seconds']:.1f} s")
    print(f"wrote {_shown(out)} (twin.json, report.md, spikes.nix, figures)")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from colplugin.analysis.calibration import (FIT_LEVELS, HELD_OUT_LEVELS, STAIRCASE_K_SCALE, calibrate,
                                                calibration_network, read_saved_calibration)
    from colplugin.analysis.twin import TwinSettings, check_twin_scale
    from colplugin.params import DEFAULT_PRESET, resolve_params

    preset = args.preset if args.preset is not None else DEFAULT_PRESET
    k_scale = STAIRCASE_K_SCALE if args.k_scale is None else args.k_scale
    TwinSettings(backend=args.backend, scale=args.scale, k_scale=k_scale, seed=args.seed, threads=args.threads)
    check_twin_scale(calibration_network(resolve_params(preset), max(args.columns, 1)), args.scale, k_scale)
    if args.spiking is not None and not Path(args.spiking).is_file():
        raise ValueError(f"--spiking {args.spiking}: no such file; pass the calibration.json of an earlier run")
    if args.spiking is not None:
        read_saved_calibration(args.spiking)
    if args.columns < 1:
        raise ValueError(f"--columns {args.columns}: give 1 (a full column) or more (the area split into as many)")
    fit_levels = FIT_LEVELS if args.fit_levels is None else tuple(args.fit_levels)
    held_out = HELD_OUT_LEVELS if args.held_out_levels is None else tuple(args.held_out_levels)
    from colplugin.stimulus import MAX_INPUT_RATE

    for name, levels in (("--fit-levels", fit_levels), ("--held-out-levels", held_out)):
        if any(not (0 <= u <= MAX_INPUT_RATE) for u in levels):
            raise ValueError(f"{name} {' '.join(f'{u:g}' for u in levels)}: input rates must lie in [0, "
                             f"{MAX_INPUT_RATE:g}] Hz (firing rates of presynaptic neurons)")
        if len(set(levels)) != len(levels):
            raise ValueError(f"{name} {' '.join(f'{u:g}' for u in levels)}: a level is given twice; give each "
                             "input rate once")
    shared = sorted(set(fit_levels) & set(held_out))
    if shared:
        raise ValueError(f"--held-out-levels and --fit-levels share {', '.join(f'{u:g}' for u in shared)} Hz: a "
                         "held-out level must not be fitted; give levels that differ")
    out = _new_run_dir(args.out, "calibrate", args.overwrite, reads=_reads(args))
    torch.set_num_threads(1)
    print(f"calibrating {preset} against its spiking twin ({args.backend}, scale {args.scale}) ...", flush=True)
    r = calibrate(out, preset, scale=args.scale, k_scale=k_scale, backend=args.backend, seed=args.seed,
                  neo_format=args.format,
                  threads=args.threads, gains=args.gains, spiking_from=args.spiking, columns=args.columns,
                  fit_levels=fit_levels, held_out=held_out)
    print("V_offset (mV): " + ", ".join(f"{x:+.3g}" for x in r["V_offset_mV"]))
    print("input gains: " + ", ".join(f"{x:.3g}" for x in r["input_gain"]))
    print(f"largest relative difference from the spiking rates: before {r['max_rel_before']:.3g}, calibrated "
          f"{r['max_rel_fit']:.3g} (fit levels), {r['max_rel_held_out']:.3g} (held-out levels; goal 0.1)")
    nix = "" if args.spiking else ", spikes.nix"
    print(f"wrote {_shown(out)} ({r['calibrated_preset']}.toml, calibration.json, report.md, calibration.png{nix})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from colplugin.experiments import export_run, load_run

    net, stim, duration = load_run(Path(args.run_dir))
    out = _new_run_dir(args.out, "export", args.overwrite, reads=_reads(args))
    torch.set_num_threads(1)
    print(f"exporting {args.run_dir} to Brian2 ({args.device}): {stim.batch_size} trial(s) of {duration:g} s at "
          "dt 0.1 ms, euler and rk4, each against torch ...", flush=True)
    r = export_run(net, stim, duration, out, device=args.device, neo_format=args.format)
    for m in (k for k, v in r.items() if isinstance(v, dict) and "brian2_wall_seconds" in v):
        acc = r[m]["vs_accurate_torch"]
        print(f"Brian2 ({args.device}) vs torch, dt 0.1 ms, {m}: max |diff| {r[m]['max_abs_hz']:.3g} Hz "
              f"(rel {r[m]['max_rel']:.3g}); vs accurate torch (dopri5, rtol 1e-8): {acc['max_abs_hz']:.3g} Hz "
              f"(rel {acc['max_rel']:.3g})")
    print(f"export method: {r['method']}")
    print(f"wrote {_shown(out)} (model.py, model_data.npz, model_model.md, brian2.nix, torch.nix, agreement.json)")
    return 0


def _add_format(p: argparse.ArgumentParser) -> None:
    """``--format``: the file format(s) of the Neo results a command writes."""
    p.add_argument("--format", choices=["nix", "nwb", "both"], default="nix",
                   help="Neo results as NIX (default), NWB (pynwb; read back with colplugin.load_nwb) or both")


def _add_common(p: argparse.ArgumentParser, prefix: str) -> None:
    p.add_argument("--out", help=f"output directory (default runs/{prefix}-TIMESTAMP); must be new or empty")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out directory")


def _add_task_options(p: argparse.ArgumentParser, tasks: dict) -> dict[str, list[tuple[str, str]]]:
    """Add every task's own options in a group of its own; return their (dest, flag) per task."""
    owned = {}
    for name, cls in sorted(tasks.items()):
        group = p.add_argument_group(f"options of task {name}")
        cls.add_arguments(group)
        owned[name] = [(a.dest, a.option_strings[0]) for a in group._group_actions]
        for a in group._group_actions:  # None marks "not given", so misuse on another task is caught
            a.default = None
    return owned


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_seed, default=0, help="seed of the initial weights and the trials (default 0)")
    p.add_argument("--updates", type=int, default=None, help="number of updates (default: the task's)")
    p.add_argument("--gradient", choices=["adjoint", "direct"], default=None,
                   help="how gradients are obtained (default: the task's; adjoint is the paper's method)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the task's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (CI logs)")
    p.add_argument("--threads", type=_threads, default=1,
                   help="torch intra-op threads, also the compiled solver's threads over chunks of trials "
                        "(default 1, the fastest for the paper's small networks; more for large networks "
                        "at large batches, up to the cores)")


def _seed(text: str) -> int:
    """argparse type: a seed torch, numpy and the spiking backends all take (0 .. 2^63 - 1)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be a whole number in [0, 2^63), got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a duration, a rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number > 0")
    return value


def _nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (an input rate; a scale where 0 means 'off')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


#: Most seeds of one ``validate microcircuit`` (spiking runs) and of one ``reproduce`` (trainings).
MAX_SPIKING_SEEDS = 100
MAX_TRAINING_SEEDS = 1000

#: Most threads a command starts per core: more only multiplies the threads' overhead (and a
#: million of them exhausts the process's memory before any work).
THREADS_PER_CORE = 4


def _threads(text: str) -> int:
    """argparse type: threads in [1, THREADS_PER_CORE x the machine's cores]."""
    value = _positive_int(text)
    most = THREADS_PER_CORE * (os.cpu_count() or 1)
    if value > most:
        raise argparse.ArgumentTypeError(f"{value} threads on a machine of {os.cpu_count()} cores; give at most "
                                         f"{most} ({THREADS_PER_CORE} per core), usually the number of cores")
    return value


def _bounded_int(most: int, why: str):
    """argparse type: a whole number in [1, most]."""
    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"{value} is more than {most}: {why}")
        return value
    return parse


def _add_preset(p: argparse.ArgumentParser, default: str = "default: the task's, e.g. dl25") -> None:
    """``--preset NAME|FILE.toml``: the parameters of the network a command builds (every such command)."""
    from colplugin.params import PRESETS

    p.add_argument("--preset", "--params", dest="preset", default=None, metavar="NAME|FILE.toml",
                   help=f"parameters of the network: a preset ({', '.join(PRESETS)}; *_lif: the LIF mean-field "
                        "column, Siegert transfer) or a parameter file such as the one `colplugin calibrate` writes "
                        f"({default}; --params is the same option)")


def _check_preset(args: argparse.Namespace) -> None:
    """Refuse an unknown ``--preset`` before any work."""
    if getattr(args, "preset", None) is not None:
        from colplugin.params import resolve_params

        resolve_params(args.preset)


def build_parser() -> argparse.ArgumentParser:
    """The ``colplugin`` argument parser; the task choices come from the task registry."""
    from colplugin.analysis.calibration import FIT_LEVELS, HELD_OUT_LEVELS, STAIRCASE_K_SCALE
    from colplugin.analysis.twin import TwinSettings
    from colplugin.analysis.validation import VALIDATE_DURATION, StimulusValidationSettings, ValidationSettings
    from colplugin.params import DEFAULT_PRESET
    from colplugin.experiments import MAIN_RUN_TWIN
    from colplugin.spiking.network import SCALE
    from colplugin.spiking.simulate import SPIKING_BACKENDS

    from colplugin import __version__
    from colplugin.tasks import DEFAULT_TASK, TASKS

    parser = argparse.ArgumentParser(prog="colplugin", description=__doc__)
    parser.add_argument("--version", action="version", version=f"colplugin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate a column (or an area of columns) with a step input")
    _add_preset(p, default=f"default {DEFAULT_PRESET}")
    p.add_argument("--area", help="area type (default: the preset's default area)")
    p.add_argument("--columns", type=int, default=1, help="number of columns in the area (default 1)")
    p.add_argument("--full", action="store_true", help="give every column the full area size")
    p.add_argument("--input", type=_nonnegative_float, default=20.0, help="input rate in Hz (default 20)")
    p.add_argument("--duration", type=_positive_float, default=1.0, help="simulated time in s (default 1)")
    _add_common(p, "simulate")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("validate", help="compare the DMF column with the spiking PD14 microcircuit",
                       epilog="exit status: 0 when every check passes, 1 when a check of the microcircuit "
                              "validation fails (within20 and, for --preset pd14, within30 and ordering; for pd14_lif, "
                              "lif_mean_within10 and lif_each_within25; the report is written), 2 on "
                              "an error (bad input, nothing decided). The stimulus validation has no pass "
                              "line and exits 0.")
    p.add_argument("what", choices=["microcircuit", "stimulus"],
                   help="resting rates (microcircuit) or the response to a thalamic step (stimulus)")
    vm, vst = ValidationSettings, StimulusValidationSettings  # the defaults of a validation, in one place
    p.add_argument("--scale", type=float, default=vm.scale,
                   help=f"neuron scaling of the spiking circuit (default {vm.scale})")
    p.add_argument("--k-scale", type=float, default=vm.k_scale, help=f"in-degree scaling (default {vm.k_scale})")
    p.add_argument("--duration", type=_positive_float, default=None,
                   help=f"simulated time in s (default {vm.duration} for the microcircuit, the first {vm.transient} s "
                        f"discarded; {vst.duration} for the stimulus)")
    p.add_argument("--rate", type=_nonnegative_float, default=vst.rate,
                   help=f"thalamic step rate in Hz (stimulus validation; default {vst.rate})")
    p.add_argument("--seed", type=int, default=vm.seed, help=f"seed of the spiking network (default {vm.seed})")
    p.add_argument("--device", choices=["cpp_standalone", "runtime"], default=None,
                   help="Brian2 device (default cpp_standalone; NEST has none)")
    p.add_argument("--seeds", type=_bounded_int(MAX_SPIKING_SEEDS, "each seed is a full spiking run; the seed-mean's "
                                                "spread at 100 seeds is a tenth of one run's"), default=None,
                   help=f"runs with seeds SEED, SEED+1, ... (default {vm.seeds} for the microcircuit, {vst.seeds} for "
                        "the stimulus; rates are their mean)")
    p.add_argument("--backend", choices=list(SPIKING_BACKENDS), default=vm.backend,
                   help=f"spiking simulator of the microcircuit (default {vm.backend})")
    p.add_argument("--threads", type=_threads, default=vm.threads,
                   help=f"OpenMP threads (NEST, Brian2 cpp_standalone; default {vm.threads})")
    p.add_argument("--preset", choices=["pd14", "pd14_lif"], default=None,
                   help="microcircuit: the rate column the checks judge: pd14 (the DMF's f; within30, ordering) or "
                        "pd14_lif (the LIF mean field, Siegert transfer; lif_mean_within10, lif_each_within25). "
                        f"The report shows both beside the spiking circuit (default {vm.preset})")
    _add_format(p)
    _add_common(p, "validate-WHAT")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("twin", help="run a trained network's test conditions as a spiking twin (Brian2 or NEST)")
    p.add_argument("run_dir", help="run directory with checkpoint.pt (or train/checkpoint.pt), or a network.json spec")
    tw = TwinSettings  # the defaults of a twin, in one place
    p.add_argument("--backend", choices=list(SPIKING_BACKENDS), default=tw.backend,
                   help=f"spiking simulator (default {tw.backend})")
    p.add_argument("--device", default=None,
                   help="the backend's device, e.g. Brian2's cpp_standalone or runtime (default: the backend's first, "
                        "cpp_standalone; NEST has none)")
    p.add_argument("--scale", type=float, default=tw.scale,
                   help=f"neuron scale in (0, 1] of every column (default {tw.scale})")
    p.add_argument("--k-scale", type=float, default=tw.k_scale,
                   help=f"in-degree scale in (0, 1] of the recurrent connections, PD14's method (default {tw.k_scale})")
    p.add_argument("--trials", type=int, default=tw.trials,
                   help=f"spiking trials per condition (default {tw.trials})")
    p.add_argument("--rebuild-per-trial", action="store_true", default=not tw.reuse,
                   help="build every trial's network anew with seed SEED + j (a new draw of connectivity per trial); "
                        "default: where the backend can (NEST), build each condition's network once and run its "
                        "trials in it from a fresh state")
    p.add_argument("--seed", type=int, default=tw.seed, help=f"seed of the networks and trials (default {tw.seed})")
    p.add_argument("--threads", type=_threads, default=tw.threads,
                   help=f"OpenMP threads (NEST, Brian2 cpp_standalone; default {tw.threads})")
    p.add_argument("--nix-neurons", type=int, default=tw.nix_neurons,
                   help=f"neurons per population kept in spikes.nix (default {tw.nix_neurons}; rates use all)")
    p.add_argument("--no-progress", action="store_true", help="no line per spiking run")
    _add_format(p)
    _add_common(p, "twin")
    p.set_defaults(func=_cmd_twin)

    p = sub.add_parser("calibrate", help="fit the DMF's f (one offset per population) to its spiking twin; "
                                         "writes a preset")
    _add_preset(p, default=f"default {DEFAULT_PRESET}; the result is a file whose base is this preset")
    p.add_argument("--backend", choices=list(SPIKING_BACKENDS), default="nest",
                   help="spiking simulator (default nest)")
    p.add_argument("--scale", type=float, default=SCALE,
                   help=f"neuron scale in (0, 1] of the column (default {SCALE})")
    p.add_argument("--k-scale", type=float,
                   help=f"in-degree scale in (0, 1] of the recurrent connections (default {STAIRCASE_K_SCALE:g}, "
                        "the full in-degrees: below 1 one DC current from the "
                        "DMF's mean rates stands in for the missing synapses at every level)")
    p.add_argument("--seed", type=int, default=0, help="seed of the spiking run (default 0)")
    p.add_argument("--threads", type=_threads, default=1,
                   help="OpenMP threads (NEST, Brian2 cpp_standalone; default 1)")
    p.add_argument("--gains", action="store_true",
                   help="fit an input gain per population beside the offsets (closer for one column; gains above 1 "
                        "can make larger networks run away)")
    p.add_argument("--spiking", metavar="CALIBRATION.json",
                   help="refit the spiking rates of an earlier calibration (same preset) instead of running the twin")
    p.add_argument("--columns", type=int, default=1,
                   help="the column type: the preset's area split into this many columns (default 1, a full "
                        "column; 2 is the column of the XOR and decision tasks)")
    p.add_argument("--fit-levels", type=float, nargs="+", metavar="HZ",
                   help="input rates (Hz into L4E and L4I) the fit uses (default: "
                        f"{' '.join(f'{u:g}' for u in FIT_LEVELS)})")
    p.add_argument("--held-out-levels", type=float, nargs="+", metavar="HZ",
                   help="input rates that only check the fit (default: "
                        f"{' '.join(f'{u:g}' for u in HELD_OUT_LEVELS)})")
    _add_format(p)
    _add_common(p, "calibrate")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("export", help="export a trained run (or a network spec) to Brian2 and compare")
    p.add_argument("run_dir", help="run directory with checkpoint.pt (or train/checkpoint.pt), or a network.json spec")
    p.add_argument("--device", choices=["runtime", "cpp_standalone"], default="runtime",
                   help="Brian2 device of the first method's run (default runtime)")
    _add_format(p)
    _add_common(p, "export")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("run", help="main job: train, export to Brian2, compare, validate, write Neo/NIX and a report",
                       epilog="exit status: 0 when every step has run (failed validation checks are reported "
                              "in report.md and on stderr), 2 on an error.")
    p.add_argument("task", nargs="?", default=DEFAULT_TASK, choices=sorted(TASKS),
                   help=f"the task (default {DEFAULT_TASK})")
    _add_training(p)
    p.add_argument("--validate-scale", type=_nonnegative_float, default=SCALE,
                   help=f"neuron scale of the spiking validation (default {SCALE}; 0: no validation)")
    p.add_argument("--validate-duration", type=_positive_float, default=VALIDATE_DURATION,
                   help=f"simulated time of the spiking validation in s (default {VALIDATE_DURATION})")
    p.add_argument("--twin-scale", type=_nonnegative_float, default=MAIN_RUN_TWIN["scale"],
                   help="neuron scale of the spiking twin of the trained network (default "
                        f"{MAIN_RUN_TWIN['scale']}; 0: no twin)")
    p.add_argument("--twin-k-scale", type=float, default=MAIN_RUN_TWIN["k_scale"],
                   help=f"in-degree scale of the twin (default {MAIN_RUN_TWIN['k_scale']}: a quick first look)")
    p.add_argument("--twin-trials", type=_positive_int, default=MAIN_RUN_TWIN["trials"],
                   help=f"spiking trials per condition of the twin (default {MAIN_RUN_TWIN['trials']})")
    _add_preset(p)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (training resumes from its checkpoint)")
    _add_format(p)
    _add_common(p, "run-TASK")
    p.set_defaults(func=_cmd_run, _task_options=_add_task_options(p, TASKS))

    p = sub.add_parser("train", help="train one task")
    p.add_argument("task", choices=sorted(TASKS), help="the task")
    _add_training(p)
    _add_preset(p)
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--nproc", type=_positive_int, default=1,
                   help="data-parallel processes on this machine (default 1; each simulates a share of every "
                        "batch, gradients are all-reduced; under torchrun its WORLD_SIZE counts instead)")
    p.add_argument("--device", default=None,
                   help="torch device of the network, e.g. cpu or cuda (with --nproc P: process r on GPU r)")
    _add_common(p, "train-TASK-sSEED")
    p.set_defaults(func=_cmd_train, _task_options=_add_task_options(p, TASKS))

    reproducible = {name: cls for name, cls in TASKS.items() if cls.can_reproduce()}
    p = sub.add_parser("reproduce", help="reproduce a task's paper figure (its runs over seeds and the figure)")
    p.add_argument("task", choices=sorted(reproducible), help="the task")
    _add_training(p)
    p.add_argument("--seeds", type=_bounded_int(MAX_TRAINING_SEEDS, "each seed is a full training run; run "
                                                "several commands with other --seed values"), default=None,
                   help="number of seeds, from --seed on (default: the task's; tasks without a figure over "
                        "seeds train one run)")
    _add_preset(p)
    _add_common(p, "reproduce-TASK")
    p.set_defaults(func=_cmd_reproduce, _task_options=_add_task_options(p, reproducible))
    return parser


def _share_an_mpi_run(args: argparse.Namespace) -> None:
    """A NEST command launched in several MPI processes runs one network in all of them: only rank 0 writes.

    Checked on every process alike, before any work (a refusal on one process only would leave
    the others waiting for it): mpi4py must be importable, since the spikes are gathered with it.
    """
    from colplugin._mpi import launch_size, share_run

    share_run(False)
    if launch_size() > 1 and getattr(args, "backend", None) == "nest":
        import importlib.util

        if importlib.util.find_spec("mpi4py") is None:
            raise RuntimeError(f"this command runs in {launch_size()} MPI processes, which gather their spikes with "
                               "mpi4py, which is not installed: pip install --no-binary mpi4py mpi4py (built against "
                               "the MPI that NEST was built with)")
        share_run()


def _abort_launch(status: int) -> None:
    """End every process of a shared MPI run with ``status`` (see :func:`colplugin._mpi.abort_launch`)."""
    from colplugin._mpi import abort_launch

    abort_launch(status)


@contextlib.contextmanager
def _other_ranks_quiet():
    """In a shared MPI run only rank 0 prints to stdout (every rank computes the same results); errors reach stderr."""
    from colplugin._mpi import writes_files

    if writes_files():
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``colplugin`` console script."""
    import matplotlib

    matplotlib.use("Agg")
    args = build_parser().parse_args(argv)
    from colplugin.params import ParameterError
    from colplugin.solve.simulate import SimulationError

    _CLAIMED.clear()
    with _signals_as_exceptions():
        try:
            _share_an_mpi_run(args)
            if getattr(args, "overwrite", False) and getattr(args, "out", None):
                _check_overwrite_reads(args.out, _reads(args))  # before the inputs are even read
            with _other_ranks_quiet():
                status = int(args.func(args) or 0)
        except (ParameterError, SimulationError, ValueError, FileNotFoundError, RuntimeError, MemoryError,
                OSError) as exc:
            _end_claims(ok=False)
            print(f"error: {exc}", file=sys.stderr)
            _abort_launch(2)
            return 2
        except SystemExit as exc:
            _end_claims(ok=False)
            if isinstance(exc.code, str):  # a refusal with a message: exit status 2, as every error
                print(exc.code, file=sys.stderr)
                _abort_launch(2)
                raise _Refused(exc.code) from None
            raise
        except KeyboardInterrupt as exc:
            _end_claims(ok=False)
            signum = getattr(exc, "signum", signal.SIGINT)
            print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr)
            _abort_launch(128 + int(signum))
            return 128 + int(signum)
        except BaseException:
            _end_claims(ok=False)
            _abort_launch(1)
            raise
        _end_claims(ok=True)
        return status


class _Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) raised as an exception, so cleanup runs as for errors."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_as_exceptions():
    """SIGTERM, SIGHUP and SIGINT raise in the main thread while a command runs (restored after).

    SIGINT gets a Python handler of its own too, so that Brian2 (which chains to the handler it
    finds at import) never calls a non-callable default.
    """
    def raise_it(signum, frame):
        raise _Interrupted(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            previous[sig] = signal.signal(sig, raise_it)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Refused(SystemExit):
    """Exit status 2 for a refusal whose message is already printed (``str()`` is the message)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
