"""Port of RLlib's ``examples/checkpoints/checkpoint_by_custom_criteria.py``.

Three trials (lr 0.01, 0.001, 0.0001) on CartPole, a checkpoint after every iteration; then
pick the best trial by the fewest episodes in one iteration (longest episodes), the checkpoint
with the lowest policy loss and the one with the highest value-function loss. RLlib's stop:
``env_runners/episode_return_mean`` 450, 100k env steps or 200 iterations per trial.

Changed: imports, and Tune replaced by a plain loop: ``tune.grid_search([...])`` becomes a loop
over the three values (each trial a plain ``algo.train()`` loop with RLlib's stop criteria), and
Tune's ``ResultGrid.get_best_result(metric, mode, scope="all")`` becomes a pick over the rows
recorded per iteration (metric value, checkpoint path).

    python examples/rllib_ports/checkpoint_by_custom_criteria.py
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from _loop import build_algo, example_args, train_until

from lightning_rl import DEFAULT_POLICY_ID, PPOConfig

LEARNER_RESULTS = "learners"


def main(argv=None) -> dict:
    args = example_args(default_reward=450.0, default_timesteps=100000, default_iters=200, argv=argv)
    root = Path(tempfile.mkdtemp(prefix="rllib_port_ckpt_"))
    rows = []  # one per trial and iteration: lr, metrics, checkpoint
    summaries = []
    for lr in [0.01, 0.001, 0.0001]:
        base_config = PPOConfig().environment("CartPole-v1").training(lr=lr, train_batch_size=2341)
        algo = build_algo(base_config, args)

        def checkpoint_every_iteration(result, lr=lr, algo=algo):  # RLlib's checkpoint_freq=1
            path = algo.save(root / f"lr_{lr}" / f"iteration_{result['training_iteration']:04d}.ckpt")
            learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_POLICY_ID, {})
            rows.append(
                {
                    "lr": lr,
                    "num_episodes": result["env_runners"].get("num_episodes", math.inf),
                    "episode_return_mean": result["env_runners"]["episode_return_mean"],
                    "policy_loss": learner.get("policy_loss", math.nan),
                    "vf_loss": learner.get("vf_loss", math.nan),
                    "checkpoint": path,
                }
            )

        summaries.append(
            train_until(
                algo, f"checkpoint_by_custom_criteria lr={lr}", args, on_result=checkpoint_every_iteration
            )
        )

    best = min(rows, key=lambda row: row["num_episodes"])
    best_return = max(row["episode_return_mean"] for row in rows if row["lr"] == best["lr"])
    print(
        f"Best trial was the one with lr={best['lr']}. Reached lowest episode count "
        f"({best['num_episodes']}) in a single iteration and an average return of {best_return}."
    )
    lowest_policy_loss = min(rows, key=lambda row: row["policy_loss"])
    print(
        f"Checkpoint w/ lowest policy loss ({lowest_policy_loss['policy_loss']}): "
        f"{lowest_policy_loss['checkpoint']}"
    )
    highest_vf_loss = max(rows, key=lambda row: row["vf_loss"])
    print(f"Checkpoint w/ highest value function loss: {highest_vf_loss['checkpoint']}")
    print(f"Highest value function loss: {highest_vf_loss['vf_loss']}")
    return {"trials": summaries, "best_lr": best["lr"], "best_return": best_return}


if __name__ == "__main__":
    main()
