"""The fused solve of small dense networks as compiled loops (a C kernel built with cffi).

For a network of a few columns one vector-field evaluation is a few thousand floating-point
operations; the eager fused solver (:mod:`colplugin.solve.fused`) spends most of its time in
the tensor library's per-call overhead instead. ``_fused_kernel.c`` runs the whole solve -
every step, the step-size control, the divergence checks, and the discrete-adjoint backward
pass - as plain loops over the same arithmetic, so a solve costs its arithmetic.

* **What it computes.** The same scheme, step-size rule, stiffness cap, checkpoints and
  backward pass as the eager loop (the module docstring of :mod:`colplugin.solve.fused`),
  on the dense or sparse operators of :meth:`colplugin.field.Field.fused`, in float64 or
  float32 on the CPU. The results agree with the eager loop up to the order of summation (tests:
  states and gradients within 1e-12 relative in float64); an adaptive solve may differ
  where a step is accepted or rejected by a rounding error's margin, which the tests would
  show.
* **When it runs.** :func:`choose` decides per solve: a field on the CPU in float32 or
  float64, dense or sparse (its coupling as a list of entries: intra-column blocks,
  inter-column edges, rate terms), when the kernel builds: a sparse field of at least
  :data:`SPARSE_LANES_MIN` trials at any size, otherwise where the per-stage coupling
  product takes at most :data:`MAX_WORK` multiply-adds, :data:`MAX_WORK_GRAD` for a solve
  that will be differentiated (beyond, the eager loop's vectorised library calls are as
  fast or faster).
  With the kernel, fields of more than :data:`KERNEL_DENSE_MAX_POPULATIONS` populations couple
  sparsely by default (:func:`default_dense`). ``Solver(kernel=...)`` forces either
  path; the environment variable ``COLPLUGIN_KERNEL=eager`` turns the kernel off
  everywhere.
* **Trials in lanes, chunks on threads.** The kernel holds the trials in chunks of 8,
  trial-innermost, so that its products vectorise over the trials and a chunk's stages stay
  in cache; an attempted step runs chunk by chunk, and the backward pass runs each chunk
  back through all steps. The chunks are shared between ``torch.get_num_threads()``
  threads where a step's work is large enough (8 or more trials, 16,384 or more
  trial-populations); sums over chunks are taken in chunk order, so the numbers do not
  depend on the number of threads.
* **Building.** The first solve that uses it compiles the kernel with cffi and the system C
  compiler (about half a minute: two precisions, three CPU variants; a line on stderr says
  so) into a cache directory, ``$COLPLUGIN_CACHE_DIR`` or ``~/.cache/colplugin``, under a
  name that carries a hash of the source, so a changed kernel is rebuilt and every later
  process loads the built one. Without a compiler (or without write access anywhere) a
  warning says so once and the eager loop runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..field import FusedOperators, SparseFusedOperators
from ..transfers import use_fast_dmf
from .tableaus import TABLEAUS, StepSizeUnderflow

__all__ = ["MAX_WORK", "MAX_WORK_GRAD", "SPARSE_LANES_MIN", "KERNEL_DENSE_MAX_POPULATIONS", "KERNELS",
           "kernel_available", "needs_grad", "choose", "default_dense", "compiled_solve", "sparse_coupling"]

#: Largest number of multiply-adds in one stage's coupling product (trials times the
#: coupling's entries: P x 2P dense, or the listed connections of a sparse field) for which
#: ``kernel="auto"`` runs a forward-only solve in the compiled loops, except for sparse
#: fields of at least :data:`SPARSE_LANES_MIN` trials, which always run there. Below it the
#: eager loop's cost is per-call overhead, which the kernel removes (3-10x faster); above it
#: the eager loop's vectorised library calls are as fast or faster for one trial (3,000 and
#: 10,000 columns at batch 1: the eager forward 1.4-1.7x faster) and for dense fields
#: (BLAS: 5 columns at batch 256 and 1,024, eager 1.5x faster; ``benchmarks/bench_kernel.py``).
MAX_WORK = 2 ** 17
#: The same limit for solves that will be differentiated: the kernel's backward pass is the
#: faster one (forward + backward: digits, 100 hidden columns at batch 64, 2.0x; 3,000 and
#: 10,000 columns at batch 1, within 20 % of the eager loop).
MAX_WORK_GRAD = 2 ** 21
#: From this many trials a sparse field runs in the compiled kernel at any size: the kernel
#: holds up to 8 trials side by side in lanes (its products vectorise over them, and a chunk
#: of trials stays in cache), and shares the chunks between torch's intra-op threads.
#: Measured with the vectorised kernel, forward (forward + backward), one thread, 0.05 s of
#: model time, eager loop time over kernel time: 2 trials, 1,000 / 3,000 / 10,000 columns:
#: 1.27 / 1.12 / 1.27 (1.37 / 1.16 / 1.28); 3 trials: 1.62 / 1.35 / 1.16 (1.80 / 2.01 / 1.70);
#: 4 trials at 1,000 and 3,000: 1.70 / 1.57 (1.66 / 2.63). With one trial the eager loop's
#: vectorised calls are as fast or faster at these sizes (0.83-0.96 forward), so one trial
#: keeps the work limits above.
SPARSE_LANES_MIN = 2
#: With the compiled kernel, networks of at most this many populations (4 columns) couple
#: densely by default (``Solver(dense=None)``), larger ones sparsely: the kernel's sparse loop
#: touches only the connections and overtakes its dense loop between 3 and 4 columns
#: (``benchmarks/bench_kernel.py``). The eager loop's own crossover is
#: :data:`colplugin.field.DENSE_MAX_POPULATIONS`.
KERNEL_DENSE_MAX_POPULATIONS = 32
#: What ``Solver(kernel=...)`` accepts: ``"auto"`` (compiled where it applies and is faster,
#: see :func:`choose`), ``"compiled"`` (required: an error where it cannot run) or ``"eager"``.
KERNELS = ("auto", "compiled", "eager")

_ENV = "COLPLUGIN_KERNEL"
_STATUS = {0: "ok", 1: "stopped", 2: "underflow", 3: "out of memory"}
_TYPES = {torch.float64: ("double", "_f64"), torch.float32: ("float", "_f32")}

_CDEF_TYPE = """
typedef struct {{
    int B, P, Bd, K;
    int s, s_sol, adaptive, order;
    const {R} *A;
    const {R} *bw;
    const {R} *ew;
    {R} m, db;
    const {R} *Wg;
    const {R} *WgT;
    const {R} *c;
    const {R} *drive;
    double a, b, d;
    int sparse;
    const int *row_ptr;
    const int *col;
    const {R} *val;
    int threads;
    const {R} *sat;
    const {R} *Q;
    ...;
}} fk_model{S};

typedef struct {{
    int status;
    double t_fail;
    long attempts;
    long n_steps;
    long n_ck;
    long M;
    int stages_kept;
    ...;
}} fk_solve{S};

fk_solve{S} *fk_forward{S}(const fk_model{S} *md, const {R} *y0, int n_stops, const double *stops,
                          const int *seg_of, const int *out_of_stop, {R} *out, long *landed, double step,
                          double rtol, double atol, int watch_every, void *watch, int keep, long every,
                          double budget, int n_dense, const double *t_dense, const int *row_dense,
                          long *step_dense, double *theta_dense);
int fk_backward{S}(const fk_model{S} *md, const fk_solve{S} *sv, const {R} *grad_out, const long *inj_ptr,
                   const long *inj_idx, const long *dptr, const long *didx, const double *dth, {R} *lam,
                   {R} *gWg, {R} *gdrive);
void fk_free{S}(fk_solve{S} *sv);
void fk_dmf_rates{S}(const {R} *V, const {R} *A, long rows, int P, long stride, double a, double b, double d,
                     {R} *out);
typedef struct {{
    int n, C, s;
    const {R} *Wcol;
    const {R} *a;
    const {R} *cc;
    const {R} *m;
    const {R} *e;
    double gamma;
}} fk_ros{S};
size_t fk_ros_work{S}(const fk_model{S} *md, const fk_ros{S} *rs, int threads);
int fk_ros_step{S}(const fk_model{S} *md, const fk_ros{S} *rs, {R} *work, const {R} *y, double h, int seg,
                   int fresh, {R} *F0, {R} *w0, {R} *g0, {R} *yn, int want_end, {R} *Fn, {R} *wn, {R} *gn,
                   double rtol, double atol, double *sq);
int fk_ros_adjoint{S}(const fk_model{S} *md, const fk_ros{S} *rs, {R} *work, const {R} *y, double h, int seg,
                      const {R} *lam, {R} *lam_out, const {R} *extra0, const {R} *qe, {R} *gW, {R} *gWcol,
                      {R} *gdrive);
"""
_CDEF = ('extern "Python" int fk_watch(void *, double, double);\n'
         'void fk_expm1_array(const double *x, double *out, long n);\n'
         + "".join(_CDEF_TYPE.format(R=r, S=s) for r, s in _TYPES.values()))
_FLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-Wno-psabi", "-pthread"]


#: An exception that escaped the watch callback (cffi passes it to ``onerror``), re-raised after the solve.
_ESCAPED: list = [None]


def _escaped(exc_type, exc_value, tb) -> int:
    """cffi's ``onerror`` of the watch callback: keep an exception raised outside its ``try``.

    A signal handler that raises (the CLI turns SIGTERM and SIGINT into exceptions) can run
    as the callback is entered; cffi would print and drop that exception. It is kept here
    and re-raised once the C loop has returned; the callback's return value 1 stops the loop.
    """
    _ESCAPED[0] = exc_value
    return 1


def _source() -> str:
    body = resources.files("colplugin.solve").joinpath("_fused_kernel.c").read_text()
    parts = []
    for r, s in _TYPES.values():
        parts += [f"#define REAL {r}", f"#define FK_SFX {s}", body, "#undef REAL", "#undef FK_SFX"]
    return "\n".join(parts)


def _cache_dirs() -> list[Path]:
    env = os.environ.get("COLPLUGIN_CACHE_DIR")
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = [Path(env)] if env else []
    base.append((Path(xdg) if xdg else Path.home() / ".cache") / "colplugin")
    base.append(Path(tempfile.gettempdir()) / f"colplugin-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    return base


def _build(name: str, source: str) -> Path:
    """Compile the kernel (cffi, API mode) into the first writable cache directory; its path."""
    import cffi

    errors = []
    for d in _cache_dirs():
        d = d / "kernels"
        target = d / (name + importlib.machinery.EXTENSION_SUFFIXES[0])
        if target.exists():
            return target
        try:
            d.mkdir(parents=True, exist_ok=True)
            print(f"colplugin: compiling the solver kernel into {d} (once per installation, about half a "
                  "minute)", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(dir=d) as tmp:
                ffi = cffi.FFI()
                ffi.cdef(_CDEF)
                ffi.set_source(name, source, extra_compile_args=_FLAGS, extra_link_args=["-pthread"], libraries=["m"])
                built = ffi.compile(tmpdir=tmp, verbose=False)
                os.replace(built, target)  # atomic: another process may be building the same
            return target
        except OSError as exc:  # not writable: try the next place
            errors.append(f"{d}: {exc}")
    raise OSError("no writable cache directory for the compiled kernel: " + "; ".join(errors))


_LOCK = threading.Lock()


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@functools.lru_cache(maxsize=1)
def _module() -> tuple[Any, str]:
    """(the loaded kernel module or None, why not).

    Built on first use, under a lock (cffi's build changes the working directory while it
    compiles). A cached file that does not load (truncated, or built against another C
    library) is removed and rebuilt once.
    """
    setting = os.environ.get(_ENV, "").strip().lower()
    if setting == "eager":
        return None, f"{_ENV}=eager is set"
    if setting not in ("", "compiled", "auto"):
        raise ValueError(f"{_ENV}={os.environ[_ENV]!r} is not a kernel setting; set it to 'eager' (never compile "
                         "the solver kernel) or unset it (compile it where a C compiler is available)")
    try:
        with _LOCK:
            source = _source()
            digest = hashlib.sha256((source + _CDEF + " ".join(_FLAGS)).encode()).hexdigest()[:16]
            name = f"_colplugin_fk_{digest}"
            path = _build(name, source)
            try:
                mod = _load(name, path)
            except Exception:  # a stale or broken cached build: rebuild it once
                path.unlink(missing_ok=True)
                mod = _load(name, _build(name, source))
    except Exception as exc:  # no cffi, no compiler, no writable directory, a broken build
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        warnings.warn(f"colplugin could not build or load its compiled solver kernel ({reason}); the eager "
                      "fused loop runs instead (same numbers, slower for small networks). Check that a C "
                      "compiler (gcc or clang), the Python headers and cffi are installed, or set "
                      f"{_ENV}=eager to silence this", RuntimeWarning, stacklevel=4)
        return None, reason

    @mod.ffi.def_extern(name="fk_watch", onerror=_escaped)
    def _watch(handle, t, x):  # the divergence check; an exception is kept and re-raised after the solve
        box = mod.ffi.from_handle(handle)
        try:
            box[0](t, torch.tensor(x, dtype=torch.float64), box[1])
        except BaseException as exc:  # noqa: B036 - re-raised by the caller once the C loop has returned
            box[2] = exc
            return 1
        return 0

    return mod, ""


def _row_stride(x: torch.Tensor) -> int | None:
    """The stride between consecutive rows of x viewed as (rows, last dimension), or None where the rows
    are not evenly spaced or the last dimension is not contiguous."""
    if x.dim() == 0 or x.stride(-1) != 1:
        return None
    if x.dim() == 1:
        return x.shape[0]
    for i in range(x.dim() - 2):
        if x.shape[i] > 1 and x.stride(i) != x.shape[i + 1] * x.stride(i + 1):
            return None
    return x.stride(-2)


def dmf_rates(V: torch.Tensor, A: torch.Tensor | None, a: float, b: float, d: float) -> torch.Tensor | None:
    """The DMF's f(V - A) (Hz) of a recorded trajectory in the compiled kernel, or None where it does not apply.

    For large CPU tensors of float32 or float64 that do not need autograd (the kernel's loop
    vectorises the exponential: several times faster than elementwise tensor operations),
    wherever the kernel builds (so that the numbers do not depend on what ran before in the
    process; they agree with the tensor formula to a few ulp). ``V`` and ``A`` (mV; None:
    f(V)) must be views of the same layout, evenly spaced rows of a contiguous last dimension,
    such as ``state[..., :P]`` and ``state[..., P:2 * P]``.
    """
    if (V.device.type != "cpu" or V.dtype not in _TYPES or V.numel() < 2 ** 16
            or (torch.is_grad_enabled() and V.requires_grad)):
        return None
    if A is not None and (A.shape != V.shape or A.dtype != V.dtype or A.stride() != V.stride()
                          or (torch.is_grad_enabled() and A.requires_grad)):
        return None
    stride = _row_stride(V)
    mod, _ = _module()
    if stride is None or mod is None:
        return None
    real, sfx = _TYPES[V.dtype]
    P = V.shape[-1]
    out = torch.empty(V.shape, dtype=V.dtype)
    ffi = mod.ffi
    v_ptr = ffi.cast(real + " *", V.data_ptr())
    a_ptr = ffi.NULL if A is None else ffi.cast(real + " *", A.data_ptr())
    getattr(mod.lib, f"fk_dmf_rates{sfx}")(v_ptr, a_ptr, V.numel() // max(P, 1), P, stride, float(a), float(b),
                                            float(d), _ptr(ffi, out, real))
    return out


use_fast_dmf(dmf_rates)


def kernel_available() -> tuple[bool, str]:
    """Whether the compiled kernel is built and loaded; if not, why not (built on first call)."""
    mod, why = _module()
    return mod is not None, why


def needs_grad(ops: Any, y0: torch.Tensor) -> bool:
    """Whether a solve of ``ops`` from ``y0`` will record for a backward pass."""
    return torch.is_grad_enabled() and (y0.requires_grad or ops.drive.requires_grad
                                        or any(p.requires_grad for p in ops.params))


def choose(kernel: str, ops: Any, y0: torch.Tensor) -> bool:
    """Whether a fused solve of ``ops`` from ``y0`` runs in the compiled kernel.

    ``"auto"``: a dense or sparse field (with or without a saturation ``r_max``) on the CPU in
    float32 or float64, when the kernel builds: a sparse field of at least
    :data:`SPARSE_LANES_MIN` trials, or one whose coupling product takes at most
    :data:`MAX_WORK` multiply-adds per stage (all trials), or
    :data:`MAX_WORK_GRAD` where the solve will be differentiated (:func:`needs_grad`).
    ``"compiled"``: the same conditions except the size, else
    :class:`ValueError` naming what stands in the way. ``"eager"``: never.

    Raises
    ------
    ValueError
        For an unknown ``kernel``, or ``"compiled"`` where it cannot run.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if kernel == "eager":
        return False
    why = None
    if not isinstance(ops, (FusedOperators, SparseFusedOperators)):
        why = f"the field's operators are {type(ops).__name__}, which the kernel does not know"
    elif y0.device.type != "cpu":
        why = f"the tensors are on {y0.device} (the kernel runs on the CPU; use kernel='eager' on GPUs)"
    elif y0.dtype not in _TYPES:
        why = f"the dtype is {y0.dtype} (the kernel computes in float32 or float64)"
    if why is None:
        ok, reason = kernel_available()
        if not ok:
            why = f"the kernel could not be built ({reason})"
    if why is not None:
        if kernel == "compiled":
            raise ValueError(f"Solver(kernel='compiled') cannot run here: {why}")
        return False
    if kernel == "compiled" or (isinstance(ops, SparseFusedOperators) and y0.shape[0] >= SPARSE_LANES_MIN):
        return True
    limit = MAX_WORK_GRAD if needs_grad(ops, y0) else MAX_WORK
    return y0.shape[0] * _work(ops) <= limit


def default_dense(kernel: str, n_populations: int, device: torch.device, dtype: torch.dtype) -> bool | None:
    """The fused solver's default coupling form where the compiled kernel will run it.

    ``True``/``False`` (dense up to :data:`KERNEL_DENSE_MAX_POPULATIONS` populations) for a CPU
    solve in float32/float64 with ``kernel`` ``"auto"`` or ``"compiled"`` and a kernel that
    builds; None (the field's own default) otherwise.
    """
    if kernel == "eager" or torch.device(device).type != "cpu" or dtype not in _TYPES:
        return None
    if not kernel_available()[0]:
        return None
    return n_populations <= KERNEL_DENSE_MAX_POPULATIONS


def _work(ops: Any) -> int:
    """Multiply-adds of one stage's coupling product per trial: P x 2P dense, or the entries."""
    if isinstance(ops, FusedOperators):
        return 2 * ops.P ** 2
    n_blocks = sum(m for _, m in ops.layout) * ops.n ** 2 * sum(x is not None for x in ops.blocks)
    n_edges = 0 if ops.src is None else ops.src.numel() * sum(w is not None for w in ops.w_edges)
    return n_blocks + n_edges + ops.P * sum(r is not None for r in ops.rates)


def sparse_coupling(ops: SparseFusedOperators) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """The coupling of a sparse field as compressed rows: (row_ptr (P + 1), col (nnz), values (nnz)).

    Row p lists the targets (columns 0..2P-1: V then A) that population p's g drives: its
    column's intra-column block entries, its inter-column edges and its rate terms. The
    values are a differentiable function of :attr:`SparseFusedOperators.params`, so
    autograd carries their cotangents back to the blocks, edge weights and rates.
    """
    P, n = ops.P, ops.n
    dev = ops.c.device
    srcs, tgts, vals = [], [], []
    ar = torch.arange(n, device=dev)
    for v in (0, 1):
        blk = ops.blocks[v]
        if blk is not None:
            for i, (f, m) in enumerate(ops.layout):
                base = f + n * torch.arange(m, device=dev).view(m, 1, 1)
                srcs.append((base + ar.view(1, n, 1)).expand(m, n, n).reshape(-1))
                tgts.append((v * P + base + ar.view(1, 1, n)).expand(m, n, n).reshape(-1))
                vals.append(blk[i].unsqueeze(0).expand(m, n, n).reshape(-1))
        if ops.src is not None and ops.w_edges[v] is not None:
            srcs.append(ops.src)
            tgts.append(v * P + ops.tgt)
            vals.append(ops.w_edges[v])
        if ops.rates[v] is not None:
            srcs.append(torch.arange(P, device=dev))
            tgts.append(v * P + torch.arange(P, device=dev))
            vals.append(ops.rates[v].expand(P))
    if not srcs:
        return np.zeros(P + 1, dtype=np.intc), np.zeros(0, dtype=np.intc), ops.c.new_zeros(0)
    src, tgt = torch.cat(srcs), torch.cat(tgts)
    if src.numel() >= 2 ** 31 - 1 or 2 * P >= 2 ** 31 - 1:
        raise ValueError(f"the field has {src.numel()} connections, more than the compiled kernel's 32-bit "
                         "indices hold; use Solver(kernel='eager')")
    order = torch.argsort(src * (2 * P) + tgt, stable=True)
    values = torch.cat(vals).index_select(0, order)
    row_ptr = np.zeros(P + 1, dtype=np.intc)
    np.cumsum(np.bincount(src.cpu().numpy(), minlength=P), out=row_ptr[1:])
    return row_ptr, tgt[order].cpu().numpy().astype(np.intc), values


def _ptr(ffi, t: torch.Tensor | np.ndarray | None, ctype: str):
    if t is None:
        return ffi.NULL
    address = t.data_ptr() if isinstance(t, torch.Tensor) else t.ctypes.data
    return ffi.cast(ctype + " *", address)


@functools.lru_cache(maxsize=None)
def _scheme_arrays(method: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The scheme's stage matrix, solution weights, error weights (zeros for fixed-step
    schemes) and dense output (s x 4, or None), built once per method and dtype (read-only:
    the kernel only reads them)."""
    tab = TABLEAUS[method]
    err = tab.b_err if tab.b_err is not None else (0.0,) * tab.stages
    Q = None if tab.interpolant is None else torch.tensor(tab.interpolant, dtype=dtype).contiguous()
    return (torch.tensor(tab.stage_matrix, dtype=dtype), torch.tensor(tab.b, dtype=dtype),
            torch.tensor(err, dtype=dtype), Q)


def _kernel_model(ffi, ops: Any, method: str, y0: torch.Tensor, drive: torch.Tensor, coupling: torch.Tensor,
                  row_ptr: np.ndarray | None, col: np.ndarray | None) -> tuple[Any, tuple]:
    """The kernel's model struct (``fk_model``) of a solve: sizes, scheme, field constants and array pointers.

    Parameters
    ----------
    ops : FusedOperators or SparseFusedOperators
    method : str
        The Runge-Kutta scheme.
    y0 : torch.Tensor, shape (B, 2P)
        Initial state (mV); sets the trials and the precision.
    drive : torch.Tensor, shape (B or 1, K, 2P)
        The field's constant drive per stimulus segment, mV/s.
    coupling : torch.Tensor
        Dense coupling (P, 2P), or the sparse coupling's values (nnz) with ``row_ptr`` and
        ``col`` (:func:`sparse_coupling`; None for a dense field).

    Returns
    -------
    md : cdata
        The struct.
    keep : tuple
        ``md`` and every array it points into (scheme arrays, contiguous coupling, its
        transpose, c, drive, row_ptr, col, saturation), to be kept alive as long as ``md`` is used.
    """
    real, sfx = _TYPES[y0.dtype]
    tab = TABLEAUS[method]
    dt = y0.dtype
    A, bw, ew, Q = _scheme_arrays(method, dt)
    sparse = row_ptr is not None
    Wg_c = coupling.detach().contiguous()
    WgT = Wg_c if sparse else Wg_c.T.contiguous()
    c = ops.c.detach().contiguous()
    drive_c = drive.detach().contiguous()
    md = ffi.new(f"fk_model{sfx} *")
    md.B, md.P, md.Bd, md.K = y0.shape[0], ops.P, drive_c.shape[0], drive_c.shape[1]
    md.s, md.s_sol, md.adaptive, md.order = tab.stages, tab.solution_stages, int(tab.b_err is not None), tab.order
    md.A, md.bw, md.ew, md.Q = _ptr(ffi, A, real), _ptr(ffi, bw, real), _ptr(ffi, ew, real), _ptr(ffi, Q, real)
    md.m, md.db = float(-ops.d * ops.a), float(ops.db)
    md.Wg, md.WgT, md.c, md.drive = (_ptr(ffi, Wg_c, real), _ptr(ffi, WgT, real), _ptr(ffi, c, real),
                                     _ptr(ffi, drive_c, real))
    md.a, md.b, md.d = float(ops.a), float(ops.b), float(ops.d)
    md.sparse = int(sparse)
    md.threads = torch.get_num_threads()
    if sparse:
        md.row_ptr, md.col, md.val = _ptr(ffi, row_ptr, "int"), _ptr(ffi, col, "int"), _ptr(ffi, Wg_c, real)
    sat = None if getattr(ops, "sat", None) is None else ops.sat.detach().to(dt).contiguous()
    md.sat = _ptr(ffi, sat, real)
    return md, (md, A, bw, ew, Q, Wg_c, WgT, c, drive_c, row_ptr, col, sat)


def _first_rows(out_idx: Sequence[int], n_stops: int) -> tuple[np.ndarray, dict[int, int]]:
    """The kernel's output row of every stop (the first of ``out_idx`` that names it; -1: none) and
    ``{stop: that row}``."""
    out_of_stop = np.full(n_stops, -1, dtype=np.intc)
    first_at: dict[int, int] = {}
    for j, n in enumerate(out_idx):
        if n >= 0 and n not in first_at:
            first_at[n] = j
            out_of_stop[n] = j
    return out_of_stop, first_at


def _raise_failure(status: int, t_fail: float, box: list) -> None:
    """Raise what stopped a compiled solve of ``status`` (nonzero; failed at t_fail, s).

    The exception a watch callback raised (kept in ``box[2]``) comes first; then a step-size
    underflow (2), running out of memory (3) or any other stop.
    """
    exc, box[2] = box[2], None  # no reference cycle through the traceback
    if exc is not None:
        raise exc
    if status == 2:
        raise StepSizeUnderflow(f"step size underflow at t = {t_fail:.6g} s")
    if status == 3:
        raise MemoryError("the compiled fused solve ran out of memory recording its steps; pass "
                          "Solver(checkpoint_every=M) or a shorter simulation")
    raise RuntimeError(f"the compiled fused solve stopped: {_STATUS.get(status, status)}")


def _fill_other_rows(out: torch.Tensor, out_idx: Sequence[int], first_at: dict[int, int],
                     y0: torch.Tensor) -> None:
    """Fill the output rows the kernel does not write: those at stop 0 (``y0``, mV) and repeats of a stop."""
    for j, n in enumerate(out_idx):
        if n < 0:  # interpolated by the kernel
            continue
        if n == 0:
            out[j] = y0
        elif j != first_at[n]:
            out[j] = out[first_at[n]]


def _injection_rows(out_idx: Sequence[int], landed: np.ndarray, n_steps: int,
                    long_t: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The output rows by the number of accepted steps before their stop (``landed``), as CSR over
    j = 0..n_steps: (pointers (n_steps + 2), row indices) for the backward pass."""
    counts = np.zeros(n_steps + 2, dtype=long_t)
    idx = []
    landing = [(j, n) for j, n in enumerate(out_idx) if n >= 0]
    for j, n in sorted(landing, key=lambda jn: int(landed[jn[1]])):
        counts[int(landed[n]) + 1] += 1
        idx.append(j)
    return np.cumsum(counts).astype(long_t), np.asarray(idx if idx else [0], dtype=long_t)


def _dense_rows_by_step(n_dense: int, rows: np.ndarray, steps: np.ndarray, thetas: np.ndarray, n_steps: int,
                        long_t: np.dtype) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The interpolated output rows by the accepted step they lie in, as CSR over steps: (pointers
    (n_steps + 1), rows, thetas) for the backward pass; (None, None, None) without any."""
    if not n_dense:
        return None, None, None
    order = np.argsort(steps[:n_dense], kind="stable")
    counts = np.bincount(steps[:n_dense], minlength=n_steps)[:n_steps]
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(long_t)
    return (ptr, np.ascontiguousarray(rows[:n_dense][order], dtype=long_t),
            np.ascontiguousarray(thetas[:n_dense][order], dtype=np.float64))


class _CompiledSolve(torch.autograd.Function):
    """The compiled kernel's forward solve; backward = its discrete adjoint (see fused.py)."""

    @staticmethod
    def forward(ctx, y0, drive, ops, stops, seg, out_idx, method, watch, opts, coupling, row_ptr, col):
        mod, _ = _module()
        ffi, lib = mod.ffi, mod.lib
        real, sfx = _TYPES[y0.dtype]
        tab = TABLEAUS[method]
        B, P = y0.shape[0], ops.P
        md, keep_alive = _kernel_model(ffi, ops, method, y0, drive, coupling, row_ptr, col)
        y0_c = y0.detach().contiguous()

        n_stops = len(stops)
        long_t = np.dtype(f"i{ffi.sizeof('long')}")
        stops_a = np.ascontiguousarray(stops, dtype=np.float64)
        seg_a = np.ascontiguousarray(seg, dtype=np.intc)
        out_of_stop, first_at = _first_rows(out_idx, n_stops)
        out = torch.empty((len(out_idx), B, 2 * P), dtype=y0.dtype)
        landed = np.zeros(n_stops, dtype=long_t)
        dense = opts.get("dense_rows", ())  # (time, row) of the interpolated outputs, by time
        t_dense = np.ascontiguousarray([t for t, _ in dense] or [0.0], dtype=np.float64)
        row_dense = np.ascontiguousarray([j for _, j in dense] or [0], dtype=np.intc)
        step_dense = np.zeros(len(t_dense), dtype=long_t)
        theta_dense = np.zeros(len(t_dense), dtype=np.float64)
        keep = any(ctx.needs_input_grad)
        every = opts.get("checkpoint_every")
        box = [watch, opts["watch_every"], None]
        handle = ffi.new_handle(box)
        sv = getattr(lib, f"fk_forward{sfx}")(
            md, _ptr(ffi, y0_c, real), n_stops, _ptr(ffi, stops_a, "double"), _ptr(ffi, seg_a, "int"),
            _ptr(ffi, out_of_stop, "int"), _ptr(ffi, out, real), _ptr(ffi, landed, "long"), float(opts["step"]),
            float(opts["rtol"]), float(opts["atol"]), int(opts["watch_every"]), handle, int(keep),
            -1 if every is None else int(every), float(opts["keep_all_bytes"]), len(dense),
            _ptr(ffi, t_dense, "double"), _ptr(ffi, row_dense, "int"), _ptr(ffi, step_dense, "long"),
            _ptr(ffi, theta_dense, "double"))
        if sv == ffi.NULL:
            raise MemoryError("the compiled fused solve could not allocate its workspace")
        sv = ffi.gc(sv, getattr(lib, f"fk_free{sfx}"))
        opts["nfe"] = int(sv.attempts) * (tab.stages - 1 if tab.fsal else tab.stages)
        status, t_fail = sv.status, sv.t_fail
        if status != 0 or not keep:
            ffi.release(sv)  # nothing to keep: free the records now
        escaped, _ESCAPED[0] = _ESCAPED[0], None
        if escaped is not None:  # e.g. KeyboardInterrupt or SIGTERM raised as the callback was entered
            raise escaped
        if status != 0:
            _raise_failure(status, t_fail, box)
        _fill_other_rows(out, out_idx, first_at, y0_c)
        if not keep:
            opts["checkpoint_used"] = None
            return out
        opts["checkpoint_used"] = 0 if sv.stages_kept else int(sv.M)
        # output rows landed after j accepted steps, CSR over j = 0..n_steps
        ctx.inj_ptr, ctx.inj_idx = _injection_rows(out_idx, landed, int(sv.n_steps), long_t)
        ctx.dense = _dense_rows_by_step(len(dense), row_dense, step_dense, theta_dense, int(sv.n_steps), long_t)
        ctx.keep = keep_alive
        # the C records live as long as this saved tensor: autograd frees it after the backward
        # pass (unless the graph is retained), as it frees the eager loop's saved stages
        ctx.save_for_backward(torch.frombuffer(ffi.buffer(sv, 1), dtype=torch.uint8))
        ctx.sv_addr = int(ffi.cast("uintptr_t", sv))
        ctx.ffi, ctx.lib, ctx.real, ctx.sfx = ffi, lib, real, sfx
        ctx.drive_shape, ctx.B, ctx.P, ctx.coupling_shape = tuple(drive.shape), B, P, tuple(coupling.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: second derivatives are not computed
            raise RuntimeError("the fused solver's backward pass is not differentiable (no second derivatives, "
                               "create_graph=True); use Solver(backend='torchdiffeq') for higher derivatives")
        ffi, lib, real, sfx = ctx.ffi, ctx.lib, ctx.real, ctx.sfx
        ctx.saved_tensors  # noqa: B018 - raises if the records were freed (a second backward without retain_graph)
        sv = ffi.cast(f"fk_solve{sfx} *", ctx.sv_addr)
        md = ctx.keep[0]
        md.threads = torch.get_num_threads()  # the backward's own setting
        dt = grad_out.dtype
        g = grad_out.detach().contiguous().cpu()
        lam = torch.zeros(ctx.B, 2 * ctx.P, dtype=dt)
        need_y0, need_drive, need_Wg = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[9]
        gWg = torch.zeros(ctx.coupling_shape, dtype=dt) if need_Wg else None
        gdrive = torch.zeros(ctx.drive_shape, dtype=dt) if need_drive else None
        dptr, didx, dth = ctx.dense
        rc = getattr(lib, f"fk_backward{sfx}")(md, sv, _ptr(ffi, g, real), _ptr(ffi, ctx.inj_ptr, "long"),
                                               _ptr(ffi, ctx.inj_idx, "long"), _ptr(ffi, dptr, "long"),
                                               _ptr(ffi, didx, "long"), _ptr(ffi, dth, "double"), _ptr(ffi, lam, real),
                                               _ptr(ffi, gWg, real), _ptr(ffi, gdrive, real))
        if rc != 0:
            raise MemoryError("the compiled fused solve's backward pass could not allocate its workspace")
        return (lam if need_y0 else None, gdrive, None, None, None, None, None, None, None, gWg, None, None)


def compiled_solve(ops: FusedOperators | SparseFusedOperators, y0: torch.Tensor, stops: Sequence[float],
                   seg: Sequence[int], out_idx: Sequence[int], method: str,
                   watch: Callable[[float, torch.Tensor, int], None], opts: dict) -> torch.Tensor:
    """States at the output stops, as :func:`colplugin.solve.fused.fused_solve` computes them.

    ``watch(t, x, steps)`` receives the largest x = V - A (mV) of a recent stage over the
    populations without a saturation (a 0-d tensor; NaN if any state is NaN, -inf if every
    population saturates). ``opts`` holds ``rtol``, ``atol``, ``step``, ``watch_every``,
    ``checkpoint_every`` and ``keep_all_bytes`` (the automatic checkpointing's budget) and
    receives ``nfe`` and ``checkpoint_used``.
    """
    if isinstance(ops, SparseFusedOperators):
        row_ptr, col, values = sparse_coupling(ops)
        return _CompiledSolve.apply(y0, ops.drive, ops, list(stops), list(seg), list(out_idx), method, watch, opts,
                                    values, row_ptr, col)
    return _CompiledSolve.apply(y0, ops.drive, ops, list(stops), list(seg), list(out_idx), method, watch, opts,
                                ops.Wg, None, None)
