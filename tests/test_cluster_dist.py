"""`notme cluster launch` over loopback (mlx.launch --backend ring) against `notme train` on one process.

The worker runs `notme train`'s own `train()` with the pipeline or data-parallel step function,
so the same recipe (AdamW, warm-up + cosine schedule, clipping, two phases) must give the same
per-step losses (within 1e-5 relative) and, for step 1, the loss of an independent computation
(mlx-lm's whole-model logits and the plain loss formula).
"""

from __future__ import annotations

import json
import subprocess

import mlx.core as mx
import numpy as np
import pytest

from notme_mlx.cluster.selftest import launch_job, prepare, selftest, selftest_recipe, stages_of, step_losses
from notme_mlx.recipe import to_dict
from notme_mlx.train import checkpoint as ckpt
from notme_mlx.train.trainer import train

TOL = 1e-5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    prepare(d)
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
    (2, "1f1b", 2, 1), (2, "gpipe", 3, 1),  # 2-stage pipeline
    (2, "1f1b", 1, 2),                      # 2-rank data parallel
    (4, "1f1b", 2, 2), (4, "gpipe", 1, 1),  # hybrid 2 replicas x 2 stages; 4 stages
])
def test_cluster_launch_losses_equal_notme_train(workdir, n, schedule, m, dp):
    r = selftest(n, workdir=str(workdir), schedule=schedule, microbatches=m, replicas=dp)
    assert len(r["losses"]) == 6  # two phases of three steps
    assert r["loss"] < TOL and r["plain_step1"] < TOL, r
    assert r["adapters"] < 1e-2, r  # AdamW divides by sqrt(v): fp32 summation order shows in tiny elements


def _job(workdir, name, stages=2, **kw):
    recipe = selftest_recipe(workdir, name, grad_accum=2, steps=2, timeout=60)
    job = {"recipe": to_dict(recipe), "model_dir": str(workdir / "model"), "stages": stages_of(4, stages),
           "replicas": 1, "force": True}
    job.update(kw)
    return recipe, job


@pytest.mark.slow
def test_cluster_run_resumes_like_notme_train_and_a_dead_rank_is_a_clear_error(workdir):
    full, job = _job(workdir, "full")
    r = launch_job(job, 2, workdir / "full.json")
    assert r.returncode == 0, r.stderr[-2000:]
    want = step_losses(full.run_dir())
    assert len(want) == 4
    cut, job = _job(workdir, "cut", stop_at_step=3)  # checkpoint after step 3 (phase 2) and stop
    r = launch_job(job, 2, workdir / "cut.json")
    assert r.returncode == 0, r.stderr[-2000:]
    last = ckpt.latest(cut.run_dir() / "checkpoints")
    assert last.name == "step-3" and {p.name for p in last.iterdir()} >= {
        "adapter.shard-0-of-2.safetensors", "adapter.shard-1-of-2.safetensors", "state.json"}
    _, job = _job(workdir, "cut", kill={"rank": 1, "step": 1}, resume=True, force=False)
    try:
        r = launch_job(job, 2, workdir / "crash.json", timeout=180)  # the hang guard; the watchdog ends it sooner
    except subprocess.TimeoutExpired:
        pytest.fail("a dead rank left the run hanging")
    assert r.returncode != 0
    out = r.stderr + r.stdout
    assert "rank 0: no progress" in out or "exited with code" in out
    _, job = _job(workdir, "cut", resume=True, force=False)
    r = launch_job(job, 2, workdir / "resume.json")
    assert r.returncode == 0, r.stderr[-2000:]
    got = step_losses(cut.run_dir())
    assert got == want  # the resumed run replays the same batches and restored AdamW state, bit for bit
    a = mx.load(str(cut.run_dir() / "adapters" / "adapters.safetensors"))
    b = mx.load(str(full.run_dir() / "adapters" / "adapters.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(np.array(a[k]), np.array(b[k])) for k in a)


def test_merged_adapter_loads_on_one_machine(workdir):
    from mlx_lm import load

    from notme_mlx.lora import adapter_parameters, load_adapter

    recipe, job = _job(workdir, "merge")
    r = launch_job(job, 2, workdir / "merge.json")
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((recipe.run_dir() / "adapters" / "adapter_config.json").read_text())
    assert cfg["notme"]["cluster"]["stages"] == [[0, 2], [2, 4]] and cfg["notme"]["phases"] == ["learn", "penalize"]
    model, _ = load(str(workdir / "model"))
    load_adapter(model, recipe.run_dir() / "adapters")
    got = adapter_parameters(model, "default")
    want = mx.load(str(recipe.run_dir() / "adapters" / "adapters.safetensors"))
    assert set(got) == set(want) and len(got) == 4 * 7 * 2  # 4 layers x 7 projections x (A, B)
    for k, v in want.items():
        np.testing.assert_array_equal(np.array(got[k]), np.array(v))
    # the phase adapters are merged too, and the first phase's equals a single-process run's
    single = train(selftest_recipe(workdir, "merge-single", grad_accum=2, steps=2, timeout=60), force=True)
    a = mx.load(str(recipe.run_dir() / "phases" / "learn" / "adapters.safetensors"))
    b = mx.load(str(single.run_dir / "phases" / "learn" / "adapters.safetensors"))
    assert set(a) == set(b)
    assert max(float(np.abs(np.array(a[k]) - np.array(b[k])).max()) for k in a) < 1e-3


def test_launch_dry_run_writes_the_recipe_job(workdir, tmp_path):
    from click.testing import CliRunner

    from notme_mlx.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {workdir / 'model'}\nname: c\nout_dir: {tmp_path / 'runs'}\n"
                      f"data: {{train: {workdir / 'train.jsonl'}, valid: null, max_seq_len: 64}}\n"
                      "lora: {rank: 4, alpha: 8}\nmax_steps: 2\ngrad_accum: 2\nbatch_size: 2\n")
    plan = tmp_path / "plan.json"
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  - {name: a, ip: 127.0.0.1, memory_gb: 8}\n  - {name: b, ip: 127.0.0.1, memory_gb: 8}\n")
    r = CliRunner().invoke(main, ["cluster", "plan", "--model", str(workdir / "model"), "--hosts", str(hosts),
                                  "--microbatches", "2", "--batch", "4", "--seq", "64", "-o", str(plan)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["cluster", "launch", str(recipe), "--plan", str(plan), "--dry-run",
                                  "--set", "lora.rank=2"])
    assert r.exit_code == 0, r.output
    job = json.loads((tmp_path / "runs" / "c" / "cluster-job.json").read_text())
    assert job["stages"] == [[0, 2], [2, 4]] and job["replicas"] == 1
    # the job carries the whole resolved recipe: schedule, betas, phases, LoRA as `notme train` reads them
    assert job["recipe"]["lora"]["rank"] == 2 and job["recipe"]["optimizer"]["betas"] == [0.9, 0.999]
    assert job["recipe"]["schedule"]["type"] == "cosine" and job["recipe"]["max_steps"] == 2
    assert "--hostfile" in r.output and "notme_mlx.cluster.worker" in r.output
    bad = CliRunner().invoke(main, ["cluster", "launch", str(recipe), "--plan", str(plan), "--dry-run",
                                    "--set", "lora.rnak=2"])
    assert bad.exit_code == 1 and "did you mean 'lora.rank'" in bad.output
