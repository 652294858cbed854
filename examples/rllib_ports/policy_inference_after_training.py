"""Port of RLlib's ``examples/inference/policy_inference_after_training.py``.

Train PPO on CartPole until ``env_runners/episode_return_mean`` 200 (RLlib's defaults: 100k env
steps, 100 iterations), checkpoint, then restore the trained policy outside the algorithm and
run it by hand in a fresh env for 10 episodes.

Changed beyond the imports: RLlib restores a bare ``RLModule`` from the checkpoint's
``learner/module_state/default_policy`` directory and samples from its
``ACTION_DIST_INPUTS`` by hand; lightning-rl's checkpoints are one file, and the restored
object is a :class:`lightning_rl.Policy` (the module plus the env-to-module and module-to-env
connectors it was trained with), so ``policy.compute_single_action(obs, explore=...)`` replaces
the forward call and the sampling step.

    python examples/rllib_ports/policy_inference_after_training.py [--explore-during-inference]
"""

from __future__ import annotations

import tempfile

import gymnasium as gym
from _loop import build_algo, example_args, train_until

from lightning_rl import Policy, PPOConfig


def extra(parser) -> None:
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--explore-during-inference", action="store_true")
    parser.add_argument("--num-episodes-during-inference", type=int, default=10)


def main(argv=None) -> dict:
    args = example_args(
        default_iters=100, default_timesteps=100000, default_reward=200.0, argv=argv, extra=extra
    )
    base_config = PPOConfig().environment(args.env)

    print("Training policy until desired reward/timesteps/iterations. ...")
    algo = build_algo(base_config, args)
    summary = train_until(algo, "policy_inference_after_training", args, stop_algo=False)
    checkpoint = algo.save(tempfile.mkdtemp(prefix="rllib_port_inference_"))
    algo.stop()

    print("Training completed. Restoring the trained policy for action inference.")
    policy = Policy.from_checkpoint(checkpoint)

    env = gym.make(args.env)
    obs, _ = env.reset()
    num_episodes, episode_return, returns = 0, 0.0, []
    while num_episodes < args.num_episodes_during_inference:
        action = policy.compute_single_action(obs, explore=args.explore_during_inference)
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += reward
        if terminated or truncated:
            print(f"Episode done: Total reward = {episode_return}")
            returns.append(episode_return)
            obs, _ = env.reset()
            num_episodes += 1
            episode_return = 0.0
    print(f"Done performing action inference through {num_episodes} Episodes")
    summary["inference_return_mean"] = sum(returns) / len(returns)
    print(summary)
    return summary


if __name__ == "__main__":
    main()
