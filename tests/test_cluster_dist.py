"""Distributed training over loopback (mlx.launch --backend ring) against one process.

Each case checks loss, every LoRA gradient of step 1, and the adapters after three
optimizer steps against `reference_run` (mlx-lm's whole-model forward, the plain
full-logits loss, nn.value_and_grad) within 1e-5 relative.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from notme_mlx.cluster.selftest import launch_job, reference_run, selftest
from notme_mlx.models.tiny import build_tiny_llama

TOL = 1e-5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    build_tiny_llama(d / "model", vocab_size=256, seed=3, num_hidden_layers=4)
    return d


def test_selftest_cli_two_ranks_prints_max_rel_diff_last():
    from click.testing import CliRunner

    from notme_mlx.cli import main

    r = CliRunner().invoke(main, ["cluster", "selftest", "-n", "2", "--microbatches", "2"])
    assert r.exit_code == 0, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("max_rel_diff=") and float(last.split("=")[1]) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("n,schedule,m,dp", [
    (2, "gpipe", 1, 1), (2, "gpipe", 4, 1), (2, "1f1b", 3, 1),  # pipeline, several micro-batch counts
    (4, "gpipe", 2, 1), (4, "1f1b", 4, 1), (4, "1f1b", 1, 1),
    (2, "1f1b", 1, 2), (4, "1f1b", 1, 4),  # pure data parallel
    (4, "1f1b", 2, 2), (4, "gpipe", 3, 2),  # hybrid: 2 replicas x 2 stages
])
def test_distributed_modes_match_single_process(workdir, n, schedule, m, dp):
    r = selftest(n, workdir=str(workdir), schedule=schedule, microbatches=m, replicas=dp)
    assert r["max_rel_diff"] < TOL, r


def _job(workdir, name, **kw):
    job = {"model_dir": str(workdir / "model"), "stages": [[0, 2], [2, 4]], "replicas": 1, "microbatches": 2,
           "schedule": "1f1b", "steps": 4, "lr": 1e-2, "optimizer": "sgd", "grad_clip": 1.0, "seed": 0,
           "lora": {"rank": 4, "alpha": 8}, "batch": {"size": 4, "seq": 16, "seed": 1},
           "out_dir": str(workdir / name), "timeout": 8, "save_every": 1}
    job.update(kw)
    return job


@pytest.mark.slow
def test_killed_rank_ends_the_run_with_a_clear_error_and_resume_continues(workdir):
    full = _job(workdir, "full")
    r = launch_job(full, 2)
    assert r.returncode == 0, r.stderr[-2000:]
    want = json.loads((workdir / "full" / "losses.json").read_text())
    crash = _job(workdir, "crash", kill={"rank": 1, "step": 3})
    try:
        r = launch_job(crash, 2, timeout=120)  # the hang guard; the watchdog ends it far sooner
    except subprocess.TimeoutExpired:
        pytest.fail("a dead rank left the run hanging")
    assert r.returncode != 0
    out = r.stderr + r.stdout
    assert "rank 0: no progress" in out or "rank 1 exited" in out.lower() or "exited with code" in out
    resumed = _job(workdir, "crash", resume=True)
    r = launch_job(resumed, 2)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads((workdir / "crash" / "losses.json").read_text())
    assert len(got) == 4
    assert max(abs(a - b) / abs(b) for a, b in zip(got, want)) < TOL
    # the merged adapter loads on one machine and equals the uninterrupted run's
    import mlx.core as mx
    import numpy as np

    a = mx.load(str(workdir / "crash" / "adapters" / "adapters.safetensors"))
    b = mx.load(str(workdir / "full" / "adapters" / "adapters.safetensors"))
    assert set(a) == set(b)
    assert max(float(np.abs(np.array(a[k]) - np.array(b[k])).max()) for k in a) < 1e-5


def test_merged_adapter_loads_on_one_machine(workdir):
    from mlx_lm import load

    from notme_mlx.lora import load_adapter

    job = _job(workdir, "merge", steps=2)
    r = launch_job(job, 2)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = reference_run(job)
    model, tok = load(str(workdir / "model"))
    load_adapter(model, workdir / "merge" / "adapters")
    from notme_mlx.lora import adapter_parameters
    import numpy as np

    got = adapter_parameters(model, "default")
    assert set(got) == set(ref["adapters"])
    for k, v in ref["adapters"].items():
        np.testing.assert_allclose(np.array(got[k]), np.array(v), rtol=1e-4, atol=1e-6)


def test_real_data_batches_and_launch_dry_run(workdir, tmp_path):
    """A recipe's tokenized data drives the worker; `launch --dry-run` writes the job."""
    import json as _json

    from click.testing import CliRunner

    from notme_mlx.cli import main
    from notme_mlx.cluster.worker import DataBatches

    data = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"answer number {i}. Does that make sense?", "train": True,
                           "spans": [[len(f"answer number {i}. "), len(f"answer number {i}. Does that make sense?"), "penalize"]]}]}
            for i in range(6)]
    data.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    job = {"model_dir": str(workdir / "model"), "data": {"train": str(data), "max_seq_len": 64},
           "batch": {"size": 4}, "seed": 0}
    b = DataBatches(job)(1)
    assert b["inputs"].shape[0] == 4 and b["inputs"].shape[1] % 32 == 0
    assert int((b["labels"] == -1).sum()) > 0 and int((b["labels"] == 1).sum()) > 0
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {workdir / 'model'}\nname: c\nout_dir: {tmp_path / 'runs'}\n"
                      f"data: {{train: {data}, valid: null, max_seq_len: 64}}\nlora: {{rank: 4, alpha: 8}}\nmax_steps: 2\n")
    plan = tmp_path / "plan.json"
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  - {name: a, ip: 127.0.0.1, memory_gb: 8}\n  - {name: b, ip: 127.0.0.1, memory_gb: 8}\n")
    r = CliRunner().invoke(main, ["cluster", "plan", "--model", str(workdir / "model"), "--hosts", str(hosts),
                                  "--microbatches", "2", "--batch", "4", "--seq", "64", "-o", str(plan)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["cluster", "launch", str(recipe), "--plan", str(plan), "--dry-run"])
    assert r.exit_code == 0, r.output
    job = _json.loads((tmp_path / "runs" / "c" / "cluster-job.json").read_text())
    assert job["stages"] == [[0, 2], [2, 4]] and job["microbatches"] == 2 and job["steps"] == 2
    assert "--hostfile" in r.output and "notme_mlx.cluster.worker" in r.output
    job["timeout"] = 60
    r = launch_job(job, 2)
    assert r.returncode == 0, r.stderr[-2000:]
    losses = _json.loads((tmp_path / "runs" / "c" / "losses.json").read_text())
    assert len(losses) == 2 and all(l > 0 for l in losses)
