"""Train, save, and use the policy outside lightning-rl: Policy.from_checkpoint and ONNX.

    python examples/inference_after_training.py [--iterations 30] [--out runs/inference_example]

Trains PPO on CartPole-v1 with a MeanStdFilter observation connector, saves a checkpoint,
then plays episodes in a plain gymnasium env twice: with ``lightning_rl.Policy`` (which
applies the filter with its saved statistics, exactly as the evaluation runners do) and with
the exported ONNX file in onnxruntime (the filter baked into the graph). Both act the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

from lightning_rl import Policy, export_policy
from lightning_rl.algorithms.ppo import PPOConfig


def train(iterations: int, out: Path) -> str:
    config = (
        PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8, env_to_module_connector=["MeanStdFilter"])
        .training(train_batch_size=256, minibatch_size=256, num_epochs=20, lr=1e-3, gamma=0.98, lambda_=0.8)
        .debugging(seed=0)
        .trainer(default_root_dir=str(out))
    )
    algo = config.build_algo()
    for _ in range(iterations):
        result = algo.train()
    print(
        f"trained {result['num_env_steps_sampled_lifetime']} env steps, "
        f"training return {result['env_runners']['episode_return_mean']:.1f}"
    )
    path = algo.save(out / "checkpoint")
    algo.stop()
    return path


def play(act, episodes: int, seed: int) -> list[float]:
    """Episode returns of ``act(obs) -> action`` in a fresh gymnasium env."""
    env = gym.make("CartPole-v1")
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/inference_example"))
    args = parser.parse_args()

    checkpoint = train(args.iterations, args.out)

    # 1. The one inference path: connectors (with their saved state) + policy + action connectors.
    policy = Policy.from_checkpoint(checkpoint)
    print(policy)
    policy_returns = play(policy.compute_single_action, args.episodes, seed=100)

    # 2. The same policy as a self-contained ONNX file.
    import onnxruntime as ort

    onnx_path = export_policy(policy, args.out / "policy.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def onnx_act(obs: np.ndarray) -> int:
        return int(session.run(["action"], {"obs": obs[None].astype(np.float32)})[0][0])

    onnx_returns = play(onnx_act, args.episodes, seed=100)
    print(f"Policy returns: {policy_returns}")
    print(f"ONNX returns:   {onnx_returns}")
    print("identical" if policy_returns == onnx_returns else "DIFFERENT")


if __name__ == "__main__":
    main()
