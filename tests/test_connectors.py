"""Connectors: flattening every space kind, mean-std statistics and merging, action mapping, specs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from lightning_rl import registry
from lightning_rl._tree import to_torch
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.connectors import (
    ClipActions,
    EnvToModulePipeline,
    FlattenObservations,
    MeanStdFilter,
    ModuleToEnvPipeline,
    UnsquashActions,
    build_connector,
    connector_spec,
    normalize_connector_specs,
)
from lightning_rl.errors import ConfigError, SpaceError


def flatten(space: gym.Space, batch):
    connector = FlattenObservations()
    out_space = connector.setup(space)
    out = connector(to_torch(batch))
    assert out.shape == (out.shape[0], *out_space.shape)
    return out


def test_flatten_discrete_is_one_hot():
    out = flatten(spaces.Discrete(4), np.array([0, 3, 2]))
    assert out.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]


def test_flatten_discrete_with_start_offset():
    out = flatten(spaces.Discrete(3, start=-1), np.array([-1, 1]))
    assert out.tolist() == [[1, 0, 0], [0, 0, 1]]


def test_flatten_multidiscrete_concatenates_one_hots():
    out = flatten(spaces.MultiDiscrete([2, 3]), np.array([[1, 2], [0, 0]]))
    assert out.tolist() == [[0, 1, 0, 0, 1], [1, 0, 1, 0, 0]]


def test_flatten_box_image_and_multibinary():
    assert flatten(spaces.Box(0, 1, (2, 3)), np.ones((4, 2, 3), np.float32)).shape == (4, 6)
    assert flatten(spaces.MultiBinary(3), np.array([[1, 0, 1]], np.int8)).tolist() == [[1.0, 0.0, 1.0]]


def test_flatten_dict_and_tuple_in_space_order():
    space = spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Box(-1, 1, (2,))})
    out = flatten(space, {"a": np.array([1]), "b": np.array([[0.5, -0.5]], np.float32)})
    assert out.tolist() == [[0.0, 1.0, 0.5, -0.5]]
    tup = spaces.Tuple((spaces.Discrete(2), spaces.Box(-1, 1, (1,))))
    out = flatten(tup, (np.array([0]), np.array([[0.25]], np.float32)))
    assert out.tolist() == [[1.0, 0.0, 0.25]]


def test_flatten_only_some_keys_of_a_dict():
    space = spaces.Dict({"pos": spaces.Discrete(3), "img": spaces.Box(0, 255, (2, 2, 1), np.uint8)})
    connector = FlattenObservations(keys_to_flatten=["pos"])
    out_space = connector.setup(space)
    assert out_space["pos"].shape == (3,) and out_space["img"] == space["img"]
    with pytest.raises(SpaceError, match="missing"):
        FlattenObservations(keys_to_flatten=["missing"]).setup(space)


def test_mean_std_filter_normalises_with_running_statistics():
    connector = MeanStdFilter(clip=None)
    connector.setup(spaces.Box(-np.inf, np.inf, (2,), np.float32))
    data = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])
    out = connector(data)
    mean, std = data.double().mean(0), data.double().std(0, unbiased=False)
    assert torch.allclose(out, ((data - mean) / std).float(), atol=1e-5)


def test_mean_std_deltas_from_runners_merge_to_the_global_statistics():
    space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    runners = [MeanStdFilter(), MeanStdFilter()]
    for r in runners:
        r.setup(space)
    batches = [torch.randn(50, 3) * 2 + 1, torch.randn(70, 3) - 4]
    for runner, batch in zip(runners, batches, strict=True):
        runner(batch)
    merged = MeanStdFilter.merge_deltas({}, [r.pop_delta() for r in runners])
    everything = torch.cat(batches).double()
    assert merged["count"] == 120
    assert torch.allclose(merged["mean"], everything.mean(0))
    assert torch.allclose(merged["m2"] / merged["count"], everything.var(0, unbiased=False))
    # A runner that loads the merged state starts a fresh delta.
    runners[0].set_state(merged)
    assert runners[0].pop_delta() is None


def test_mean_std_filter_keeps_observations_not_yet_reported_when_a_state_arrives():
    space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    driver, runner = MeanStdFilter(clip=None), MeanStdFilter(clip=None)
    driver.setup(space)
    runner.setup(space)
    reported = torch.randn(40, 2) * 3 + 2
    driver(reported)
    global_state = driver.get_state()
    unreported = torch.randn(30, 2) - 5
    runner(unreported)
    runner.set_state(global_state)
    # The new statistics cover both the global state and this runner's unreported observations...
    everything = torch.cat([reported, unreported]).double()
    assert runner.get_state()["count"] == 70
    assert torch.allclose(runner.get_state()["mean"], everything.mean(0))
    # ...and those observations are still reported once, so the driver's merge counts them.
    delta = runner.pop_delta()
    assert delta["count"] == 30 and torch.allclose(delta["mean"], unreported.double().mean(0))
    merged = MeanStdFilter.merge_deltas(global_state, [delta])
    assert merged["count"] == 70
    assert torch.allclose(merged["m2"] / 70, everything.var(0, unbiased=False))
    assert runner.pop_delta() is None


def test_mean_std_filter_rejects_non_box_spaces():
    with pytest.raises(SpaceError, match="FlattenObservations"):
        MeanStdFilter().setup(spaces.Discrete(3))


def test_unsquash_and_clip_actions():
    space = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32), dtype=np.float32)
    unsquash = UnsquashActions()
    assert unsquash.setup(space) == spaces.Box(-1.0, 1.0, (2,), np.float32)
    out = unsquash(torch.tensor([[-1.0, 1.0], [0.0, 0.0], [5.0, -5.0]]))
    assert out.tolist() == [[-2.0, 10.0], [0.0, 5.0], [2.0, 0.0]]
    clip = ClipActions()
    clip.setup(space)
    assert clip(torch.tensor([[-3.0, 11.0]])).tolist() == [[-2.0, 10.0]]
    with pytest.raises(SpaceError, match="Box"):
        ClipActions().setup(spaces.Discrete(2))


def test_module_to_env_pipeline_reports_the_module_action_space():
    space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    pipeline = ModuleToEnvPipeline([UnsquashActions()], space)
    assert pipeline.module_action_space == spaces.Box(-1.0, 1.0, (1,), np.float32)


def test_specs_round_trip_through_plain_data_and_the_registry():
    spec = connector_spec(MeanStdFilter(clip=5.0))
    assert spec == {"name": "MeanStdFilter", "config": {"clip": 5.0, "epsilon": 1e-8}}
    rebuilt = build_connector(spec)
    assert isinstance(rebuilt, MeanStdFilter) and rebuilt.clip == 5.0
    assert isinstance(build_connector({"name": "flattenobservations"}), FlattenObservations)


def test_user_forms_normalise_to_specs():
    env = gym.make("CartPole-v1")
    assert normalize_connector_specs(lambda env: FlattenObservations(), env) == [
        {"name": "FlattenObservations", "config": {"keys_to_flatten": None}}
    ]
    assert normalize_connector_specs(["MeanStdFilter"], env) == [{"name": "MeanStdFilter", "config": {}}]
    assert normalize_connector_specs(
        {"class_path": "lightning_rl.connectors.MeanStdFilter", "init_args": {"clip": 3.0}}
    ) == [{"name": "lightning_rl.connectors.MeanStdFilter", "config": {"clip": 3.0}}]
    assert normalize_connector_specs(None) == []


def test_pipeline_chains_spaces_and_rejects_misfits():
    pipeline = EnvToModulePipeline([FlattenObservations(), MeanStdFilter()], spaces.Discrete(5))
    assert pipeline.output_space.shape == (5,)
    with pytest.raises(SpaceError, match="MeanStdFilter needs a float Box"):
        EnvToModulePipeline([MeanStdFilter()], spaces.Discrete(5))


def test_prev_actions_prev_rewards_appends_history_and_forgets_it_at_episode_starts():
    from lightning_rl.connectors import PrevActionsPrevRewards

    pipeline = EnvToModulePipeline(
        [PrevActionsPrevRewards(n_prev_actions=2, n_prev_rewards=1)],
        spaces.Box(-1, 1, (1,)),
        spaces.Discrete(3),
    )
    assert pipeline.output_space.shape == (1 + 2 * 3 + 1,)
    pipeline.reset(2)
    pipeline.record_step(torch.tensor([2, 0]), torch.tensor([1.0, -1.0]))
    pipeline.record_step(torch.tensor([1, 1]), torch.tensor([0.5, 0.0]))
    out = pipeline(torch.zeros(2, 1))
    assert out[0].tolist() == [0.0, 0, 0, 1, 0, 1, 0, 0.5]  # older action 2, newer action 1, last reward
    pipeline.episode_start(torch.tensor([1]))
    assert pipeline(torch.zeros(2, 1))[1].tolist() == [0.0] * 8
    with pytest.raises(SpaceError, match="needs the env's action space"):
        EnvToModulePipeline([PrevActionsPrevRewards()], spaces.Box(-1, 1, (1,)))


def test_lstm_use_prev_action_adds_the_connector():
    from lightning_rl.algorithms.ppo import PPO

    algo = PPO(
        "CartPole-v1",
        model_config={"use_lstm": True, "lstm_use_prev_action": True, "lstm_use_prev_reward": True},
    )
    assert algo.hparams.env_to_module_connector[-1] == {
        "name": "PrevActionsPrevRewards",
        "config": {"n_prev_actions": 1, "n_prev_rewards": 1},
    }
    assert algo.observation_space.shape == (4 + 2 + 1,)


def test_extension_bases_name_the_hook_a_subclass_forgot_when_it_is_built():
    from lightning_rl.algorithms.policy_module import PolicyModule
    from lightning_rl.connectors.base import EnvToModule
    from lightning_rl.envs.multi_agent import MultiAgentEnv

    class ForgotCall(EnvToModule):
        pass

    class ForgotStep(MultiAgentEnv):
        def reset(self, *, seed=None, options=None):
            return {}, {}

    class ForgotWeights(PolicyModule):
        def policy_spec(self):
            return None

    with pytest.raises(TypeError, match="__call__"):
        ForgotCall()
    with pytest.raises(TypeError, match="step"):
        ForgotStep()
    with pytest.raises(TypeError, match="policy_weights"):
        ForgotWeights(None, None, None)


@pytest.mark.parametrize(
    ("setting", "name", "message"),
    [
        (
            "env_to_module_connector",
            "NormalizeRewards",
            "is a learner connector: pass it as learner_c",
        ),
        (
            "learner_connector",
            "MeanStdFilter",
            "is an env-to-module connector: pass it as env_",
        ),
        ("module_to_env_connector", "FrameStack", "FrameStack is an env-to-module connector"),
        ("env_to_module_connector", "ClipActions", "ClipActions is a module-to-env connector"),
    ],
)
def test_a_connector_given_to_the_wrong_setting_is_one_clear_error(setting, name, message):
    with pytest.raises(ConfigError, match=message):
        PPO("CartPole-v1", num_env_runners=0, **{setting: [name]})


def test_learner_connectors_resolve_by_registered_name():
    """The shipped learner connectors are entry points, like the env-to-module ones."""
    names = ["NormalizeRewards", "countbasedcuriosity"]
    algo = PPO("CartPole-v1", num_env_runners=0, learner_connector=names)
    assert [type(c).__name__ for c in algo.learner_connectors["default_policy"]] == [
        "NormalizeRewards",
        "CountBasedCuriosity",
    ]
    assert {"NormalizeRewards", "CountBasedCuriosity", "RND"} <= set(registry.connectors.names())
