"""The ``colplugin`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _new_run_dir(out: str | None, prefix: str, overwrite: bool = False) -> Path:
    """A fresh output directory; refuses to mix results into a non-empty one."""
    import time

    path = Path(out) if out else Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise SystemExit(f"error: {path} exists and is not empty; choose another --out, "
                         "or pass --overwrite (or --resume where supported)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cmd_simulate(args: argparse.Namespace) -> int:
    import torch

    import colplugin as cp
    from colplugin.plotting import plot_rates

    params = cp.load_preset(args.preset) if args.params is None else cp.load_params(args.params)
    area = args.area or params.default_area
    net = cp.ColumnNetwork(params, {area: cp.Area(area, args.columns, split=not args.full)}, [cp.Input(area)])
    t_on = args.duration / 2
    rates = [[0.0] * net.n_inputs, [args.input] * net.n_inputs]
    stim = cp.Stimulus([0.0, t_on], rates)
    with torch.no_grad():
        traj = cp.simulate(net, stim, duration=args.duration)
    out = _new_run_dir(args.out, "simulate", args.overwrite)
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
    print(f"\nwrote {out}/rates.json, rates.png, params.json")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    import json as _json

    import colplugin as cp
    from colplugin.tasks.fit import fit
    from colplugin.network import ColumnNetwork

    if not args.target:
        raise ValueError("colplugin train fit needs --target FILE.nix (rates or spike trains as Neo)")
    block = cp.load_nix(args.target)
    if args.network:
        spec = _json.loads(Path(args.network).read_text())
    elif "network_spec" in block.annotations:
        spec = _json.loads(block.annotations["network_spec"])
    else:
        raise ValueError(f"{args.target} carries no network spec; pass --network SPEC.json (ColumnNetwork.spec())")
    spec = {**spec, "seed": args.seed}
    net = ColumnNetwork.from_spec(spec)
    out = _new_run_dir(args.out, "fit", args.overwrite)
    pops = args.populations.split(",") if args.populations else None
    res = fit(net, block, pops, updates=args.updates or 60, lr=args.lr or 0.3, gradient=args.gradient or "direct",
              out=out, progress=not args.no_progress, seed=args.seed)
    from colplugin._io import atomic_write_text

    atomic_write_text(out / "network.json", _json.dumps(net.spec(), indent=2))
    err = 1 - res.summary["final_accuracy"]
    print(f"fit: relative RMS error {100 * err:.2f} % after {res.summary['updates']} updates; wrote {out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from colplugin.experiments import train_run

    torch.set_num_threads(args.threads)
    if args.task == "fit":
        return _cmd_fit(args)
    out = Path(args.out) if args.resume and args.out else _new_run_dir(args.out, f"train-{args.task}-s{args.seed}", args.overwrite)
    res = train_run(args.task, args.seed, out, updates=args.updates, gradient=args.gradient, lr=args.lr,
                    progress=not args.no_progress, resume=args.resume)
    s = res.summary
    print(f"{args.task} seed {args.seed}: {s['updates']} updates, final loss {s['final_loss']:.4g}, "
          f"test accuracy {s['final_accuracy']}, {s['wall_seconds']:.1f} s")
    print(f"wrote {out}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    import torch

    from colplugin.experiments import reproduce_xor, train_run

    torch.set_num_threads(args.threads)
    out = _new_run_dir(args.out, f"reproduce-{args.task}", args.overwrite)
    if args.task == "xor":
        r = reproduce_xor(args.seeds, out, progress=not args.no_progress, gradient=args.gradient)
        print(f"XOR: {r['solved']}/{r['seeds']} seeds reached 100 % test accuracy "
              f"(updates: {r['updates_to_solve']}), {r['total_wall_seconds']:.1f} s in all")
    else:
        res = train_run("decision", args.seed, out, gradient=args.gradient, progress=not args.no_progress,
                        updates=args.updates)
        print(f"decision: final loss {res.summary['final_loss']:.4g}, accuracy {res.summary['final_accuracy']}")
    print(f"wrote {out}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import torch

    from colplugin.experiments import main_run

    torch.set_num_threads(args.threads)
    if args.resume:
        if not args.out or not Path(args.out).is_dir():
            raise ValueError("--resume needs --out DIR of an earlier (interrupted) run")
        out = Path(args.out)
    else:
        out = _new_run_dir(args.out, f"run-{args.task}", args.overwrite)
    print(f"run directory: {out}", flush=True)
    r = main_run(out, args.task, progress=not args.no_progress, updates=args.updates, resume=args.resume)
    s = r["summary"]
    print(f"\n== colplugin run {args.task} ==")
    print(f"learned:   {s['updates']} updates, test accuracy {s['final_accuracy']}, loss {s['final_loss']:.4g}")
    for m, a in r["agreement"].items():
        print(f"Brian2 {m:<6} max |diff| {a['max_abs_hz']:.3g} Hz, max rel {a['max_rel']:.3g}")
    v = r.get("validation")
    if v:
        worst = max(v["rows"], key=lambda row: abs(row["dmf_vs_spiking"]))
        print(f"spiking:   rates within 20 % of published: {v['within20']}; DMF within 30 % of spiking: "
              f"{v['within30']} (worst {worst['population']} {100 * worst['dmf_vs_spiking']:+.1f} %)")
    print(f"wall time: {r['wall_seconds']:.1f} s")
    print(f"report:    {out / 'report.md'}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from colplugin.analysis.validation import validate_microcircuit, validate_stimulus

    out = _new_run_dir(args.out, f"validate-{args.what}", args.overwrite)
    if args.what == "microcircuit":
        r = validate_microcircuit(out, scale=args.scale, duration=args.duration, seed=args.seed,
                                  k_scale=args.k_scale, device=args.device)
        print(r["table_md"])
        print(f"\nspiking within 20 % of published: {r['within20']}; DMF within 30 % of spiking: {r['within30']}; "
              f"I above E in every layer (DMF): {r['ordering']}; {r['wall_seconds']:.1f} s, peak {r['peak_mb']:.0f} MB")
    else:
        r = validate_stimulus(out, scale=args.scale, rate=args.rate, seed=args.seed, k_scale=args.k_scale,
                              device=args.device)
        print(f"directions agree in {r['directions_agree']}/8 populations, Spearman rho {r['spearman_rho']:.2f}")
    print(f"wrote {out}/report.md")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import json as _json

    import torch

    from colplugin.experiments import export_run, task_stimulus
    from colplugin.network import ColumnNetwork
    from colplugin.stimulus import Stimulus
    from colplugin.tasks import get_task
    from colplugin.training.trainer import load_checkpoint

    run = Path(args.run_dir)
    ckpt_path = next((p for p in (run / "checkpoint.pt", run / "train" / "checkpoint.pt") if p.exists()), None)
    if ckpt_path is not None:
        ck = load_checkpoint(ckpt_path)
        net, task_name = ck["network"], ck["task"]["name"]
        stim, duration = task_stimulus(task_name), get_task(task_name).duration
    elif (run / "network.json").exists() or run.suffix == ".json":
        spec_path = run if run.suffix == ".json" else run / "network.json"
        net = ColumnNetwork.from_spec(_json.loads(spec_path.read_text()))
        stim = Stimulus([0.0, 0.5], [[0.0] * net.n_inputs, [20.0] * net.n_inputs])
        duration = 1.0
    else:
        raise FileNotFoundError(f"{run} holds no checkpoint.pt (or train/checkpoint.pt) and no network.json; "
                                "pass a run directory of `colplugin train`/`run` or a network spec")
    out = _new_run_dir(args.out, "export", args.overwrite)
    torch.set_num_threads(1)
    r = export_run(net, stim, duration, out, device=args.device)
    print(f"Brian2 ({args.device}) vs torch, dt 0.1 ms: rk4 max |diff| {r['rk4']['max_abs_hz']:.3g} Hz "
          f"(rel {r['rk4']['max_rel']:.3g}); euler max |diff| {r['euler']['max_abs_hz']:.3g} Hz "
          f"(rel {r['euler']['max_rel']:.3g})")
    print(f"wrote {out} (model.py, model_data.npz, model_model.md, brian2.nix, torch.nix, agreement.json)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colplugin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate a column (or an area of columns) with a step input")
    p.add_argument("--preset", default="dl25", choices=["dl25", "pd14"])
    p.add_argument("--params", help="a parameter TOML file (overrides --preset)")
    p.add_argument("--area", help="area type (default: the preset's default area)")
    p.add_argument("--columns", type=int, default=1)
    p.add_argument("--full", action="store_true", help="give every column the full area size")
    p.add_argument("--input", type=float, default=20.0, help="input rate in Hz (default 20)")
    p.add_argument("--duration", type=float, default=1.0, help="simulated time in s")
    p.add_argument("--out", help="output directory (default runs/simulate-TIMESTAMP)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("validate", help="compare the DMF column with the spiking PD14 microcircuit")
    p.add_argument("what", choices=["microcircuit", "stimulus"])
    p.add_argument("--scale", type=float, default=0.1, help="neuron scaling of the spiking circuit (default 0.1)")
    p.add_argument("--k-scale", type=float, default=0.5, help="in-degree scaling (default 0.5)")
    p.add_argument("--duration", type=float, default=2.5, help="simulated time in s (first 0.5 s discarded)")
    p.add_argument("--rate", type=float, default=8.0, help="thalamic step rate in Hz (stimulus validation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpp_standalone", "runtime"], default="cpp_standalone")
    p.add_argument("--out")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("export", help="export a trained run (or a network spec) to Brian2 and compare")
    p.add_argument("run_dir", help="run directory with checkpoint.pt, or a network.json spec")
    p.add_argument("--to", choices=["brian2"], default="brian2")
    p.add_argument("--device", choices=["runtime", "cpp_standalone"], default="runtime")
    p.add_argument("--out")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("run", help="main job: train, export to Brian2, compare, write Neo/NIX and a report")
    p.add_argument("task", nargs="?", default="xor", choices=["xor", "decision"])
    p.add_argument("--updates", type=int, default=None)
    p.add_argument("--out", help="run directory (default runs/run-TASK-TIMESTAMP)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (training resumes from its checkpoint)")
    p.set_defaults(func=_cmd_run)

    for name, helptext in (("train", "train one paper task"), ("reproduce", "reproduce a paper figure")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("task", choices=["xor", "decision", "fit"] if name == "train" else ["xor", "decision"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--updates", type=int, default=None)
        p.add_argument("--gradient", choices=["adjoint", "direct"], default=None,
                       help="default: direct (faster here; adjoint is the paper's method)")
        p.add_argument("--out", help="run directory (default runs/NAME-TIMESTAMP)")
        p.add_argument("--overwrite", action="store_true")
        p.add_argument("--no-progress", action="store_true", help="no progress bar (CI logs)")
        p.add_argument("--threads", type=int, default=1,
                       help="torch intra-op threads (1 is fastest for these small networks)")
        if name == "train":
            p.add_argument("--lr", type=float, default=None)
            p.add_argument("--resume", action="store_true", help="continue the run in --out")
            p.add_argument("--target", help="fit: a NIX file with target rates (or spike trains)")
            p.add_argument("--populations", help="fit: comma-separated channels, e.g. mt[0].L23E,mt[1].L23E")
            p.add_argument("--network", help="fit: network spec JSON (default: the one stored in the target)")
            p.set_defaults(func=_cmd_train)
        else:
            p.add_argument("--seeds", type=int, default=10)
            p.set_defaults(func=_cmd_reproduce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``colplugin`` console script."""
    import matplotlib

    matplotlib.use("Agg")
    args = build_parser().parse_args(argv)
    from colplugin.params import ParameterError
    from colplugin.solve.simulate import SimulationError

    try:
        return int(args.func(args) or 0)
    except (ParameterError, SimulationError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
