"""Port of RLlib's ``examples/rl_modules/action_masking_rl_module.py`` (new API stack).

The RLModule subclasses RLlib's default PPO module, strips the ``action_mask`` off the Dict
observation before the default forward passes and pushes the logits of illegal actions to
``FLOAT_MIN`` after them; ``compute_values`` (what GAE and the value loss call first) leaves the
mask in the batch for ``_forward_train``, as in RLlib. The env is RLlib's ``ActionMaskEnv``: a
random env whose ``step`` raises on an illegal action. RLlib's target: 10 iterations (40k env
steps) without an illegal action; the return is random (~0, the env pays random rewards).

What changed against RLlib: the imports, and RLlib's script helpers (argparse/Tune) replaced
by a plain ``algo.train()`` loop with the same stop criteria (10 iterations, 100k env steps,
return 150).

    python examples/rllib_ports/action_masking_rl_module.py [--iterations N] [--train-batch-size B]
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
from gymnasium.spaces import Box, Dict, Discrete

from lightning_rl import PPOConfig
from lightning_rl.modules.ppo_rl_module import PPOTorchRLModule
from lightning_rl.modules.rl_module import (
    FLOAT_MIN,
    Columns,
    RLModule,
    RLModuleSpec,
    ValueFunctionAPI,
    override,
)


class ActionMaskEnv(gym.Env):
    """Random observations and rewards; each step publishes which actions are legal next."""

    def __init__(self, config: dict | None = None) -> None:
        config = config or {}
        self.action_space = config.get("action_space", Discrete(2))
        inner = config.get("observation_space", Box(-1.0, 1.0, (5,)))
        self.observation_space = Dict(
            {"action_mask": Box(0.0, 1.0, shape=(self.action_space.n,)), "observations": inner}
        )
        self.p_terminated = float(config.get("p_terminated", 0.1))
        self.valid_actions = None

    def _observe(self) -> dict:
        obs = self.observation_space.sample()
        obs["action_mask"] = np.round(obs["action_mask"])  # > 0.5: legal
        self.valid_actions = obs["action_mask"]
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(seed)
        return self._observe(), {}

    def step(self, action):
        if not self.valid_actions[action]:
            raise ValueError(f"Invalid action ({action}) sent to env! valid_actions={self.valid_actions}")
        terminated = bool(self.np_random.random() < self.p_terminated)
        reward = float(self.np_random.uniform(-1.0, 1.0))
        return self._observe(), reward, terminated, False, {}


class ActionMaskingRLModule(RLModule):
    """Checks the Dict observation and builds the networks for its ``observations`` part only."""

    @override(RLModule)
    def __init__(
        self,
        *,
        observation_space=None,
        action_space=None,
        inference_only=None,
        learner_only=False,
        model_config=None,
        catalog_class=None,
        **kwargs,
    ):
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ValueError(
                "This RLModule needs a Dict observation space with 'action_mask' and 'observations'."
            )
        self.observation_space_with_mask = observation_space
        self.observation_space = observation_space["observations"]
        self._checked_observations = False
        super().__init__(
            observation_space=self.observation_space,
            action_space=action_space,
            inference_only=inference_only,
            learner_only=learner_only,
            model_config=model_config,
            catalog_class=catalog_class,
        )


class ActionMaskingTorchRLModule(ActionMaskingRLModule, PPOTorchRLModule):
    @override(PPOTorchRLModule)
    def setup(self):
        super().setup()
        self.observation_space = self.observation_space_with_mask

    @override(PPOTorchRLModule)
    def _forward_inference(self, batch, **kwargs):
        action_mask, batch = self._preprocess_batch(batch)
        return self._mask_action_logits(super()._forward_inference(batch, **kwargs), action_mask)

    @override(PPOTorchRLModule)
    def _forward_exploration(self, batch, **kwargs):
        action_mask, batch = self._preprocess_batch(batch)
        return self._mask_action_logits(super()._forward_exploration(batch, **kwargs), action_mask)

    @override(PPOTorchRLModule)
    def _forward_train(self, batch, **kwargs):
        outs = super()._forward_train(batch, **kwargs)
        return self._mask_action_logits(outs, batch["action_mask"])

    @override(ValueFunctionAPI)
    def compute_values(self, batch, embeddings=None):
        if isinstance(batch[Columns.OBS], dict):
            action_mask, batch = self._preprocess_batch(batch)
            batch["action_mask"] = action_mask  # read by _forward_train on this batch
        return super().compute_values(batch, embeddings)

    def _preprocess_batch(self, batch, **kwargs):
        self._check_batch(batch)
        action_mask = batch[Columns.OBS].pop("action_mask")
        batch[Columns.OBS] = batch[Columns.OBS].pop("observations")
        return action_mask, batch

    def _mask_action_logits(self, batch, action_mask):
        inf_mask = torch.clamp(torch.log(action_mask), min=FLOAT_MIN)
        batch[Columns.ACTION_DIST_INPUTS] += inf_mask
        return batch

    def _check_batch(self, batch):
        if not self._checked_observations:
            for key in ("action_mask", "observations"):
                if key not in batch[Columns.OBS]:
                    raise ValueError(f"No {key!r} found in the observation dict.")
            self._checked_observations = True


def build_config(
    train_batch_size: int | None = None, num_env_runners: int | None = None, evaluation: bool = True
) -> PPOConfig:
    config = (
        PPOConfig()
        .environment(
            env=ActionMaskEnv,
            env_config={"action_space": Discrete(100), "observation_space": Box(-1.0, 1.0, (5,))},
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=ActionMaskingTorchRLModule,
                model_config={"head_fcnet_hiddens": [64, 64], "head_fcnet_activation": "relu"},
            ),
        )
    )
    if evaluation:
        config.evaluation(
            evaluation_num_env_runners=1,
            evaluation_interval=1,
            # Run evaluation parallel to training to speed up the example.
            evaluation_parallel_to_training=True,
        )
    if num_env_runners is not None:
        config.env_runners(num_env_runners=num_env_runners)
    if train_batch_size is not None:
        config.training(train_batch_size=train_batch_size, minibatch_size=min(128, train_batch_size))
    return config


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=10)  # RLlib: default_iters=10
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--reward", type=float, default=150.0)
    parser.add_argument("--train-batch-size", type=int, default=None)
    parser.add_argument("--num-env-runners", type=int, default=None)
    parser.add_argument("--no-evaluation", action="store_true")
    args = parser.parse_args(argv)
    config = build_config(args.train_batch_size, args.num_env_runners, not args.no_evaluation)
    algo = config.build_algo()
    start, result = time.perf_counter(), {}
    try:
        for _ in range(args.iterations):
            result = algo.train()  # ActionMaskEnv raises on any illegal action
            ret = result["env_runners"]["episode_return_mean"]
            if result["num_env_steps_sampled_lifetime"] >= args.timesteps or ret >= args.reward:
                break
    finally:
        algo.stop()
    summary = {
        "example": "action_masking_rl_module",
        "iterations": result["training_iteration"],
        "env_steps": result["num_env_steps_sampled_lifetime"],
        "episode_return_mean": result["env_runners"]["episode_return_mean"],
        "illegal_actions": 0,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
