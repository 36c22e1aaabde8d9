"""`notme cluster topology|plan|launch|selftest|simulate`."""

import json
import subprocess
import sys
from pathlib import Path

import click
from rich.table import Table

from .. import ui
from ..cluster.plan import ModelShape, allocate_layers_proportionally, bubble_fraction, load_plan, make_plan, write_plan
from ..cluster.selftest import selftest
from ..cluster.simulate import CHIPS, LINKS, simulate
from ..cluster.topology import read_exo, read_hosts
from ..cluster.worker import job_from_recipe
from ..errors import NotmeError
from ..io import atomic_write_text
from ..models import resolve
from ..recipe import load_recipe


def _topology(exo, exo_state, hosts):
    if exo:
        return read_exo(exo)
    if exo_state:
        return read_exo(exo_state)
    if hosts:
        return read_hosts(hosts)
    raise NotmeError("give the cluster: --exo URL (a running exo node), --exo-state FILE or --hosts hosts.yaml")


def _shape(model, layers):
    if model:
        cfg = json.loads((Path(resolve(model)) / "config.json").read_text())
        return ModelShape.from_config(cfg)
    if layers:  # layer count only: a 70B-class llama's shape scaled to the count
        return ModelShape(layers, 8192, 28672, 128256, 64, 8, "bfloat16", False)
    raise NotmeError("give --model SPEC (reads its config) or --layers N")


@click.group("cluster")
def cluster_group():
    """Train across Macs: read Exo's cluster, plan layer shards, launch with mlx.launch.

    \b
    Examples:
      notme cluster topology --exo-state cluster/fixtures/exo_state_4x_studio_512.json
      notme cluster plan --layers 80 --exo-state cluster/fixtures/exo_state_4x_studio_512.json -o plan.json
      notme cluster simulate --nodes 4 --chip m3-ultra --memory 512 --link tb5 --layers 80
      notme cluster selftest -n 2
    """


@cluster_group.command("topology")
@click.option("--exo", help="URL of a running exo node (http://host:52415).")
@click.option("--exo-state", type=click.Path(), help="A saved copy of exo's /state JSON.")
@click.option("--hosts", type=click.Path(), help="A plain hosts.yaml (no exo).")
def topology_cmd(exo, exo_state, hosts):
    """Nodes, chips, memory, addresses and links."""
    topo = _topology(exo, exo_state, hosts)
    t = Table(title=f"cluster ({topo.source})")
    for c in ("node", "id", "chip", "memory total", "available", "addresses", "rdma"):
        t.add_column(c)
    for n in topo.nodes:
        t.add_row(n.name, n.id[:16], n.chip, f"{n.memory_total / 2**30:.0f} GiB", f"{n.memory_available / 2**30:.0f} GiB",
                  ", ".join(f"{ip} ({k})" for ip, k in n.addresses), "yes" if n.rdma else "no")
    ui.out.print(t)
    for (a, b), kind in topo.pairs().items():
        ui.out.print(f"  link {topo.node(a).name} ↔ {topo.node(b).name}: {kind}")


@cluster_group.command("plan")
@click.option("--model", help="Model spec (its config.json gives the shape).")
@click.option("--layers", type=int, help="Plan by layer count alone (70B-class llama shape).")
@click.option("--exo")
@click.option("--exo-state", type=click.Path())
@click.option("--hosts", type=click.Path())
@click.option("--strategy", type=click.Choice(["pipeline", "data", "hybrid"]), default="pipeline", show_default=True)
@click.option("--microbatches", default=8, show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--seq", default=2048, show_default=True)
@click.option("--rank", "lora_rank", default=16, show_default=True)
@click.option("--replicas", default=None, type=int, help="Data-parallel replicas for --strategy hybrid.")
@click.option("--schedule", type=click.Choice(["gpipe", "1f1b"]), default="1f1b", show_default=True)
@click.option("-o", "--out", type=click.Path(), help="Write plan.json and plan.hostfile.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_cmd(model, layers, exo, exo_state, hosts, strategy, microbatches, batch, seq, lora_rank, replicas, schedule,
             out, as_json):
    """Memory-weighted layer partition, per-node memory budget and an mlx.launch hostfile."""
    topo = _topology(exo, exo_state, hosts)
    shape = _shape(model, layers)
    plan = make_plan(topo, shape, strategy, microbatches, batch, seq, lora_rank, schedule, replicas, model)
    if out:
        p, hf = write_plan(plan, topo, out)
        ui.info(f"[green]wrote[/green] {p} and {hf}")
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
        return
    t = Table(title=f"{strategy} plan: {shape.n_layers} layers, batch {batch}x{seq}, {microbatches} micro-batches, "
                    f"bubble {bubble_fraction(len(plan.stages) // plan.data_parallel, microbatches):.0%}")
    for c in ("rank", "node", "layers", "weights", "LoRA+optim", "activations", "need", "available", "fits"):
        t.add_column(c)
    G = 2**30
    for st in plan.stages:
        b = st.breakdown
        t.add_row(str(st.rank), topo.node(st.node_id).name, f"{st.start_layer}-{st.end_layer - 1}",
                  f"{b['weights'] / G:.1f}", f"{(b['lora'] + b['optimizer'] + b['grads']) / G:.2f}",
                  f"{b['activations'] / G:.1f}", f"{st.need_bytes / G:.1f} GiB", f"{st.memory_bytes / G:.0f} GiB",
                  "[green]yes[/green]" if st.need_bytes <= st.memory_bytes else "[red]no[/red]")
    ui.out.print(t)


@cluster_group.command("launch")
@click.argument("recipe", type=click.Path(exists=True))
@click.option("--plan", "plan_path", type=click.Path(exists=True), required=True, help="plan.json from `cluster plan`.")
@click.option("--set", "sets", multiple=True, help="Recipe override key=value (repeatable), as `notme train --set`.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in runs/<name>/checkpoints/.")
@click.option("--force", is_flag=True, help="Start over even if runs/<name>/ has checkpoints (deletes them).")
@click.option("--dry-run", is_flag=True, help="Write the job and print the mlx.launch command only.")
def launch_cmd(recipe, plan_path, sets, resume, force, dry_run):
    """Train RECIPE across the plan's hosts: one worker per rank, started by mlx.launch.

    Every rank runs `notme train`'s trainer (same phases, schedule, clipping, checkpoints)
    on its pipeline stage or data-parallel share; the recipe's grad_accum micro-batches are
    the pipeline's micro-batches.

    \b
    Example:
      notme cluster launch recipes/cluster-4x-mac-studio.yaml --plan plan.json
    """
    r = load_recipe(recipe, list(sets))
    job = job_from_recipe(r, plan_path, resume=resume, force=force)
    plan = load_plan(plan_path)
    if r.grad_accum != plan.microbatches * plan.data_parallel or r.batch_size * r.grad_accum != plan.batch_size:
        ui.warn(f"the plan was sized for batch {plan.batch_size} in {plan.microbatches} micro-batches per replica; "
                f"the recipe runs {r.grad_accum} micro-batches of {r.batch_size} (its memory estimate may be off)")
    jf = r.run_dir() / "cluster-job.json"
    atomic_write_text(jf, json.dumps(job, indent=2))
    hf = Path(plan_path).with_name(Path(plan_path).stem + ".hostfile.json")
    cmd = [str(Path(sys.executable).parent / "mlx.launch"), "--hostfile", str(hf), "--backend", plan.backend,
           "--python", sys.executable, "-m", "notme_mlx.cluster.worker", str(jf)]
    ui.out.print(" ".join(cmd))
    if not dry_run:
        raise SystemExit(subprocess.call(cmd))


@cluster_group.command("selftest")
@click.option("-n", "ranks", default=2, show_default=True, help="Local ranks (loopback ring).")
@click.option("--schedule", type=click.Choice(["gpipe", "1f1b"]), default="1f1b")
@click.option("--microbatches", default=2, show_default=True, help="Micro-batches per replica and step.")
@click.option("--replicas", default=1, show_default=True, help="Data-parallel replicas (hybrid when < n).")
def selftest_cmd(ranks, schedule, microbatches, replicas):
    """`cluster launch`'s worker on a tiny model vs `notme train` in one process; prints max_rel_diff=<float> last."""
    r = selftest(ranks, schedule=schedule, microbatches=microbatches, replicas=replicas)
    ui.info(f"per-step loss vs notme train {r['loss']:.2e}  step-1 loss vs plain logits {r['plain_step1']:.2e}  "
            f"adapters after {len(r['losses'])} AdamW steps {r['adapters']:.2e}")
    click.echo(f"max_rel_diff={r['max_rel_diff']:.3e}")


@cluster_group.command("simulate")
@click.option("--plan", "plan_path", type=click.Path(exists=True), help="A plan.json (stages and batch from it).")
@click.option("--nodes", default=4, show_default=True)
@click.option("--chip", type=click.Choice(["m2-ultra", "m3-ultra", "m4-max", "m4-pro"]), default="m3-ultra")
@click.option("--memory", default=512, show_default=True, help="GiB per node.")
@click.option("--link", type=click.Choice(["tb5", "tb5-rdma", "tb4", "10gbe", "loopback"]), default="tb5")
@click.option("--model", help="Model spec for the shape.")
@click.option("--layers", type=int, default=80, show_default=True)
@click.option("--batch", default=8)
@click.option("--seq", default=2048)
@click.option("--microbatches", default=8)
def simulate_cmd(plan_path, nodes, chip, memory, link, model, layers, batch, seq, microbatches):
    """Predict step time, tokens/s, memory per node and bubble share."""
    shape = _shape(model, layers)
    if plan_path:
        plan = load_plan(plan_path)
        counts = [s.end_layer - s.start_layer for s in plan.stages[: len(plan.stages) // plan.data_parallel]]
        batch, seq, microbatches, reps = plan.batch_size, plan.seq_len, plan.microbatches, plan.data_parallel
    else:
        counts, reps = allocate_layers_proportionally(shape.n_layers, [1 / nodes] * nodes), 1
    r = simulate(shape, CHIPS[chip], LINKS[link], counts, batch, seq, microbatches, reps)
    t = Table(title=f"{len(counts)} x {CHIPS[chip].name}, {LINKS[link].name}, {shape.n_layers} layers")
    for c in ("step", "tokens/s", "bubble", "link / micro-batch", "all-reduce", "achieved TFLOP/s"):
        t.add_column(c)
    t.add_row(f"{r['step_s']:.2f} s", f"{r['tokens_per_s']:,.0f}", f"{r['bubble_fraction']:.0%}",
              f"{r['link_time_per_microbatch_s'] * 1e3:.2f} ms", f"{r['allreduce_s'] * 1e3:.2f} ms",
              f"{r['achieved_tflops']:.1f}")
    ui.out.print(t)


COMMANDS = [cluster_group]
