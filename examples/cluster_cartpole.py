"""One script for a laptop and a Ray cluster: PPO on CartPole to an evaluation mean of 450.

    python examples/cluster_cartpole.py                         # laptop: starts a local Ray
    ray job submit --address http://127.0.0.1:8265 --working-dir examples \\
        -- python cluster_cartpole.py --runner-resource sim     # a cluster: joins RAY_ADDRESS

Nothing in the script says where Ray is: lightning-rl joins the cluster named by
``RAY_ADDRESS`` (which ``ray job submit`` and a KubeRay RayJob set) and starts a local Ray
otherwise. ``--runner-resource NAME`` (or the ``RUNNER_RESOURCE`` environment variable) asks
one unit of a custom resource per EnvRunner, so on a cluster the runners run only on the
nodes started with ``--resources='{"NAME": ...}'``; on a laptop the local Ray is started with
that resource, so the same command works there too. A lost node's runners are replaced when a
node with the resource joins again, and the others sample their share meanwhile.

``benchmarks/cluster_job_submit.py`` runs it this way on a two-node ``ray start`` cluster it
starts and stops itself (``--kill-node``: the runners' node is lost mid-run and replaced).

Prints one line per iteration to stderr (iteration, env steps, the runners' node ids) and a
JSON summary as the last line of stdout: env steps and seconds to the target, the final
evaluation mean, where the runners ran, runner restarts and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import lightning.pytorch as pl
import ray

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn


def runner_nodes(algo: PPO) -> list[str | None]:
    """The Ray node id each training EnvRunner runs on (None for a runner being replaced)."""
    nodes: list[str | None] = []
    for actor in algo.experience.train_group.actors():
        if actor is None:
            nodes.append(None)
            continue
        try:
            call = actor.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())
            nodes.append(ray.get(call, timeout=30))
        except (ray.exceptions.RayError, TimeoutError):
            nodes.append(None)  # lost between the iteration and this question
    return nodes


class Progress(pl.Callback):
    """One stderr line per iteration, so a person (or a script) can act between iterations."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.nodes: list[str | None] = []
        self.restarts = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.nodes = runner_nodes(pl_module)
        self.restarts = pl_module.experience.train_group.num_restarts
        metrics = trainer.callback_metrics
        healthy = metrics.get("env_runners/num_healthy_env_runners")
        healthy = None if healthy is None else int(healthy)
        print(
            f"iteration {trainer.current_epoch} env_steps {pl_module.num_env_steps_sampled_lifetime} "
            f"seconds {time.perf_counter() - self.start:.1f} healthy {healthy} "
            f"restarts {self.restarts} runner_nodes {self.nodes}",
            file=sys.stderr,
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runner-resource", default=os.environ.get("RUNNER_RESOURCE"))
    parser.add_argument("--num-env-runners", type=int, default=2)
    parser.add_argument("--target", type=float, default=450.0)
    parser.add_argument("--max-env-steps", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    pl.seed_everything(args.seed, verbose=False)
    resources = {args.runner_resource: 1} if args.runner_resource else {}
    # RL-Zoo's tuned CartPole PPO (256-step batches, 20 passes, lr 1e-3 decaying to 0); half a
    # CPU per runner.
    algo = PPO(
        "CartPole-v1",
        num_env_runners=args.num_env_runners,
        num_envs_per_env_runner=4,
        num_cpus_per_env_runner=0.5,
        custom_resources_per_env_runner=resources,
        rollout_fragment_length="auto",
        train_batch_size=256,
        minibatch_size=256,
        num_epochs=20,
        lr=1e-3,
        lr_schedule=[[0, 1e-3], [100_000, 0.0]],
        gamma=0.98,
        lambda_=0.8,
        evaluation_num_env_runners=0,
        evaluation_duration=20,
        env_runner_health_probe_timeout_s=10.0,
        seed=args.seed,
    )
    stop = StopOnReturn(args.target)
    progress = Progress(start)
    trainer = pl.Trainer(
        max_epochs=10_000,
        check_val_every_n_epoch=5,
        callbacks=[progress, stop, StopOnEnvSteps(args.max_env_steps)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(algo)
    reached = stop.reached_at
    summary = {
        "reached": reached is not None,
        "env_steps_to_target": None if reached is None else reached[1],
        "iterations": trainer.current_epoch,
        "seconds": round(time.perf_counter() - start, 1),
        "final_eval_return": float(trainer.callback_metrics.get("evaluation/episode_return_mean", -1.0)),
        "ray_address": os.environ.get("RAY_ADDRESS"),
        "runner_resource": args.runner_resource,
        "runner_nodes": progress.nodes,
        "runner_restarts": progress.restarts,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary), flush=True)
    if reached is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
