"""SAC and PPO on MuJoCo (Hopper-v5, HalfCheetah-v5) on CPU within a stated env-step budget.

    pip install "lightning-rl[mujoco]"
    python benchmarks/mujoco_learning.py --algo sac --env Hopper-v5 --max-env-steps 30000
    python benchmarks/mujoco_learning.py --algo ppo --env HalfCheetah-v5 --max-env-steps 100000

Trains in-process (``num_env_runners=0``) until both criteria of ``_common.TimeToTarget`` hold
or the env-step budget is spent: the deterministic evaluation mean over ``--eval-episodes``
episodes (default 10: a Hopper/HalfCheetah episode is up to 1000 steps) reaches
``--eval-target``, and the mean of the last 100 training episodes reaches ``--rolling-target``
(defaults per env below: modest targets a short CPU budget can reach, far above a random
policy's return, not the published asymptotes of ~3000 (Hopper) and ~10000 (HalfCheetah)).

Hyperparameters are the usual MuJoCo ones, shrunk where a 2-core budget needs it: SAC with
[256, 256] ReLU networks, lr 3e-4, batch 256, one update per env step, 5000 random-policy
warm-up steps; PPO with [64, 64] tanh networks, observation MeanStdFilter, 2048 steps per
iteration, 10 epochs of 256-step minibatches, lr 3e-4, gamma 0.99, lambda 0.95. The last line
is one JSON object: ``_common``'s keys plus ``algo``, ``env``, ``budget_env_steps``,
``best_eval_return`` and ``eval_returns`` (every evaluation as ``[env_steps, return]``).

Measured (seed 0, 2 shared cores under load 6-36, ``results/mujoco_learning.json``):
SAC Hopper-v5 30k steps: 333.7 (evaluations 216 at 9k, 248 at 19k, 334 at 30k; 65 min wall,
CPU-starved); SAC Hopper-v5 12k steps: 227.4; PPO Hopper-v5 50k steps: 343.6 (50 at 10k,
196 at 20k); PPO HalfCheetah-v5 50k steps: 23.4 (random: about -280). None reaches the
default targets within these budgets: they are smoke-level learning figures; SAC HalfCheetah
was not run for lack of CPU time.
"""

from __future__ import annotations

import argparse
from typing import Any

import lightning.pytorch as pl
from _common import emit, train_to_target

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.algorithms.sac import SAC

TARGETS = {"Hopper-v5": 1000.0, "HalfCheetah-v5": 1500.0}  # random policy: ~18 and ~-280

SETTINGS: dict[str, tuple[type, dict[str, Any], int]] = {
    # (algorithm, init args, evaluate every N iterations)
    "sac": (
        SAC,
        dict(
            rollout_fragment_length=1000,
            train_batch_size=256,
            training_intensity=256,  # one gradient update per env step sampled
            lr=3e-4,
            gamma=0.99,
            tau=0.005,
            initial_alpha=1.0,
            target_entropy="auto",
            num_steps_sampled_before_learning_starts=5000,
            replay_buffer_config={"type": "ReplayBuffer", "capacity": 1_000_000},
            model_config={"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"},
        ),
        5,  # every 5000 env steps
    ),
    "ppo": (
        PPO,
        dict(
            rollout_fragment_length=2048,
            train_batch_size=2048,
            minibatch_size=256,
            num_epochs=10,
            lr=3e-4,
            gamma=0.99,
            lambda_=0.95,
            clip_param=0.2,
            entropy_coeff=0.0,
            env_to_module_connector=[{"name": "MeanStdFilter"}],
            model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"},
        ),
        5,  # every 10240 env steps
    ),
}


class EvalHistory(pl.Callback):
    """Every evaluation's return with the env steps it was reached at."""

    def __init__(self) -> None:
        self.returns: list[list[float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        value = trainer.callback_metrics.get("evaluation/episode_return_mean")
        if value is not None and not trainer.sanity_checking:
            self.returns.append([int(pl_module.num_env_steps_sampled_lifetime), round(float(value), 1)])


def main() -> dict[str, Any]:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--algo", choices=sorted(SETTINGS), default="sac")
    parser.add_argument("--env", choices=sorted(TARGETS), default="Hopper-v5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-env-steps", type=int, default=30_000)
    parser.add_argument("--eval-target", type=float, default=None)
    parser.add_argument("--rolling-target", type=float, default=None)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    args.eval_target = TARGETS[args.env] if args.eval_target is None else args.eval_target
    args.rolling_target = TARGETS[args.env] if args.rolling_target is None else args.rolling_target

    algo_class, settings, eval_every = SETTINGS[args.algo]
    pl.seed_everything(args.seed, verbose=False)
    algo = algo_class(
        args.env,
        num_env_runners=0,
        num_envs_per_env_runner=1,
        evaluation_duration=args.eval_episodes,
        seed=args.seed,
        **settings,
    )
    history = EvalHistory()
    trainer, result = train_to_target(algo, args, check_val_every_n_epoch=eval_every, callbacks=[history])
    if not history.returns or history.returns[-1][0] < algo.num_env_steps_sampled_lifetime:
        # The budget ended between evaluations: evaluate the final policy too.
        trainer.validate(algo, verbose=False)
        result["final_eval_return"] = history.returns[-1][1] if history.returns else None
    result.update(
        algo=algo_class.__name__,
        env=args.env,
        budget_env_steps=args.max_env_steps,
        eval_target=args.eval_target,
        rolling_target=args.rolling_target,
        eval_episodes=args.eval_episodes,
        best_eval_return=max((r for _, r in history.returns), default=None),
        eval_returns=history.returns,
    )
    emit(result)
    return result


if __name__ == "__main__":
    main()
