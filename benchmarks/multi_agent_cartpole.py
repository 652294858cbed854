"""Multi-agent PPO on MultiAgentCartPole (2 agents): env steps and seconds until both policies
reach an evaluation mean return of 450.

    python benchmarks/multi_agent_cartpole.py --seed 0 [--shared] [--num-env-runners R]

Trains ``configs/ppo/multi_agent_cartpole.yaml`` (policies p0, p1; ``--shared``: one policy for
both agents, judged per agent). Evaluation (10 greedy episodes) every 5 iterations; a step cap
of 300k env steps. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import yaml
from _common import emit, peak_rss_mb, seconds_since_start

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnEnvSteps

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ppo" / "multi_agent_cartpole.yaml"


class BothAbove(pl.Callback):
    """Records the first evaluation where every policy (or agent, when shared) reaches the target."""

    def __init__(self, target: float, shared: bool) -> None:
        self.target, self.shared = target, shared
        self.reached_at: tuple[float, int] | None = None
        self.returns: dict[str, float] = {}

    def on_validation_end(self, trainer: pl.Trainer, module) -> None:
        metrics = trainer.callback_metrics
        if self.shared:
            # One policy for both agents: judge each agent's evaluation return.
            per_agent = module.experience.last_eval_agent_returns
            self.returns = dict(per_agent)
        else:
            prefix = "evaluation/module_episode_returns_mean/"
            self.returns = {k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)}
        if self.returns and all(r >= self.target for r in self.returns.values()) and self.reached_at is None:
            self.reached_at = (seconds_since_start(), module.num_env_steps_sampled_lifetime)
            trainer.should_stop = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--num-env-runners", type=int, default=None)
    parser.add_argument("--target", type=float, default=450.0)
    parser.add_argument("--max-env-steps", type=int, default=300_000)
    args = parser.parse_args()

    model_args = dict(yaml.safe_load(CONFIG.read_text())["model"]["init_args"])
    if args.shared:
        model_args.pop("policies")
        model_args.pop("policy_mapping_fn")
    if args.num_env_runners is not None:
        model_args["num_env_runners"] = args.num_env_runners
    model_args["seed"] = args.seed
    pl.seed_everything(args.seed, verbose=False)
    algo = PPO(**model_args)
    tracker = BothAbove(args.target, args.shared)
    trainer = pl.Trainer(
        max_epochs=100_000,
        check_val_every_n_epoch=5,
        callbacks=[tracker, StopOnEnvSteps(args.max_env_steps)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(algo)
    hit = tracker.reached_at
    emit(
        {
            "reached": hit is not None,
            "seconds_to_target": round(hit[0], 3) if hit else None,
            "env_steps_to_target": hit[1] if hit else None,
            "returns": {k: round(v, 1) for k, v in tracker.returns.items()},
            "shared_policy": args.shared,
            "env_steps": algo.num_env_steps_sampled_lifetime,
            "iterations": trainer.current_epoch,
            "seed": args.seed,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
