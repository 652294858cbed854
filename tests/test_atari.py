"""Atari preprocessing (shapes, dtypes) and the FrameStack connector (exact, through runner and Policy)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from gymnasium import spaces

from lightning_rl.algorithms.appo import APPO
from lightning_rl.algorithms.impala import IMPALA
from lightning_rl.connectors import EnvToModulePipeline
from lightning_rl.connectors.frame_stack import FrameStack
from lightning_rl.env_runners import EnvRunner
from lightning_rl.envs import make_env
from lightning_rl.errors import ConfigError, EnvError, SpaceError
from lightning_rl.modules import CNNEncoder
from tests.envs import CountingEnv

PONG = {"id": "ale_py:ALE/Pong-v5", "repeat_action_probability": 0.0}


# -- the env ---------------------------------------------------------------------------------
def test_pong_is_preprocessed_to_84x84_grayscale_uint8_channel_first():
    env = make_env("Atari", PONG)
    assert env.observation_space == spaces.Box(0, 255, (1, 84, 84), np.uint8)
    assert env.action_space == spaces.Discrete(6)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1, 84, 84) and obs.dtype == np.uint8
    for _ in range(3):
        obs, *_ = env.step(0)
    assert obs.shape == (1, 84, 84) and obs.dtype == np.uint8 and obs.max() > obs.min()
    env.close()


def test_64x64_frames_and_env_side_frame_stacking():
    env = make_env("Atari", {**PONG, "screen_size": 64, "frame_stack": 4})
    assert env.observation_space.shape == (4, 64, 64) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 64, 64) and obs.dtype == np.uint8
    env.close()


def test_the_emulator_must_not_skip_frames_itself():
    with pytest.raises(EnvError, match="frameskip must stay 1, got 4"):
        make_env("Atari", {**PONG, "frameskip": 4})


def test_frame_stack_connector_keeps_uint8_and_feeds_the_nature_cnn():
    space = spaces.Box(0, 255, (1, 84, 84), np.uint8)
    pipeline = EnvToModulePipeline([FrameStack(4)], space)
    assert pipeline.output_space == spaces.Box(0, 255, (4, 84, 84), np.uint8)
    algo = APPO("Atari", PONG, env_to_module_connector=FrameStack(4), model_config={"vf_share_layers": True})
    encoder = algo.module.policy_net.encoder
    assert isinstance(encoder, CNNEncoder) and not encoder.channels_last
    assert [layer.out_channels for layer in encoder.conv if isinstance(layer, torch.nn.Conv2d)] == [
        32,
        64,
        64,
    ]
    assert algo.module.value_net.encoder is encoder


def test_conv_filters_from_model_config():
    algo = APPO(
        "Atari",
        {**PONG, "screen_size": 64},
        env_to_module_connector=FrameStack(4),
        model_config={"conv_filters": [[16, 4, 2], [32, 4, 2], [64, 4, 2]], "fcnet_hiddens": [128]},
    )
    convs = [m for m in algo.module.policy_net.encoder.conv if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (16, 4, 2),
        (32, 4, 2),
        (64, 4, 2),
    ]


def test_appo_samples_and_learns_a_few_steps_of_pong_with_uint8_observations(tmp_path):
    algo = APPO(
        "Atari",
        PONG,
        env_to_module_connector=FrameStack(4),
        num_envs_per_env_runner=2,
        rollout_fragment_length=8,
        train_batch_size=16,
        model_config={"vf_share_layers": True},
        seed=0,
    )
    runner = EnvRunner(algo.env_runner_spec(num_envs=2))
    result = runner.sample(8, state=algo.policy_state())
    obs = result.data["observation"]
    assert obs.shape == (2, 8, 4, 84, 84) and obs.dtype == torch.uint8
    assert result.data["next"]["observation"].dtype == torch.uint8
    runner.stop()
    trainer = pl.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(algo)
    assert trainer.global_step == 2  # one batch, learned from twice (circular buffer)
    assert torch.isfinite(trainer.callback_metrics["learners/default_policy/total_loss"])


# -- FrameStack semantics --------------------------------------------------------------------
def frames(stacked: torch.Tensor) -> list[list[float]]:
    """CountingEnv frames are [vector_index, t]; keep the t of each stacked frame."""
    return stacked.reshape(*stacked.shape[:-1], -1, 2)[..., 1].tolist()


def test_frame_stack_in_the_runner_restarts_at_episode_ends_and_stacks_final_observations():
    algo = IMPALA(CountingEnv, {"lengths": [3, 5]}, env_to_module_connector=FrameStack(3))
    assert algo.observation_space.shape == (6,)
    runner = EnvRunner(algo.env_runner_spec(num_envs=1))
    data = runner.sample(6, state=algo.policy_state()).data
    assert frames(data["observation"][0]) == [
        [0, 0, 0],
        [0, 0, 1],
        [0, 1, 2],
        [0, 0, 0],
        [0, 0, 1],
        [0, 1, 2],
    ]
    # the step ending episode 0 (length 3) sees its final observation stacked on its own frames
    assert frames(data["next"]["observation"][0]) == [
        [0, 0, 1],
        [0, 1, 2],
        [1, 2, 3],
        [0, 0, 1],
        [0, 1, 2],
        [1, 2, 3],
    ]
    assert data["next"]["done"][0, :, 0].tolist() == [False, False, True, False, False, False]
    # episodes carry over between sample calls
    data = runner.sample(2, state=None).data
    assert frames(data["observation"][0]) == [[1, 2, 3], [2, 3, 4]]
    runner.stop()


def test_the_policy_inference_path_stacks_frames_and_restarts_them_per_row():
    algo = IMPALA(CountingEnv, env_to_module_connector=FrameStack(2))
    policy = algo.get_policy()
    seen = []
    for t, start in [(0, False), (1, False), (2, False), (0, True)]:
        obs = np.array([[0.0, t], [1.0, 10 + t]], dtype=np.float32)
        _, info = policy.compute_actions(obs, episode_start=[start, False], return_info=True)
        seen.append(frames(torch.from_numpy(info["observation"])))
    assert [rows[0] for rows in seen] == [[0, 0], [0, 1], [1, 2], [0, 0]]  # row 0 restarted at the end
    assert [rows[1] for rows in seen] == [[10, 10], [10, 11], [11, 12], [12, 10]]


def test_frame_stack_rejects_bad_settings_with_one_clear_error():
    with pytest.raises(ConfigError, match="num_frames must be a positive integer"):
        FrameStack(0)
    with pytest.raises(SpaceError, match="looks channel-last"):
        EnvToModulePipeline([FrameStack(4)], spaces.Box(0, 255, (84, 84, 3), np.uint8))
    with pytest.raises(SpaceError, match="needs a Box observation space"):
        EnvToModulePipeline([FrameStack(4)], spaces.Discrete(3))
