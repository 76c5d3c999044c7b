"""Neo outputs and inputs: trajectories as ``neo.Block`` objects, NIX and NWB files, training targets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only; neo is imported where it is used
    import neo

from .._io import atomic_path, writable_target
from .._neo import NeoError, from_neo, load_nix, load_nwb, stimulus_from_neo, write_nwb

__all__ = ["to_neo", "from_neo", "stimulus_from_neo", "save_nix", "load_nix", "save_nwb", "load_nwb", "save_neo",
           "check_neo_format", "NEO_FORMATS", "NeoError"]


def to_neo(result: Any, *, seed: int | None = None, description: str = "") -> "neo.Block":
    """Any colplugin result as a Neo Block (the result's own ``to_neo``).

    Rate runs (:class:`~colplugin.solve.Trajectory`, :class:`~colplugin.export.Brian2Run`)
    give one Segment per trial with an ``AnalogSignal`` of the instantaneous rates (Hz, one
    channel per population; ``array_annotations`` area, column, layer, population, cell
    type), the input rates and ``Epoch`` s of the stimulus; spiking runs give annotated
    ``SpikeTrain`` s. Block annotations record provenance (colplugin version, preset,
    solver as JSON, seed).
    """
    method = getattr(result, "to_neo", None)
    if not callable(method):
        raise TypeError(f"{type(result).__name__} cannot become Neo: to_neo takes a colplugin result "
                        "(Trajectory, Brian2Run, a spiking result), i.e. an object with a to_neo() method")
    return method(seed=seed, description=description)


def save_nix(block: "neo.Block", path: str | Path) -> Path:
    """Write a Block to a NIX file atomically (``neo.io.NixIO``).

    The arguments are checked before anything is written: ``block`` must be one
    ``neo.Block`` (e.g. ``colplugin.to_neo(result)``), ``path`` a file path that is new or an
    existing regular file. A directory, a device (``/dev/null``), a FIFO or a socket at
    ``path`` is refused, never replaced; a symbolic link to a regular file is followed (the
    file it points to is written, the link stays). See :func:`colplugin._io.writable_target`.

    Raises
    ------
    TypeError
        ``block`` is not a ``neo.Block`` or ``path`` not a path.
    ValueError
        An empty path, or a target that is not a regular file.
    """
    import neo
    from neo.io import NixIO

    if not isinstance(block, neo.Block):
        what = type(block).__name__
        hint = (" (save each Block to its own file, or put their Segments into one Block)"
                if isinstance(block, (list, tuple)) else "")
        raise TypeError(f"save_nix(block, path): block must be one neo.Block, got {what}{hint}; make one with "
                        "colplugin.to_neo(result)")
    # the path's checks first, on the argument as given (Path('') would be '.')
    writable_target(path, what="save_nix(block, path): path", example="result.nix")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.unlink()
        with NixIO(str(tmp), mode="ow") as io:
            io.write_block(block)
    return path


#: What ``--format`` accepts: the file formats each Neo result is written in.
NEO_FORMATS = {"nix": ("nix",), "nwb": ("nwb",), "both": ("nix", "nwb")}


def check_neo_format(format: str) -> str:
    """Refuse an unknown Neo file format before any work (``--format``)."""
    if format not in NEO_FORMATS:
        raise ValueError(f"format {format!r} (--format): use one of {', '.join(NEO_FORMATS)}")
    return format


def save_neo(block: "neo.Block", path: str | Path, format: str = "nix") -> list[Path]:
    """Write a Block as NIX, NWB or both: ``path`` with the suffix ``.nix`` and/or ``.nwb``.

    ``format`` is ``"nix"`` (:func:`save_nix`), ``"nwb"`` (:func:`save_nwb`) or ``"both"``
    (the command line's ``--format``). Returns the files written.
    """
    check_neo_format(format)
    path = Path(path)
    writers = {"nix": save_nix, "nwb": save_nwb}
    return [writers[f](block, path.with_suffix(f".{f}")) for f in NEO_FORMATS[format]]


def save_nwb(block: "neo.Block", path: str | Path) -> Path:
    """Write a Block to an NWB file atomically (pynwb), beside :func:`save_nix`.

    The data go where NWB and Neo's ``NWBIO`` keep them: each AnalogSignal is a
    ``TimeSeries`` (unit, rate, starting time; the ``"input"`` signal under ``stimulus``, the
    others under ``acquisition``; ``comments`` name the Block and Segment as Neo writes them),
    SpikeTrains are rows of the ``units`` table (spike times in s, observation interval, one
    column per scalar annotation such as ``population``), Epochs rows of the ``epochs`` table.
    What NWB has no place for (the Segments, units, Block / Segment / object annotations such
    as ``network_spec``, array annotations) is the JSON of the ``neo/neo_objects`` table of
    the processing module ``neo``; each signal's channel annotations are also a plain table
    ``neo/<TimeSeries name> channels``. :func:`load_nwb` reads the Block back with the same
    numbers, units and annotations.

    The arguments are checked as :func:`save_nix` checks them (one ``neo.Block``; a path
    that is new or an existing regular file, never a directory or device).

    Raises
    ------
    TypeError
        ``block`` is not a ``neo.Block``, ``path`` not a path, or an annotation has a type
        NWB cannot hold.
    ValueError
        An empty path, or a target that is not a regular file.
    NotImplementedError
        The Block holds Events, ImageSequences, Groups or spike waveforms (use :func:`save_nix`).
    """
    import neo

    if not isinstance(block, neo.Block):
        what = type(block).__name__
        hint = (" (save each Block to its own file, or put their Segments into one Block)"
                if isinstance(block, (list, tuple)) else "")
        raise TypeError(f"save_nwb(block, path): block must be one neo.Block, got {what}{hint}; make one with "
                        "colplugin.to_neo(result)")
    writable_target(path, what="save_nwb(block, path): path", example="result.nwb")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.unlink()
        write_nwb(block, tmp)
    return path
