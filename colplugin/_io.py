"""Atomic file writing: a file is either complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ._mpi import writes_files


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o644 & ~umask


_FILE_MODE = _file_mode()


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    """What a file of ``mode`` is when it is not a regular file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def writable_target(path: str | os.PathLike, *, what: str = "", example: str = "result") -> Path:
    """The regular file that writing ``path`` atomically replaces; refuse anything else before any write.

    A symbolic link is followed: the file it points to is written and the link stays a link.
    Refused (``ValueError``, naming the path, what it is and the fix): an empty path, a NUL
    character, a dangling symbolic link (or a loop), and an existing target that is not a
    regular file (a directory, a device such as ``/dev/null``, a FIFO, a socket): an atomic
    write renames a new file onto the target, which would replace the device or swallow the
    directory. ``what`` names the argument in messages (e.g. ``"save_nix: path"``), ``example``
    is the file name suggested inside a directory.
    """
    name = f"{what} " if what else ""
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what or 'the output path'} must be a file path (str or pathlib.Path), got "
                        f"{type(path).__name__} {path!r}")
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError(f"{what or 'the output path'} is empty; give a file path, e.g. {example!r}")
    if "\x00" in str(text):
        raise ValueError(f"{what or 'the output path'} {text!r} contains a NUL character; give a plain file path")
    path = Path(text)
    try:
        resolved = Path(os.path.realpath(path, strict=False)) if path.is_symlink() else path
        info = os.stat(resolved) if os.path.lexists(resolved) else None
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a too-long name, ...
        raise ValueError(f"cannot write {name}{path} ({exc.__class__.__name__}: {exc}); give another file "
                         "path") from None
    if path.is_symlink() and info is None:
        raise ValueError(f"{name}{path} is a symbolic link to {os.readlink(path)}, which does not exist; create the "
                         "file it points to, remove the link, or give another file path")
    if info is not None:
        kind = _not_regular(info.st_mode)
        if kind is not None:
            shown = f"{name}{path}" + (f" (a link to {resolved})" if resolved != path else "")
            fix = (f"give a file path inside it, e.g. {path / example}" if stat.S_ISDIR(info.st_mode) else
                   "give the path of a regular file (writing would replace the special file with an "
                   "ordinary one)")
            raise ValueError(f"{shown} is {kind}, not a regular file; {fix}")
    return resolved


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; move it onto ``path`` on success.

    If the body raises, the temporary file is removed and any existing file at ``path``
    is left untouched. The target is checked before anything is created
    (:func:`writable_target`): an existing target must be a regular file (never a directory,
    device, FIFO or socket: ``/dev/null`` stays a device), and a symbolic link to a regular
    file is followed (the file it points to is replaced; the link stays a link).

    In a shared MPI run only rank 0 writes (:func:`colplugin._mpi.writes_files`): on the other
    ranks the body writes into a temporary directory that is then removed, and ``path`` is not
    touched.
    """
    if not writes_files():
        with tempfile.TemporaryDirectory(prefix="colplugin_rank_") as scratch:
            tmp_path = Path(scratch) / Path(path).name
            tmp_path.touch()  # as on rank 0: an empty file the body may replace
            yield tmp_path
        return
    target = writable_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise exc.__class__(f"cannot write {path}: its directory {target.parent} cannot be created or written "
                            f"({reason}); give a path in a writable directory") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; results are ordinary files (0644 less umask)
        writable_target(target)  # again, just before the rename: it may have become a directory or device meanwhile
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


#: Files that only a colplugin command writes at the top of its output directory; ``--overwrite``
#: replaces a directory only if it holds one of them (never a directory of the user's own files).
RESULT_FILES = frozenset({
    "params.json", "report.md", "checkpoint.pt", "network.json", "metrics.json", "rates.json", "twin.json",
    "calibration.json", "agreement.json", "model.py", "comparison.json", "fixed_points.json", "stimulus.json",
    "train",
})


class OutputInUse(OSError):
    """Another running command holds the output directory."""


class OutputDirectory:
    """An output directory claimed by one command: exclusive, and replaced only on success.

    ``claim()`` takes a lock file beside the directory (``.NAME.lock``, created exclusively:
    of two commands started at once into the same ``--out``, the second is refused while the
    first runs; a lock whose process has died is taken over). A new directory is created; an
    existing one must be empty, unless ``resume`` (continue in place) or ``overwrite``: then the
    command writes into a staging directory beside it (``.NAME.new-PID``) and ``commit()``
    swaps it in, so a failed or interrupted command leaves the earlier result whole and no file
    of the earlier run survives a successful one. ``abort()`` removes what the command made
    (keeping training progress that ``--resume`` can continue) and says what it did.

    Parameters
    ----------
    target : path
        The directory the user named.
    overwrite : bool
        Replace a non-empty directory of an earlier colplugin result.
    resume : bool
        Continue in an existing directory (an interrupted run).
    """

    def __init__(self, target: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.target = self._checked(Path(target))
        self.overwrite, self.resume = overwrite, resume
        self.path = self.target  # where the command writes (a staging directory under --overwrite)
        self._lock: Path | None = None
        self._created: Path | None = None  # the first directory of the target's tree this command made
        self._was_empty = False
        self._scratch: Path | None = None  # another rank's private directory in a shared MPI run

    @staticmethod
    def _checked(path: Path) -> Path:
        text = str(path)
        if not text.strip():
            raise ValueError("--out is empty; give a directory path")
        if "\x00" in text:
            raise ValueError("--out contains a NUL character; give a plain directory path")
        for part in path.parts:
            if len(part.encode()) > 255:
                raise ValueError(f"--out {text[:60]}...: the name {part[:40]}... has {len(part.encode())} bytes; file "
                                 "systems allow at most 255 per name; choose a shorter one")
        try:
            resolved = path.resolve()
            dangling = path.is_symlink() and not path.exists()
        except (RuntimeError, OSError) as exc:  # a symlink loop
            raise ValueError(f"--out {text}: cannot resolve the path ({exc}); choose another directory") from None
        if dangling:
            raise ValueError(f"--out {text} is a symbolic link to {os.readlink(path)}, which does not exist; "
                             "create its target first or choose another directory")
        if resolved.exists() and not resolved.is_dir():
            raise ValueError(f"--out {text} is a file, not a directory; choose a directory path")
        if resolved == Path(resolved.anchor):
            raise ValueError(f"--out {text} is the root of the file system; choose a directory below it")
        return resolved

    # -- claiming -------------------------------------------------------------------------------
    def _lock_path(self) -> Path:
        parent = self.target.parent
        return parent / f".{self.target.name}.lock"

    def _take_lock(self) -> None:
        lock = self._lock_path()
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale(lock):
                    raise OutputInUse(self._in_use_message(lock)) from None
                lock.unlink(missing_ok=True)  # its command died: take the directory over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(record)
            self._lock = lock
            return
        raise OutputInUse(self._in_use_message(lock))

    @staticmethod
    def _holder(lock: Path) -> dict:
        try:
            return json.loads(lock.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, lock: Path) -> bool:
        info = self._holder(lock)
        if not info:  # being written this instant, or unreadable: treat as held unless old
            try:
                return time.time() - lock.stat().st_mtime > 60
            except OSError:
                return True
        if info.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return False

    def _in_use_message(self, lock: Path) -> str:
        info = self._holder(lock)
        who = f"process {info['pid']} on {info.get('host')}" if "pid" in info else "another command"
        return (f"--out {self.target} is in use by {who} (lock {lock}); wait for it to finish or choose another "
                f"--out; if no colplugin command is running, remove {lock}")

    def claim(self) -> Path:
        """Take the directory; return the path the command writes into.

        In a shared MPI run only rank 0 takes it (:func:`colplugin._mpi.writes_files`); the other
        ranks write into a private temporary directory that ``commit`` and ``abort`` remove.
        """
        if not writes_files():
            self.path = self._scratch = Path(tempfile.mkdtemp(prefix="colplugin_rank_"))
            return self.path
        first_new = next((p for p in [*reversed(self.target.parents), self.target] if not p.exists()), None)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._cannot(exc, f"its parent directory {self.target.parent} cannot be created") from None
        try:
            self._take_lock()
        except OutputInUse:
            raise
        except OSError as exc:
            raise self._cannot(exc, f"its lock file {self._lock_path()} cannot be created") from None
        try:
            if first_new is not None and first_new != self.target:
                self._created = first_new
            if not self.target.exists():
                try:
                    self.target.mkdir()
                except OSError as exc:
                    raise self._cannot(exc, "the directory cannot be created") from None
                self._created = self._created or self.target
                return self.path
            if not os.access(self.target, os.W_OK | os.X_OK):
                raise ValueError(f"cannot write into --out {self.target} (permission denied); choose a writable one")
            if self.resume:
                return self.path
            contents = list(self.target.iterdir())
            if not contents:
                self._was_empty = True
                return self.path
            if not self.overwrite:
                raise ValueError(f"{self.target} exists and is not empty; choose another --out, or pass --overwrite "
                                 "(or --resume where supported)")
            self._check_replaceable(contents)
            staging = self.target.parent / f".{self.target.name}.new-{os.getpid()}"
            try:
                if staging.exists():
                    shutil.rmtree(staging)
                staging.mkdir()
            except OSError as exc:
                raise self._cannot(exc, f"its staging directory {staging} cannot be created") from None
            self.path = staging
            return self.path
        except BaseException:
            self._release()
            raise

    def _cannot(self, exc: OSError, what: str) -> ValueError:
        """An OS error of making the output directory, as a refusal naming --out, the reason and the fix."""
        reason = exc.strerror or str(exc)
        return ValueError(f"cannot use --out {self.target}: {what} ({reason}); give --out a directory you can "
                          "write to (e.g. one under your home or working directory)")

    def _check_replaceable(self, contents: list[Path]) -> None:
        home, cwd = Path.home().resolve(), Path.cwd().resolve()
        if self.target in (home, cwd) or self.target in cwd.parents:
            raise ValueError(f"--overwrite would replace {self.target}, which holds the working or home directory; "
                             "choose a directory of its own as --out")
        if not any(p.name in RESULT_FILES for p in contents):
            names = ", ".join(sorted(p.name for p in contents)[:3])
            raise ValueError(f"--overwrite replaces only an earlier colplugin result, and {self.target} holds none "
                             f"(it holds {names}, ...); choose another --out")

    # -- ending ---------------------------------------------------------------------------------
    def shown(self, path: str | Path | None = None) -> Path:
        """``path`` (default: the output directory) as it will be named once the command succeeds."""
        path = Path(self.path if path is None else path)
        try:
            return self.target / path.relative_to(self.path)
        except ValueError:
            return path

    def commit(self) -> None:
        """The command succeeded: swap a staged result in, release the lock."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            return
        try:
            if self.path != self.target:
                old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
                os.replace(self.target, old)
                os.replace(self.path, self.target)
                shutil.rmtree(old, ignore_errors=True)
                self.path = self.target
        finally:
            self._release()

    def abort(self) -> str:
        """The command failed: remove what it made (not resumable progress); return what was done."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            return ""
        try:
            if self.path != self.target:  # --overwrite: the earlier result was never touched
                shutil.rmtree(self.path, ignore_errors=True)
                return f"{self.target} is unchanged (the new result was not kept)"
            keep = self._created or (self.target if self._was_empty else None)
            if keep is None or not keep.exists():
                return ""
            if any(keep.rglob("checkpoint.pt")):
                return f"kept {keep}: it holds training progress; continue it with --resume --out {self.target}"
            if keep == self.target and self._was_empty:  # an empty directory the user made: empty it again
                for p in self.target.iterdir():
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                return f"emptied {self.target} again"
            shutil.rmtree(keep, ignore_errors=True)
            return f"removed {keep}"
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (``MemAvailable`` of /proc/meminfo), if known."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes < float("inf") else "an unbounded amount of memory"


def check_memory(nbytes: float, what: str, fix: str, *, available: int | None = None) -> None:
    """Refuse work whose estimated memory ``nbytes`` exceeds what the machine has, before allocating.

    Raises
    ------
    MemoryError
        Naming the estimate, what needs it, the memory available and ``fix``.
    """
    available = available_memory() if available is None else available
    if available is None:
        return
    if not nbytes < 0.9 * available:  # also refuses inf and nan
        raise MemoryError(f"{what} needs about {_gib(nbytes)}, and this machine has {_gib(available)} available; "
                          f"{fix}")
