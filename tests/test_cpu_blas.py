"""The OpenBLAS shim: MLX GEMMs through it equal numpy float64 products; off/late/bad settings fall back.

Each case runs in a fresh interpreter because the shim must be loaded before mlx.core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim is Linux-only")


def _run(code: str, **env) -> tuple[int, dict, str]:
    e = dict(os.environ)
    e.update(env)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=e)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "{}"
    return r.returncode, json.loads(last), r.stderr


_PROBE = """
    import json, ctypes
    import notme_mlx
    from notme_mlx import cpu_blas
    import mlx.core as mx
    import numpy as np
    rng = np.random.default_rng(0)
    errs = {}
    for (m, k, n, ta, tb) in [(37, 53, 29, False, False), (64, 128, 96, True, False),
                              (5, 300, 7, False, True), (128, 64, 256, True, True)]:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        A, B = mx.array(a), mx.array(b)
        A = A.T if ta else A
        B = B.T if tb else B
        got = np.array(A @ B)
        ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
        errs[f"{m}x{k}x{n}{'T' if ta else 'N'}{'T' if tb else 'N'}"] = float(np.abs(got - ref).max() / np.abs(ref).max())
    # batched matmul (the attention path) and float64 (dgemm)
    a = rng.standard_normal((3, 4, 17, 16)).astype(np.float32); b = rng.standard_normal((3, 4, 16, 19)).astype(np.float32)
    errs["batched"] = float(np.abs(np.array(mx.array(a) @ mx.array(b)) - a.astype(np.float64) @ b).max())
    a64 = rng.standard_normal((33, 21)); b64 = rng.standard_normal((21, 40))
    with mx.stream(mx.cpu):
        errs["float64"] = float(np.abs(np.array(mx.array(a64, dtype=mx.float64) @ mx.array(b64, dtype=mx.float64)) - a64 @ b64).max())
    # which cblas_sgemm the process resolves globally: the shim's when active
    st = cpu_blas.status()
    try:
        addr_global = ctypes.cast(ctypes.CDLL(None).cblas_sgemm, ctypes.c_void_p).value
    except AttributeError:  # the wheel's reference BLAS is in libmlx's local scope only
        addr_global = None
    addr_shim = ctypes.cast(ctypes.CDLL(st["library"]).cblas_sgemm, ctypes.c_void_p).value if st["library"] else None
    print(json.dumps({"status": st, "errs": errs, "global_is_shim": addr_global == addr_shim}))
"""


def test_mlx_gemm_through_openblas_matches_numpy(tmp_path):
    rc, out, err = _run(_PROBE, NOTME_BLAS="auto", NOTME_HOME=str(tmp_path))
    assert rc == 0, err
    st = out["status"]
    if not st["active"] and ("compiler" in st["reason"] or "not found" in st["reason"]):
        pytest.skip(st["reason"])
    assert st["active"], st
    assert st["library"].startswith(str(tmp_path / "blas"))
    assert (os.stat(tmp_path / "blas").st_mode & 0o077) == 0  # loaded code: not writable by others
    assert out["global_is_shim"]
    for name, e in out["errs"].items():
        assert e < (1e-12 if name == "float64" else 1e-5), (name, e)
    # the built shim is user-owned and reused on the next start (no rebuild: same path, same mtime)
    so = st["library"]
    mtime = os.stat(so).st_mtime_ns
    rc2, out2, _ = _run(_PROBE, NOTME_BLAS="auto", NOTME_HOME=str(tmp_path))
    assert out2["status"]["library"] == so and os.stat(so).st_mtime_ns == mtime


def test_off_keeps_reference_blas_with_same_numbers(tmp_path):
    rc, out, err = _run(_PROBE, NOTME_BLAS="off", NOTME_HOME=str(tmp_path))
    assert rc == 0, err
    assert out["status"] == {"active": False, "library": None, "reason": "NOTME_BLAS=off",
                             "flush_subnormals": out["status"]["flush_subnormals"]}
    assert not (tmp_path / "blas").exists()
    for name, e in out["errs"].items():
        assert e < (1e-12 if name == "float64" else 1e-5), (name, e)


def test_mlx_imported_first_is_reported_not_patched(tmp_path):
    code = """
        import json
        import mlx.core
        import notme_mlx
        print(json.dumps(notme_mlx.cpu_blas.status()))
    """
    rc, out, err = _run(code, NOTME_BLAS="auto", NOTME_HOME=str(tmp_path))
    assert rc == 0, err
    assert out["active"] is False and "imported before notme_mlx" in out["reason"]


def test_bad_explicit_library_warns_one_line_and_falls_back(tmp_path):
    code = """
        import json
        import notme_mlx
        import mlx.core as mx
        print(json.dumps({**notme_mlx.cpu_blas.status(), "ok": float((mx.ones((2, 3)) @ mx.ones((3, 2))).sum())}))
    """
    missing = tmp_path / "nope" / "libblas.so"
    rc, out, err = _run(code, NOTME_BLAS=str(missing), NOTME_HOME=str(tmp_path))
    assert rc == 0
    assert out["active"] is False and out["ok"] == 12.0
    lines = [ln for ln in err.splitlines() if "notme: warning" in ln]
    assert len(lines) == 1 and str(missing) in lines[0] and "no such file" in lines[0]


def test_openblas_threads_split_between_local_ranks(tmp_path):
    hf = tmp_path / "hosts.json"
    hf.write_text(json.dumps([{"ssh": "localhost", "ips": ["127.0.0.1:5000"]}] * 2 +
                             [{"ssh": "mac-studio-3.local", "ips": ["10.0.0.3:5000"]}]))
    code = """
        import json, os
        import notme_mlx
        print(json.dumps({"threads": os.environ.get("OPENBLAS_NUM_THREADS"), "cores": os.cpu_count()}))
    """
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       env={**env, "MLX_RANK": "1", "MLX_HOSTFILE": str(hf), "NOTME_HOME": str(tmp_path)})
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["threads"] == str(max(1, out["cores"] // 2))  # two of the three ranks are local
    _, out, _ = _run(code, MLX_RANK="1", MLX_HOSTFILE=str(hf), OPENBLAS_NUM_THREADS="3", NOTME_HOME=str(tmp_path))
    assert out["threads"] == "3"  # an explicit setting wins
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       env={**env, "NOTME_HOME": str(tmp_path)})
    assert json.loads(r.stdout.strip().splitlines()[-1])["threads"] is None  # not under mlx.launch: untouched


_IDLE_PROBE = """
    import json, os, time
    import notme_mlx
    import mlx.core as mx
    a = mx.random.normal((768, 768))
    mx.eval(a @ a)  # OpenBLAS's pool wakes for a multi-threaded GEMM
    cpu0 = time.process_time()
    time.sleep(0.3)  # the process has nothing to do: only a spinning worker uses the CPU now
    print(json.dumps({"idle_cpu_s": time.process_time() - cpu0, "timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT")}))
"""


def test_idle_openblas_workers_sleep_instead_of_spinning(tmp_path):
    """With the default OPENBLAS_THREAD_TIMEOUT (14) the pool sleeps right after a GEMM; OpenBLAS's
    own default (28, ~0.1 s of spinning) shows the probe sees spinning. A user's setting wins."""
    env = dict(NOTME_HOME=str(tmp_path), OPENBLAS_NUM_THREADS="2")
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(_IDLE_PROBE)], capture_output=True, text=True,
                       env={**base, **env})
    ours = json.loads(r.stdout.strip().splitlines()[-1])
    _, spin, _ = _run(_IDLE_PROBE, OPENBLAS_THREAD_TIMEOUT="28", **env)
    assert ours["timeout"] == "14" and spin["timeout"] == "28"
    assert ours["idle_cpu_s"] < 0.02 < spin["idle_cpu_s"]


_SUBNORMAL_PROBE = """
    import json, os
    import notme_mlx
    from notme_mlx import cpu_blas
    import mlx.core as mx
    import numpy as np
    tiny = 1e-39  # float32 subnormal (below 2^-126)
    elementwise = (mx.array([tiny], mx.float32) * 1.0).item()
    # a GEMM whose inputs are all subnormal: 512 of them sum to a normal 5.1e-37 unless they count as 0
    gemm = (mx.full((64, 512), tiny, mx.float32) @ mx.ones((512, 64))).max().item()
    print(json.dumps({"status": cpu_blas.status()["flush_subnormals"],
                      "elementwise": elementwise, "gemm": gemm, "x86": os.uname().machine in ("x86_64", "amd64")}))
"""


def test_subnormals_flushed_in_mlx_and_openblas_threads_unless_off():
    rc, on, err = _run(_SUBNORMAL_PROBE)
    assert rc == 0, err
    if not on["x86"]:
        pytest.skip("flush-to-zero is set on x86-64 only")
    assert on["status"] is True
    assert on["elementwise"] == 0.0 and on["gemm"] == 0.0
    rc, off, err = _run(_SUBNORMAL_PROBE, NOTME_FTZ="off")
    assert rc == 0, err
    assert off["status"] is False
    assert off["elementwise"] == pytest.approx(1e-39, rel=1e-3)
    assert off["gemm"] == pytest.approx(512 * 1e-39, rel=1e-3)
