"""Record an expert, clone it with BC, then fine-tune with PPO starting from the clone.

    python examples/bc_then_ppo.py [--steps 20000] [--out runs/bc_then_ppo]

1. PPO learns CartPole-v1 (a few seconds); ``record_episodes`` writes 20k of its env steps
   to Parquet (``--out``/episodes; the same files ``output=`` writes during any training run).
2. BC learns from those files (``BCConfig().offline_data(input_=...)``), evaluated on real
   episodes.
3. PPO starts from BC's policy with one call, ``ppo.load_policy_weights_from(bc)``: the
   policy network's weights (BC and PPO share ``PolicyNet``, so the same ``model_config``
   gives the same network), the observation filter's statistics and the critic BC fitted
   (``vf_coeff=1.0``). Its first evaluation, after one PPO iteration, is about BC's return,
   where PPO from scratch starts near 20-40.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_rl import record_episodes
from lightning_rl.algorithms.bc import BCConfig
from lightning_rl.algorithms.ppo import PPOConfig

# Both algorithms see the same connectors, so the filter statistics BC learned carry over.
CONNECTORS = ["MeanStdFilter"]


def ppo_config(out: Path, name: str, lr: float = 1e-3) -> PPOConfig:
    return (
        PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8, env_to_module_connector=CONNECTORS)
        .training(train_batch_size=256, minibatch_size=256, num_epochs=10, lr=lr, gamma=0.98, lambda_=0.8)
        .evaluation(evaluation_interval=1, evaluation_duration=20)
        .debugging(seed=0)
        .trainer(default_root_dir=str(out / name))
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20_000, help="expert env steps to record")
    parser.add_argument("--out", type=Path, default=Path("runs/bc_then_ppo"))
    args = parser.parse_args()

    # 1. An expert and its recorded episodes.
    with ppo_config(args.out, "expert").build_algo() as expert:
        expert_return = 0.0
        while expert_return < 475 and expert.iteration < 200:
            expert_return = expert.train()["evaluation"]["episode_return_mean"]
        print(f"expert: evaluation return {expert_return:.1f} after {expert.iteration} iterations")
        files = record_episodes(expert.algorithm, args.out / "episodes", args.steps)
    print(f"recorded {args.steps} env steps to {len(files)} Parquet file(s) in {args.out / 'episodes'}")

    # 2. Behaviour cloning from the files.
    bc = (
        BCConfig(defaults="native")
        .environment("CartPole-v1")
        .env_runners(env_to_module_connector=CONNECTORS)
        .offline_data(input_=str(args.out / "episodes"), dataset_num_iters_per_learner=100)
        # vf_coeff > 0: BC also fits a critic to the data's returns (PPO's gamma), so PPO's first
        # updates follow trained value estimates instead of an untrained critic's noise.
        .training(lr=1e-3, train_batch_size=512, vf_coeff=1.0, gamma=0.98)
        .evaluation(evaluation_interval=1, evaluation_duration=20)
        .debugging(seed=0)
        .trainer(default_root_dir=str(args.out / "bc"))
        .build_algo()
    )
    bc_return = 0.0
    while bc_return < 475 and bc.iteration < 20:
        bc_return = bc.train()["evaluation"]["episode_return_mean"]
    print(f"BC: evaluation return {bc_return:.1f} after {bc.iteration} iterations of 100 updates")

    # 3. PPO from the cloned policy (an algorithm, a TrainingRun or a checkpoint path all work).
    # Fine-tuning takes smaller steps than training from scratch (lr 3e-4 instead of 1e-3).
    with ppo_config(args.out, "ppo", lr=3e-4).build_algo() as ppo:
        ppo.algorithm.load_policy_weights_from(bc)
        bc.stop()
        first = ppo.train()["evaluation"]["episode_return_mean"]
        print(f"PPO after loading BC's policy: first evaluation {first:.1f} (BC: {bc_return:.1f})")
    with ppo_config(args.out, "ppo_scratch").build_algo() as scratch:
        print(
            f"PPO from scratch: first evaluation {scratch.train()['evaluation']['episode_return_mean']:.1f}"
        )


if __name__ == "__main__":
    main()
