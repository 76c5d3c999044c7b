"""Fit the learnable weights of a network to rates stored in a Neo Block (the Neo pipeline back in).

Reading Neo files is :mod:`colplugin.export.neo`'s job, and ``export`` stands after
``tasks`` in the package's import order: it is imported when a target is read from a
Neo Block (:meth:`FitTarget.from_block`, :meth:`FitTarget.from_args`), never when this
module is imported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._neo import NeoError, from_neo, load_nix, load_nwb, rate_signal, stimulus_from_neo
from ..network import ColumnNetwork
from ..params import Params
from ..solve.simulate import Solver, Trajectory
from ..stimulus import Stimulus
from ..training.settings import TrainSettings
from ..training.task import Batch, Task, register_task
from ..training.trainer import TrainResult, train

__all__ = ["FitTarget", "fit"]


@register_task
class FitTarget(Task):
    """A task whose target is a set of recorded rate trajectories.

    Build it from a Neo Block with :meth:`from_block` (the command line's ``colplugin
    train fit --target FILE.nix`` or ``FILE.nwb``), or from arrays.

    Parameters
    ----------
    t : array (T,)
        Sample times (s) of the target, starting at 0.
    rates : array (T, B, C)
        Target rates (Hz) of C channels in B trials.
    indices : sequence of int
        Network population index of each channel.
    stimulus : Stimulus
        The B trials' inputs.
    solver : Solver, optional
        Default: dopri5 (rtol 1e-5, atol 1e-4) on torchdiffeq.
    spec : dict, optional
        :meth:`ColumnNetwork.spec` of the network to fit (what :meth:`build_network`
        builds); without it, the network must be passed to :func:`fit` / ``train``.

    Notes
    -----
    Every update simulates all B trials. Default training (:attr:`settings`): 60 Adam
    updates at lr 0.3 with direct gradients, keeping the weights with the lowest error
    seen (Adam at a high learning rate overshoots near the optimum). The accuracy is
    1 - relative RMS error of the fitted channels.
    """

    name = "fit"

    def __init__(self, t: np.ndarray, rates: np.ndarray, indices: Sequence[int], stimulus: Stimulus,
                 solver: Solver | None = None, *, spec: Mapping[str, Any] | None = None) -> None:
        self.t = np.asarray(t, dtype=float)
        self.rates = torch.as_tensor(rates, dtype=torch.float64)
        self.indices = list(indices)
        self.stim = stimulus
        _check_target(self.t, self.rates, self.indices, stimulus)
        self.spec = dict(spec) if spec is not None else None
        self.duration = float(self.t[-1])
        self.dt_out = float(self.t[1] - self.t[0])
        self.solver = solver or Solver("dopri5", rtol=1e-5, atol=1e-4)
        self.settings = TrainSettings(updates=60, lr=0.3, gradient="direct", keep_best=True,
                                      batch_size=stimulus.batch_size)

    @classmethod
    def from_block(cls, block, network: ColumnNetwork | Mapping[str, Any], populations: Sequence[str] | None = None,
                   *, mapping: Mapping[str, str] | None = None, stimulus: Stimulus | None = None) -> "FitTarget":
        """The target of ``block`` for ``network`` (a network or its spec).

        Parameters
        ----------
        block : neo.Block
            Rates as AnalogSignals (Hz) or spike trains (turned into rates with Elephant), one
            Segment per trial, e.g. from :func:`colplugin.to_neo` / :func:`colplugin.load_nix`.
        network : ColumnNetwork or dict
            The network to fit, or its :meth:`ColumnNetwork.spec`.
        populations : sequence of str, optional
            Channels to fit, as network channel names (``"mt[0].L23E"``), matched to the
            signals through their array annotations (area, column, population). Default:
            every channel of the signal that the network has.
        mapping : mapping, optional
            Explicit ``{signal channel name: network channel name}`` when annotations differ.
        stimulus : Stimulus, optional
            The trials' inputs; default the ``"input"`` signal that :func:`to_neo` stores.
        """
        if isinstance(network, ColumnNetwork):
            spec = network.spec()
        else:
            if not isinstance(network, Mapping):
                raise TypeError(f"network must be a ColumnNetwork or its spec (a dict), got {type(network).__name__}")
            spec = dict(network)
            network = _network_from_spec(spec, "the network spec")
        names = network.channel_names
        if not block.segments:
            raise NeoError("the target Block has no segments; a target needs one Segment per trial with the rates "
                           "(an AnalogSignal named 'rate' in Hz, or SpikeTrains) and the inputs (an AnalogSignal "
                           "named 'input'), as colplugin.to_neo writes them")
        sig_names = _target_channels(block.segments[0])
        if mapping:
            wanted_sig, wanted_net = list(mapping), list(mapping.values())
        else:
            if sig_names is None:
                raise NeoError("the target's channels carry no area/column/population annotations, so they cannot "
                               "be matched to the network's channels; annotate them as colplugin.to_neo does "
                               "(array_annotations area, column, population of the 'rate' AnalogSignal, or those "
                               "annotations on every SpikeTrain), or in Python pass mapping={signal channel: "
                               "network channel} to fit / FitTarget.from_block")
            wanted_net = list(populations) if populations else [n for n in sig_names if n in names]
            wanted_sig = wanted_net
            if not wanted_net:
                raise NeoError(f"none of the target's channels {sig_names} is a channel of the network {names}; "
                               "fit the network the target was recorded from, or choose channels with populations "
                               "(--populations) or mapping")
        missing = [n for n in wanted_net if n not in names]
        if missing:
            raise NeoError(f"network has no channel(s) {missing}; its channels: {names}")
        t, rates = from_neo(block, wanted_sig)
        t = t - t[0]
        stim = stimulus if stimulus is not None else stimulus_from_neo(block)
        if stim is None:
            raise NeoError("the target has no 'input' signal, so the inputs of its trials are unknown (fitting as if "
                           "there were none would fit the wrong thing); add each trial's inputs as an AnalogSignal "
                           f"named 'input' (Hz, one column per network input: {network.n_inputs}, on the rates' "
                           "time grid; colplugin.to_neo of a simulation writes it), or in Python pass stimulus="
                           "Stimulus(...) (Stimulus.none(trials, n_inputs) for trials without input)")
        if stim.batch_size != rates.shape[1]:
            raise NeoError(f"the stimulus has {stim.batch_size} trials but the Block {rates.shape[1]} segments")
        if stim.n_inputs != network.n_inputs:
            raise NeoError(f"the target's inputs have {stim.n_inputs} channel(s), the network {network.n_inputs}; "
                           "give one input channel per network input (or fit the network the target was "
                           "recorded from)")
        dense = network.n_populations <= network.dense_max_populations  # the fused solve needs a dense coupling
        return cls(t, rates, [names.index(n) for n in wanted_net], stim, spec=spec,
                   solver=Solver("dopri5", rtol=1e-5, atol=1e-4, backend="auto" if dense else "torchdiffeq"))

    def build_network(self, params: Params | None = None, seed: int | None = None) -> ColumnNetwork:
        """The network of ``spec`` (with ``params`` and ``seed`` if given)."""
        if self.spec is None:
            raise TypeError("this FitTarget has no network spec; build it with FitTarget.from_block(block, network) "
                            "or pass the network to colplugin.tasks.fit.fit")
        spec = dict(self.spec)
        if params is not None:
            spec["params"] = params.to_dict()
        if seed is not None:
            spec["seed"] = seed
        return ColumnNetwork.from_spec(spec)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """Every trial of the target (``n`` is ignored)."""
        return Batch(self.stim, self.rates, {})

    def test_set(self) -> Batch:
        """Every trial of the target."""
        return Batch(self.stim, self.rates, {})

    def evaluation_stimulus(self) -> Stimulus:
        """The target's trials."""
        return self.stim

    def output(self, traj: Trajectory) -> torch.Tensor:
        """The fitted channels' rates (T, B, C) in Hz."""
        return traj.rate[: self.rates.shape[0], :, self.indices]

    def loss(self, traj: Trajectory, batch: Batch) -> torch.Tensor:
        """Mean squared error (Hz^2) over times, trials and channels."""
        return torch.mean((self.output(traj) - batch.target.to(traj.state)) ** 2)

    def accuracy(self, traj: Trajectory, batch: Batch) -> float:
        """1 - relative RMS error (RMS of the difference over RMS of the target)."""
        out = self.output(traj).detach()
        tgt = batch.target.to(out)
        return float(1 - torch.sqrt(torch.mean((out - tgt) ** 2)) / torch.sqrt(torch.mean(tgt ** 2)))

    def report_section(self, network: ColumnNetwork, result: Any, evaluation: Mapping[str, Any],
                       prefix: str = "") -> list[str]:
        """The relative RMS error of the kept weights."""
        acc = result.summary.get("final_accuracy")
        return [] if acc is None else [f"Relative RMS error of the fitted channels: {100 * (1 - acc):.2f} %."]

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """``--target``, ``--populations``, ``--network``."""
        group.add_argument("--target", metavar="FILE.nix|FILE.nwb",
                           help="fit: a NIX or NWB file with the target, one segment per trial: the rates (an "
                                "AnalogSignal 'rate' in Hz, or SpikeTrains turned into population rates with "
                                "Elephant), each channel annotated area, column, population, and the inputs (an "
                                "AnalogSignal 'input' in Hz), as colplugin writes them (e.g. a twin's spikes.nix, an "
                                "export's torch.nix)")
        group.add_argument("--populations", metavar="CHANNELS",
                           help="fit: comma-separated network channels to fit, e.g. mt[0].L23E,mt[1].L23E "
                                "(default: every channel of the target that the network has)")
        group.add_argument("--network", metavar="SPEC.json",
                           help="fit: network spec JSON (ColumnNetwork.spec(); default: the one stored in the target)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "FitTarget":
        """The target of ``--target`` for the network of ``--network`` (or the target's own spec)."""
        _check_flags(args)
        if not args.target:
            raise ValueError("colplugin train fit needs --target FILE.nix or FILE.nwb (rates or spike trains as Neo)")
        block = _read_target(args.target)
        spec, where = _target_spec(args.network, args.target, block)
        network = _network_from_spec(spec, where)
        if not network.learnable_parameters():
            raise ValueError(f"the target's network ({where}) has no learnable projection, so there is nothing "
                             "to fit; pass --network SPEC.json of the same network with a learnable projection, e.g. "
                             "the network.json of a `colplugin train` run (Python: e.g. [Input('mt'), Lateral('mt', "
                             "learnable=True)]; write its spec with json.dump(network.spec(), file))")
        pops = [p.strip() for p in args.populations.split(",") if p.strip()] if args.populations else None
        try:
            return cls.from_block(block, network, pops)
        except NeoError as exc:
            raise NeoError(f"--target {args.target}: {exc}") from None

    def config(self) -> dict[str, Any]:
        return {**super().config(), "channels": self.indices}


#: What a network spec file is, for messages: the command line's way first.
SPEC_FILE = ("a network.json written by colplugin (a run directory's network.json; "
             "Python: ColumnNetwork.spec() written with json.dump)")


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse an empty ``--target``, ``--populations`` or ``--network`` (a ValueError naming the flag and the fix)."""
    for flag, value in (("--target", args.target), ("--populations", args.populations),
                        ("--network", args.network)):
        if value is not None and not str(value).replace(",", " ").strip():
            raise ValueError(f"{flag} is empty ({value!r}); give a value or leave {flag} out"
                             + (" to fit every channel of the target that the network has; e.g. "
                                "--populations mt[0].L23E,mt[1].L23E" if flag == "--populations" else
                                " to use the network spec stored in the target" if flag == "--network" else
                                " (fit needs it: the NIX or NWB file of the target rates, e.g. --target "
                                "rates.nix)"))


def _read_target(target: str) -> Any:
    """The Neo Block of ``--target``: an NWB file (``.nwb``) or a NIX file (anything else).

    Raises
    ------
    ValueError
        If ``target`` is a directory.
    FileNotFoundError
        If it does not exist.
    NeoError
        If an NWB file cannot be read (the message starts with ``--target``).
    """
    if Path(target).is_dir():
        raise ValueError(f"--target {target} is a directory, not a NIX or NWB file; pass the file of the "
                         f"target rates in it, e.g. --target {Path(target) / 'rates.nix'} (Python: "
                         "colplugin.save_nix(colplugin.to_neo(...), path) writes one)")
    if Path(target).suffix.lower() == ".nwb":  # NWB beside NIX (colplugin.save_nwb writes it)
        try:
            return load_nwb(target)
        except FileNotFoundError:
            raise FileNotFoundError(f"--target {target}: no such file; pass an NWB file of the target "
                                    "rates (colplugin.save_nwb(colplugin.to_neo(...), path))") from None
        except NeoError as exc:
            raise NeoError(f"--target: {exc}") from None
    try:
        return load_nix(target)
    except FileNotFoundError:
        raise FileNotFoundError(f"--target {target}: no such file; pass a NIX file of the target rates "
                                "(colplugin.save_nix(colplugin.to_neo(...), path))") from None


def _target_spec(network: str | None, target: str, block: Any) -> tuple[dict[str, Any], str]:
    """The network spec of ``--network`` (a JSON file) or else the target Block's ``network_spec``
    annotation, and where it came from (for messages).

    Raises
    ------
    ValueError
        If ``--network`` is a directory, either source is not valid JSON or not a JSON object,
        or there is neither.
    FileNotFoundError
        If the ``--network`` file does not exist.
    """
    if network:
        path = Path(network)
        if path.is_dir():
            raise ValueError(f"--network {path} is a directory, not a network spec file; pass its network.json "
                             f"(e.g. --network {path / 'network.json'})")
        if not path.is_file():
            raise FileNotFoundError(f"--network {path}: no such file; pass a network spec: "
                                    f"{SPEC_FILE}")
        where = f"--network {path}"
        try:
            spec = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where} is not valid JSON ({exc}); pass {SPEC_FILE}") from None
    elif "network_spec" in block.annotations:
        where = f"the 'network_spec' annotation of {target}"
        try:
            spec = json.loads(block.annotations["network_spec"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where} is not valid JSON ({exc}); pass --network SPEC.json, {SPEC_FILE}, "
                             "or write the target again with colplugin (Python: colplugin.to_neo)") from None
    else:
        raise ValueError(f"{target} carries no network spec; pass --network SPEC.json, {SPEC_FILE}")
    if not isinstance(spec, dict):
        raise ValueError(f"{where} holds a JSON {type(spec).__name__}, not a network spec (a JSON object); "
                         f"pass --network SPEC.json, {SPEC_FILE}")
    return spec, where


def _network_from_spec(spec: Mapping[str, Any], where: str) -> ColumnNetwork:
    """The network of a spec, or a ValueError that names where the spec came from and the fix."""
    try:
        return ColumnNetwork.from_spec(dict(spec))
    except Exception as exc:  # any error of the builder is the spec's fault
        raise ValueError(f"{where} does not build a network ({exc.__class__.__name__}: {exc}); pass "
                         f"{SPEC_FILE}") from None


def _target_channels(seg) -> list[str] | None:
    """``"area[c].POP"`` names of a target segment's channels (rate signal or spike trains); None if unannotated."""
    sig = rate_signal(seg)
    keys = ("area", "column", "population")
    if sig is not None:
        ann = sig.array_annotations
        if not all(k in ann for k in keys):
            return None
        return [f"{a}[{c}].{p}" for a, c, p in zip(ann["area"], ann["column"], ann["population"])]
    trains = list(seg.spiketrains)
    if not trains or not all(all(k in st.annotations for k in keys) for st in trains):
        return None
    return list(dict.fromkeys(f"{st.annotations['area']}[{st.annotations['column']}].{st.annotations['population']}"
                              for st in trains))


def _check_target(t: np.ndarray, rates: torch.Tensor, indices: Sequence[int], stimulus: Stimulus) -> None:
    """Refuse target arrays that cannot define a fit (a ValueError naming the array and the fix)."""
    if t.ndim != 1 or len(t) < 2:
        raise ValueError(f"FitTarget: t must hold at least two sample times (s), got shape {t.shape}; the spacing "
                         "of the samples sets the fit's output step")
    step = np.diff(t)
    if not (np.all(np.isfinite(t)) and abs(t[0]) < 1e-12 and np.all(step > 0)
            and np.allclose(step, step[0], rtol=1e-6, atol=0)):
        raise ValueError("FitTarget: t must be evenly spaced increasing sample times from 0 s "
                         f"(got {t[:3].tolist()} ... {t[-1]:g}); resample the target onto one regular grid")
    if rates.ndim != 3 or rates.shape[0] != len(t) or rates.shape[2] != len(indices):
        raise ValueError(f"FitTarget: rates must have shape (T={len(t)}, trials, channels={len(indices)}), got "
                         f"{tuple(rates.shape)}")
    if not bool(torch.isfinite(rates).all()) or bool((rates < 0).any()):
        raise ValueError("FitTarget: the target rates must be finite and >= 0 Hz")
    if stimulus.batch_size != rates.shape[1]:
        raise ValueError(f"FitTarget: the stimulus has {stimulus.batch_size} trials, the rates {rates.shape[1]}")


def fit(network: ColumnNetwork, block, populations: Sequence[str] | None = None, *,
        mapping: Mapping[str, str] | None = None, stimulus: Stimulus | None = None, updates: int | None = None,
        lr: float | None = None, gradient: Any = None, out: str | Path | None = None, progress: bool = True,
        seed: int = 0, keep_best: bool | None = None, **train_kwargs) -> TrainResult:
    """Fit ``network``'s learnable weights so that chosen populations reproduce a Neo Block's rates.

    Parameters
    ----------
    network : ColumnNetwork
    block : neo.Block
        The target (see :meth:`FitTarget.from_block`).
    populations, mapping, stimulus
        See :meth:`FitTarget.from_block`.
    updates, lr, gradient, keep_best
        Training settings; ``None`` takes :class:`FitTarget`'s (60 updates, lr 0.3,
        direct gradients, keep the best weights).
    out, progress, seed, **train_kwargs
        Passed to :func:`colplugin.train`.

    Returns
    -------
    TrainResult
        ``metrics`` hold ``test_accuracy`` = 1 - relative RMS error of the fitted channels;
        with ``keep_best``, ``summary["final_accuracy"]`` is that of the kept weights.
    """
    task = FitTarget.from_block(block, network, populations, mapping=mapping, stimulus=stimulus)
    return train(network, task, updates, gradient=gradient, lr=lr, keep_best=keep_best, seed=seed, out=out,
                 progress=progress, **train_kwargs)
