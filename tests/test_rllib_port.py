"""RLlib code that ports by changing imports: evaluate() around train(), policy mapping with
RLlib's episode object, connector factories of RLlib 2.4x, and small boards that are not images."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo.classic import tictactoe_v3

from lightning_rl import PPOConfig, register_env, registry
from lightning_rl.algorithms.multi_agent import policy_spaces_from_env
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.connectors import FlattenObservations, FrameStack, MeanStdFilter
from lightning_rl.connectors.base import normalize_connector_specs
from lightning_rl.connectors.learner import CountBasedCuriosity
from lightning_rl.env_runners.multi_agent_env_runner import Episode, MultiAgentEnvRunner
from lightning_rl.envs.classes import MultiAgentCartPole
from lightning_rl.envs.wrappers import PettingZooEnv
from lightning_rl.errors import ConfigError
from lightning_rl.modules.encoders import CNNEncoder, MLPEncoder, build_encoder, is_image_like
from lightning_rl.modules.model_config import resolve_model_config


def small_cartpole_config(tmp_path) -> PPOConfig:
    return (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .training(train_batch_size=128, minibatch_size=64, num_epochs=1)
        .trainer(default_root_dir=str(tmp_path), logger=False)
    )


# -- item 2: evaluate() ----------------------------------------------------------------------------
def test_evaluate_then_train_with_in_process_evaluation(tmp_path):
    algo = (
        small_cartpole_config(tmp_path)
        .evaluation(evaluation_interval=1, evaluation_num_env_runners=0, evaluation_duration=2)
        .build_algo()
    )
    try:
        before = algo.evaluate()
        result = algo.train()  # crashed: "Inplace update to inference tensor outside InferenceMode"
        after = algo.evaluate()
        again = algo.train()
    finally:
        algo.stop()
    assert before["num_episodes"] == 2 and after["num_episodes"] == 2
    assert result["evaluation"]["num_episodes"] == 2
    assert again["training_iteration"] == 2


def test_evaluate_without_evaluation_settings_evaluates_with_the_defaults(tmp_path):
    """RLlib's ``algo.evaluate()`` evaluates even with ``evaluation_interval=None``."""
    algo = small_cartpole_config(tmp_path).build_algo()
    try:
        evaluation = algo.evaluate()  # was: IndexError: list index out of range
        result = algo.train()
    finally:
        algo.stop()
    assert evaluation["num_episodes"] == 10  # evaluation_duration's default
    assert evaluation["env_runners"]["episode_return_mean"] == evaluation["episode_return_mean"] > 0
    assert "evaluation" not in result  # periodic evaluation stays off


# -- item 3: policy mapping ------------------------------------------------------------------------
def test_rllib_self_play_mapping_reads_episode_id_and_is_never_called_without_an_episode():
    calls = []

    def mapping(agent_id, episode, **kwargs):
        calls.append(episode)
        # RLlib's self-play examples: seats alternate between episodes.
        return "main" if hash(episode.id_) % 2 == agent_id else "opponent"

    algo = PPO(
        MultiAgentCartPole,
        policies={"main", "opponent"},
        policy_mapping_fn=mapping,
        train_batch_size=64,
        minibatch_size=32,
    )
    assert calls == []  # equal spaces: nothing to map at build time
    runner = MultiAgentEnvRunner(algo.env_runner_spec(num_envs=2))
    runner.sample(60, state=algo.policy_state())
    episodes = {episode.id_: episode for episode in calls}
    assert all(episode is not None for episode in calls) and len(episodes) >= 2
    for episode in episodes.values():
        assert episode.id == episode.id_
        main_seat = [agent for agent, policy in episode.mapping.items() if policy == "main"]
        assert main_seat == [hash(episode.id_) % 2]
    assert {0, 1} == {hash(episode_id) % 2 for episode_id in episodes}


def test_mapping_is_called_with_episode_none_only_when_spaces_differ():
    env = MultiAgentCartPole({"num_agents": 2})
    env.observation_spaces[1] = spaces.Box(-1.0, 1.0, (7,), np.float32)
    calls = []

    def mapping(agent_id, episode, **kwargs):
        calls.append((agent_id, episode))
        return f"p{agent_id}"

    found, agent_policies = policy_spaces_from_env(env, {"p0": None, "p1": None}, mapping)
    assert calls == [(0, None), (1, None)]
    assert found["p1"][0].shape == (7,) and found["p0"][0].shape == (4,)
    assert agent_policies == {0: "p0", 1: "p1"}
    assert Episode(id_=7).id == 7


# -- item 7: connector factories -------------------------------------------------------------------
def test_rllib_24x_connector_factories_get_what_their_signature_asks_for():
    seen = {}

    def env_to_module(env, spaces_, device):
        seen["env"], seen["spaces"], seen["device"] = env, spaces_, device
        return [FlattenObservations(), MeanStdFilter(multi_agent=False)]

    def learner(input_observation_space, input_action_space):
        seen["learner"] = (input_observation_space, input_action_space)
        return CountBasedCuriosity()

    algo = PPO(
        "FrozenLake-v1",
        {"is_slippery": False},
        env_to_module_connector=env_to_module,
        learner_connector=learner,
        train_batch_size=64,
        minibatch_size=32,
    )
    assert isinstance(seen["env"], gym.Env)
    assert seen["spaces"]["__env__"] == (spaces.Discrete(16), spaces.Discrete(4))
    assert seen["spaces"]["__env_single__"] == seen["spaces"]["__env__"]
    assert seen["device"] == torch.device("cpu")
    # The learner factory sees the module-side spaces (after the env-to-module connectors).
    assert seen["learner"][0].shape == (16,) and seen["learner"][1] == spaces.Discrete(4)
    assert [spec["name"] for spec in algo.hparams.env_to_module_connector] == [
        "FlattenObservations",
        "MeanStdFilter",
    ]
    assert [spec["name"].rsplit(":")[-1] for spec in algo.hparams.learner_connector] == [
        "CountBasedCuriosity"
    ]
    # Every other factory shape RLlib users write.
    for factory in (
        lambda: FlattenObservations(),
        lambda env: FlattenObservations(),
        lambda *args, **kwargs: FlattenObservations(),
        lambda env, spaces_=None, device=None: FlattenObservations(),
    ):
        assert normalize_connector_specs(factory, factory_args=(None, {}, "cpu")) == [
            {"name": "FlattenObservations", "config": {"keys_to_flatten": None}}
        ]


def test_a_factory_asking_for_more_than_rllib_passes_or_failing_inside_is_reported_as_such():
    with pytest.raises(ConfigError, match=r"needs 4 arguments \(a, b, c, d\).*\(env, spaces, device\)"):
        normalize_connector_specs(lambda a, b, c, d: None, factory_args=(None, {}, "cpu"))

    def broken(env, spaces_, device):
        raise TypeError("a bug inside the factory")

    with pytest.raises(TypeError, match="a bug inside the factory"):
        normalize_connector_specs(broken, factory_args=(None, {}, "cpu"))


def test_multi_agent_connector_arguments_of_rllib_are_accepted_and_train(tmp_path):
    run = (
        PPOConfig()
        .environment(MultiAgentCartPole)
        .env_runners(
            num_env_runners=0,
            env_to_module_connector=lambda env, spaces_, device: [
                MeanStdFilter(multi_agent=True),
                FrameStack(num_frames=2, multi_agent=True),
            ],
        )
        .training(train_batch_size=128, minibatch_size=64, num_epochs=1)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        result = run.train()
    finally:
        run.stop()
    configs = [spec["config"] for spec in run.algorithm.hparams.env_to_module_connector]
    assert configs == [{"clip": 10.0, "epsilon": 1e-8}, {"num_frames": 2}]
    assert run.algorithm.policy_spaces["default_policy"][0].shape == (8,)
    assert result["num_env_steps_sampled_lifetime"] == 128


# -- item 9: small 3-D observations are not images -------------------------------------------------
def test_small_3d_observations_go_to_the_mlp_and_images_to_the_cnn():
    config = resolve_model_config(None)
    board = build_encoder(spaces.Box(0, 1, (3, 3, 2), np.int8), config)
    assert isinstance(board, MLPEncoder)
    assert board(torch.ones(5, 3, 3, 2, dtype=torch.int8)).shape == (5, 64)
    assert not is_image_like((3, 3, 2)) and not is_image_like((6, 7, 2)) and not is_image_like((2, 35, 35))
    assert is_image_like((4, 84, 84)) and is_image_like((64, 64, 3)) and is_image_like((1, 36, 36))
    assert isinstance(build_encoder(spaces.Box(0, 255, (4, 84, 84), np.uint8), config), CNNEncoder)
    # An explicit conv stack is the user's choice, whatever the size.
    own = resolve_model_config({"conv_filters": [[8, 2, 1]]})
    assert isinstance(build_encoder(spaces.Box(0, 1, (2, 3, 3), np.float32), own), CNNEncoder)


def test_pettingzoo_tictactoe_trains_through_the_adapter_without_flattening(tmp_path):
    register_env("ttt-port", lambda _: PettingZooEnv(tictactoe_v3.env()))
    try:
        run = (
            PPOConfig()
            .environment("ttt-port")
            .env_runners(num_env_runners=0)
            .training(train_batch_size=128, minibatch_size=64, num_epochs=1)
            .trainer(default_root_dir=str(tmp_path), logger=False)
            .build_algo()
        )
        try:
            result = run.train()  # was: "Kernel size can't be greater than actual input size"
        finally:
            run.stop()
    finally:
        registry.envs.unregister("ttt-port")
    assert isinstance(run.algorithm.policies["default_policy"].policy_net.encoder, MLPEncoder)
    assert result["num_env_steps_sampled_lifetime"] == 128
