"""EnvRunner and EnvRunnerGroup: layout, auto-reset, truncation, metrics, local and Ray modes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from lightning_rl.env_runners import EnvRunner, EnvRunnerGroup, EnvRunnerSpec
from lightning_rl.envs.registration import resolve_env
from lightning_rl.errors import EnvError
from lightning_rl.modules.policy_networks import PolicySpec, StochasticPolicy
from tests.envs import CountingEnv, FailingEnv
from tests.ray_helpers import actor_dies_within


def make_spec(env, env_config=None, num_envs=2, seed=0, connectors=None) -> EnvRunnerSpec:
    probe = resolve_env(env)(env_config or {})
    policy = PolicySpec(
        StochasticPolicy, {"observation_space": probe.observation_space, "action_space": probe.action_space}
    )
    return EnvRunnerSpec(
        resolve_env(env),
        policy,
        env_config=env_config or {},
        num_envs=num_envs,
        seed=seed,
        env_to_module=connectors or [],
    )


def test_fragment_layout_is_torchrl_keys_with_env_by_time_batch():
    runner = EnvRunner(make_spec("CartPole-v1", num_envs=3))
    result = runner.sample(7)
    data = result.data
    assert data["observation"].shape == (3, 7, 4)
    assert data["action"].shape == (3, 7) and data["action"].dtype == torch.int64
    assert data["action_log_prob"].shape == (3, 7)
    for key in ("reward", "terminated", "truncated", "done"):
        assert data["next"][key].shape == (3, 7, 1)
    assert data["next"]["observation"].shape == (3, 7, 4)
    assert result.stats.num_env_steps == 21


def test_auto_reset_stores_true_final_observation_and_reset_observation():
    runner = EnvRunner(make_spec(CountingEnv, {"lengths": [3, 5]}, num_envs=2))
    data = runner.sample(9).data
    # Copy 0 runs episodes of length 3, 5; copy 1 of length 5, 3 (index + episode).
    expected_done = {0: [2, 7], 1: [4, 7]}
    for env_index, done_steps in expected_done.items():
        terminated = data["next"]["terminated"][env_index, :, 0]
        assert torch.nonzero(terminated).flatten().tolist() == done_steps
        assert not data["next"]["truncated"][env_index].any()
        for t in done_steps:
            final = data["next"]["observation"][env_index, t]
            assert final[1] > 0, "the stored next observation at an episode end is the final one"
            if t + 1 < 9:
                assert data["observation"][env_index, t + 1, 1] == 0, (
                    "the next step starts from the reset obs"
                )
    # Wherever no episode ended, next observation == following observation.
    not_done = ~data["next"]["done"][:, :-1, 0]
    assert torch.equal(data["next"]["observation"][:, :-1][not_done], data["observation"][:, 1:][not_done])


def test_truncation_is_not_termination():
    runner = EnvRunner(make_spec(CountingEnv, {"lengths": [4], "terminate": False}, num_envs=1))
    data = runner.sample(8).data
    assert not data["next"]["terminated"].any()
    assert torch.nonzero(data["next"]["truncated"][0, :, 0]).flatten().tolist() == [3, 7]
    assert data["next"]["observation"][0, 3].tolist() == [0.0, 4.0]  # true final observation
    assert data["observation"][0, 4].tolist() == [0.0, 0.0]


def test_fragments_continue_episodes_across_sample_calls():
    runner = EnvRunner(make_spec(CountingEnv, {"lengths": [10]}, num_envs=1))
    first = runner.sample(3).data
    second = runner.sample(3).data
    assert first["observation"][0, :, 1].tolist() == [0, 1, 2]
    assert second["observation"][0, :, 1].tolist() == [3, 4, 5]


def test_episode_metrics_count_finished_episodes():
    runner = EnvRunner(make_spec(CountingEnv, {"lengths": [3, 5]}, num_envs=2))
    stats = runner.sample(8).stats
    assert sorted(stats.lengths) == [3, 3, 5, 5]
    assert sorted(stats.returns) == [3.0, 3.0, 5.0, 5.0]


def test_evaluate_runs_an_exact_quota_of_fresh_episodes():
    runner = EnvRunner(make_spec(CountingEnv, {"lengths": [3, 5]}, num_envs=2))
    runner.sample(2)  # mid-episode state must not leak into evaluation
    stats = runner.evaluate(5).stats
    assert len(stats.returns) == 5
    assert all(length in (3, 5) for length in stats.lengths)


def test_evaluation_stops_stepping_a_copy_once_its_episodes_are_counted():
    runner = EnvRunner(make_spec(CountingEnv, {"lengths": [3, 5]}, num_envs=2))
    stats = runner.evaluate(2).stats
    assert sorted(stats.lengths) == [3, 5] and stats.num_env_steps == 8
    # Copy 0's one episode ended after 3 steps: it was reset and then left alone while copy 1
    # played its 5, instead of playing 2 steps of an episode that would not count.
    first = runner.env.envs[0].unwrapped
    assert (first.episode, first.t) == (1, 0)
    # Training samples step every copy again, from fresh episodes.
    data = runner.sample(4).data
    assert data["observation"][:, :, 1].tolist() == [[0, 1, 2, 0], [0, 1, 2, 3]]


def test_runner_seeds_make_sampling_reproducible():
    a = EnvRunner(make_spec("CartPole-v1", num_envs=2, seed=3)).sample(20).data
    b = EnvRunner(make_spec("CartPole-v1", num_envs=2, seed=3)).sample(20).data
    c = EnvRunner(make_spec("CartPole-v1", num_envs=2, seed=4)).sample(20).data
    assert torch.equal(a["observation"], b["observation"]) and torch.equal(a["action"], b["action"])
    assert not torch.equal(a["observation"], c["observation"])


def test_weights_and_version_are_loaded_from_state():
    spec = make_spec("CartPole-v1", num_envs=2)
    runner = EnvRunner(spec)
    weights = {k: torch.zeros_like(v) for k, v in runner.policy.net.state_dict().items()}
    result = runner.sample(4, state={"version": 7, "policies": {"default_policy": {"weights": weights}}})
    assert result.weights_version == 7
    assert all(float(p.abs().sum()) == 0.0 for p in runner.policy.parameters())
    # Zero logits: both actions equally likely.
    assert torch.allclose(result.data["action_log_prob"], torch.full((2, 4), float(np.log(0.5))))


def test_env_error_names_the_env_and_the_method():
    runner = EnvRunner(make_spec(FailingEnv, {"fail_in": "step"}, num_envs=1))
    # A copy that fails every step is rebuilt up to 10 times in a row, then the error surfaces.
    with pytest.raises(EnvError, match=r"raised in step\(\).*simulator crashed in step"):
        runner.sample(20)
    with pytest.raises(EnvError, match=r"raised in reset\(\).*simulator crashed in reset"):
        EnvRunner(make_spec(FailingEnv, {"fail_in": "reset"}, num_envs=1)).sample(2)


def test_dict_and_discrete_observations_flow_through_flatten_connector():
    env = gym.make("Taxi-v3")
    spec = EnvRunnerSpec(
        resolve_env("Taxi-v3"),
        PolicySpec(
            StochasticPolicy,
            {
                "observation_space": gym.spaces.Box(0.0, 1.0, (500,), np.float32),
                "action_space": env.action_space,
            },
        ),
        num_envs=2,
        env_to_module=[{"name": "FlattenObservations", "config": {}}],
    )
    data = EnvRunner(spec).sample(5).data
    assert data["observation"].shape == (2, 5, 500)
    assert torch.equal(data["observation"].sum(-1), torch.ones(2, 5))


def test_local_group_samples_in_process():
    group = EnvRunnerGroup(make_spec("CartPole-v1"), num_env_runners=0)
    results = group.sample(4)
    assert group.is_local and group.actors() == []
    assert len(results) == 1 and results[0].data["observation"].shape == (2, 4, 4)
    group.stop()
    assert group.local_runner is None


def test_ray_group_samples_on_actors_with_distinct_seeds(ray_session):
    group = EnvRunnerGroup(make_spec(CountingEnv, {"lengths": [50]}, num_envs=2, seed=0), num_env_runners=2)
    try:
        state = {"version": 3, "policies": {}}
        results = group.sample(5, state=state)
        assert len(results) == 2
        assert sorted(r.worker_index for r in results) == [1, 2]
        cartpole = EnvRunnerGroup(make_spec("CartPole-v1", num_envs=1, seed=0), num_env_runners=2)
        try:
            a, b = cartpole.sample(3)
            assert not torch.equal(a.data["observation"], b.data["observation"]), (
                "runners must use distinct seeds"
            )
        finally:
            cartpole.stop()
    finally:
        group.stop()


def test_stopping_a_ray_group_lets_every_runner_close_its_envs_first(ray_session, tmp_path):
    spec = make_spec(CountingEnv, {"lengths": [50], "close_marker_dir": str(tmp_path)}, num_envs=2)
    group = EnvRunnerGroup(spec, num_env_runners=2)
    group.sample(3)
    actors = group.actors()
    group.stop()
    closed = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("closed-0-"))
    assert closed == ["closed-1-0", "closed-1-1", "closed-2-0", "closed-2-1"]
    assert all(actor_dies_within(actor, seconds=30) for actor in actors)
    group.stop()  # idempotent
