"""Fast CPU matmuls for MLX on Linux: route MLX's three BLAS calls to numpy's OpenBLAS.

The Linux `mlx[cpu]` wheel links a bundled reference (netlib) BLAS: single-threaded, unblocked,
about 2 GFLOP/s for float32 GEMM on the machines we test on, so a 135M model generates ~4
tokens/s. MLX calls exactly three BLAS functions (`cblas_sgemm`, `cblas_dgemm`,
`cblas_cgemm`; check with `nm -D --undefined-only libmlx.so`). The numpy wheel already
ships an optimized OpenBLAS, but with 64-bit integers and prefixed names
(`scipy_cblas_sgemm64_`). We compile a shim of a few lines that exports the three standard
names with 32-bit integers and forwards to it, and load the shim with RTLD_GLOBAL *before*
`mlx.core` is imported: the dynamic linker searches the global scope before a dlopen'ed
library's own dependencies, so MLX's GEMMs then run on OpenBLAS (measured 30-70x faster GEMM,
~12x faster batched generation; benchmarks/bench_blas.py).

`NOTME_BLAS` controls it:
  auto (default)   build (once, cached under $NOTME_HOME/blas) and load the shim on Linux
  off              keep the wheel's reference BLAS
  /path/lib.so     load this library instead (it must export `cblas_sgemm` with 32-bit ints,
                   e.g. Debian's libopenblas0: /usr/lib/x86_64-linux-gnu/libopenblas.so.0)

Only the CPU backend needs it: with an MLX CUDA build installed (`mlx[cuda]`: an `mlx-cuda-*`
distribution) `auto` leaves MLX alone, its GEMMs run on the GPU (a path in NOTME_BLAS still
loads). It never makes an import fail: without a C compiler or numpy's OpenBLAS, or when `mlx.core` was
imported first, MLX keeps its reference BLAS and `status()` says why. macOS is untouched (MLX
uses Accelerate and Metal there). OpenBLAS threads follow OPENBLAS_NUM_THREADS; when unset in a
process launched by `mlx.launch` (MLX_RANK set), it becomes cores / ranks-on-this-host, so local
multi-process runs do not oversubscribe the cores. OPENBLAS_THREAD_TIMEOUT defaults to 14 (idle
OpenBLAS workers sleep after ~7 us instead of spinning ~0.1 s; see `THREAD_TIMEOUT`).

`flush_subnormals()` (called by `notme_mlx/__init__` before `enable()`) sets flush-to-zero and
denormals-are-zero on x86-64 Linux for the importing thread and the threads started after it;
`NOTME_FTZ=off` keeps IEEE subnormals.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from .io import notme_home

_STATE: dict = {"active": False, "library": None, "reason": "not attempted", "flush_subnormals": False}
_HANDLES: list = []  # keep loaded libraries alive

# cblas enums are ints; dimensions/strides are int in the standard interface, int64 in the target.
_SHIM = r"""
#include <stdint.h>
typedef int64_t bi;
extern void {p}sgemm{s}(int, int, int, bi, bi, bi, float, const float*, bi, const float*, bi,
                          float, float*, bi);
extern void {p}dgemm{s}(int, int, int, bi, bi, bi, double, const double*, bi, const double*, bi,
                          double, double*, bi);
extern void {p}cgemm{s}(int, int, int, bi, bi, bi, const void*, const void*, bi, const void*, bi,
                          const void*, void*, bi);
void cblas_sgemm(int o, int ta, int tb, int m, int n, int k, float al, const float* a, int lda,
                 const float* b, int ldb, float be, float* c, int ldc)
{{ {p}sgemm{s}(o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc); }}
void cblas_dgemm(int o, int ta, int tb, int m, int n, int k, double al, const double* a, int lda,
                 const double* b, int ldb, double be, double* c, int ldc)
{{ {p}dgemm{s}(o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc); }}
void cblas_cgemm(int o, int ta, int tb, int m, int n, int k, const void* al, const void* a, int lda,
                 const void* b, int ldb, const void* be, void* c, int ldc)
{{ {p}cgemm{s}(o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc); }}
"""

# (prefix, suffix) of the 64-bit-int cblas names in the OpenBLAS builds numpy wheels bundle.
_NAMINGS = [("scipy_cblas_", "64_"), ("cblas_", "64_")]


def status() -> dict:
    """{'active': bool, 'library': path or None, 'reason': str, 'flush_subnormals': bool}."""
    return dict(_STATE)


_GPU_BUILDS = ("mlx-cuda-12", "mlx-cuda-13", "mlx-cuda")


def _gpu_build() -> str | None:
    """The installed MLX GPU backend distribution on Linux (mlx[cuda]), if any."""
    for name in _GPU_BUILDS:
        try:
            importlib.metadata.version(name)
            return name
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _numpy_openblas() -> str | None:
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = Path(list(spec.submodule_search_locations)[0])
    for pat in ("libscipy_openblas64_*.so*", "libopenblas64_*.so*"):
        hits = sorted(glob.glob(str(pkg.parent / "numpy.libs" / pat)))
        if hits:
            return hits[0]
    return None


def _naming(lib_path: str) -> tuple[str, str] | None:
    lib = ctypes.CDLL(lib_path)
    _HANDLES.append(lib)
    for p, s in _NAMINGS:
        if all(hasattr(lib, f"{p}{f}{s}") for f in ("sgemm", "dgemm", "cgemm")):
            return p, s
    return None


def _cache_dir() -> Path:
    return notme_home() / "blas"


def build_shim(openblas: str, cache: Path | None = None) -> Path:
    """Compile (once) the forwarding shim for `openblas`; returns the .so path. Atomic: temp + rename."""
    naming = _naming(openblas)
    if naming is None:
        raise RuntimeError(f"{openblas}: no 64-bit cblas_sgemm symbol found")
    src = _SHIM.format(p=naming[0], s=naming[1])
    st = os.stat(openblas)
    key = hashlib.sha256(f"{src}\0{openblas}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return _compile_once(src, (cache or _cache_dir()) / key / "libnotme_blas.so",
                         [openblas, f"-Wl,-rpath,{Path(openblas).parent}"])


def _compile_once(src: str, out: Path, link: list[str] = ()) -> Path:
    """Compile C `src` into the shared library `out` unless it exists (temp + rename; the folder
    and its parent user-only: it is code we load). Raises RuntimeError without a compiler or when
    the compiler fails."""
    if out.exists():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError(f"no C compiler (cc/gcc/clang) to build {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out.parent.parent, 0o700)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        c_file = Path(tmp) / "src.c"
        c_file.write_text(src)
        tmp_so = Path(tmp) / out.name
        r = subprocess.run([cc, "-O2", "-shared", "-fPIC", str(c_file), "-o", str(tmp_so), *link],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"building {out.name} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        os.replace(tmp_so, out)
    return out


def _local_ranks() -> int:
    """Ranks of this `mlx.launch` job on this host (from MLX_HOSTFILE; 1 when unknown)."""
    try:
        hosts = json.loads(Path(os.environ["MLX_HOSTFILE"]).read_text())
        me = {"localhost", "127.0.0.1", socket.gethostname()}
        n = sum(1 for h in hosts if h.get("ssh") in me
                or all(str(ip).startswith("127.") for ip in h.get("ips", []) or ["x"]))
        return max(n, 1)
    except (KeyError, OSError, ValueError, TypeError, AttributeError):
        return 1


# OpenBLAS's idle workers spin 2^N cycles before they sleep (N = OPENBLAS_THREAD_TIMEOUT, default
# 28: ~0.1 s). Between MLX's GEMMs the CPU stream thread runs elementwise work on one core while a
# spinning worker holds the other, and every wake-up of the Python thread then preempts one of
# them (SmolLM2 training on 2 cores: the stream thread was preempted ~13,000 times in 8 steps,
# ~150 with 14). 14 (~7 us) lets idle workers sleep almost at once.
THREAD_TIMEOUT = "14"


def _thread_default() -> None:
    if "MLX_RANK" in os.environ and "OPENBLAS_NUM_THREADS" not in os.environ:
        os.environ["OPENBLAS_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _local_ranks()))
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)


_FTZ = r"""
#include <xmmintrin.h>
unsigned int notme_flush_subnormals(void) { unsigned int old = _mm_getcsr(); _mm_setcsr(old | 0x8040); return old; }
"""


def flush_subnormals() -> bool:
    """Set flush-to-zero and denormals-are-zero (MXCSR) on this thread, so that threads started
    afterwards (OpenBLAS's pool, MLX's CPU stream) inherit them: float32 results and inputs below
    2^-126 count as 0 instead of taking the CPU's slow microcode path. Measured on SmolLM2-135M
    training steps, in one process: steps whose gradients reach the subnormal range took 3.6 s
    instead of 3.1 s. TensorFlow sets the same flags for its CPU threads. x86-64 Linux only;
    `NOTME_FTZ=off` keeps IEEE subnormals. Compiled once like the BLAS shim; never fails an import.
    Returns whether the flags are now set."""
    if not sys.platform.startswith("linux") or os.uname().machine not in ("x86_64", "amd64"):
        return False
    if os.environ.get("NOTME_FTZ", "on").strip().lower() in ("off", "0", "no"):
        return False
    try:
        key = hashlib.sha256(_FTZ.encode()).hexdigest()[:16]
        lib = ctypes.CDLL(str(_compile_once(_FTZ, notme_home() / "ftz" / key / "libnotme_ftz.so")))
        _HANDLES.append(lib)
        lib.notme_flush_subnormals()
        _STATE["flush_subnormals"] = True
        return True
    except Exception:  # never fail the import
        return False


def enable() -> dict:
    """Load a fast BLAS into the global symbol scope if this is Linux and mlx.core is not loaded yet."""
    setting = os.environ.get("NOTME_BLAS", "auto").strip() or "auto"
    if not sys.platform.startswith("linux"):
        _STATE.update(active=False, reason=f"{sys.platform}: MLX uses Accelerate/Metal")
        return status()
    if setting.lower() in ("off", "0", "no", "none", "reference"):
        _STATE.update(active=False, reason="NOTME_BLAS=off")
        return status()
    if "mlx.core" in sys.modules:
        _STATE.update(active=False, reason="mlx.core was imported before notme_mlx; import notme_mlx first")
        return status()
    if setting.lower() == "auto" and (gpu := _gpu_build()):
        _STATE.update(active=False, reason=f"{gpu} installed: MLX's GEMMs run on the GPU")
        return status()
    _thread_default()  # before OpenBLAS is first loaded (it reads the variable once)
    try:
        if setting.lower() == "auto":
            openblas = _numpy_openblas()
            if openblas is None:
                raise RuntimeError("numpy's bundled OpenBLAS not found")
            lib = str(build_shim(openblas))
        else:
            lib = setting
            if not os.path.exists(lib):
                raise RuntimeError(f"NOTME_BLAS={lib}: no such file")
        handle = ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        if not hasattr(handle, "cblas_sgemm"):
            raise RuntimeError(f"{lib}: does not export cblas_sgemm")
        _HANDLES.append(handle)
        _STATE.update(active=True, library=lib, reason="ok")
    except Exception as e:  # never fail the import: MLX still works with its own BLAS
        _STATE.update(active=False, library=None, reason=str(e))
        if setting.lower() != "auto":
            print(f"notme: warning: {e}; using MLX's reference BLAS", file=sys.stderr)
    return status()
