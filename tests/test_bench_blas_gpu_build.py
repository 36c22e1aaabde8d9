"""The OpenBLAS shim is for MLX's CPU backend only: with an MLX CUDA build installed, `auto` leaves
MLX's BLAS alone (its GEMMs run on the GPU); an explicit library still loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim is Linux-only")

_CODE = textwrap.dedent("""
    import json
    import notme_mlx
    print(json.dumps(notme_mlx.cpu_blas.status()))
""")


def _status(tmp_path, fake_cuda: bool, **env) -> dict:
    site = tmp_path / "site"
    if fake_cuda:  # what `pip install mlx[cuda]` leaves in site-packages: the mlx-cuda-12 metadata
        d = site / "mlx_cuda_12-0.32.4.dist-info"
        d.mkdir(parents=True)
        (d / "METADATA").write_text("Metadata-Version: 2.1\nName: mlx-cuda-12\nVersion: 0.32.4\n")
    e = dict(os.environ, NOTME_HOME=str(tmp_path / "home"), **env)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), e.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, env=e)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_cuda_build_skips_the_shim(tmp_path):
    st = _status(tmp_path, True, NOTME_BLAS="auto")
    st.pop("flush_subnormals")  # a CPU-thread setting, independent of the BLAS choice
    assert st == {"active": False, "library": None, "reason": "mlx-cuda-12 installed: MLX's GEMMs run on the GPU"}
    assert not (tmp_path / "home" / "blas").exists()


def test_cpu_build_loads_the_shim(tmp_path):
    st = _status(tmp_path, False, NOTME_BLAS="auto")
    assert st["active"] is True and st["reason"] == "ok" and st["library"].endswith("libnotme_blas.so")
