"""The one inference path: Policy.from_checkpoint / get_policy act exactly like the evaluation runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_rl import checkpoint_format as ckpt
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.env_runners.env_runner import EnvRunner, EnvRunnerSpec
from lightning_rl.envs.registration import resolve_env
from lightning_rl.errors import CheckpointError, ConfigError, UnknownNameError
from lightning_rl.modules.policy_networks import PolicySpec
from lightning_rl.policy import MissingRecipeError, Policy, PolicyRecipe
from lightning_rl.training_run import TrainingRun, policy_from_checkpoint
from tests.inference_helpers import (
    EpisodeClockPolicy,
    PreviousActionReward,
    RecordingCartPole,
    evaluation_runner_log,
    train_and_save,
    train_multi_agent_and_log,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """PPO on CartPole with a MeanStdFilter after 2 iterations, its checkpoint, and 1,000 steps
    of an evaluation runner: (obs, action) pairs as the env saw them."""
    path = tmp_path_factory.mktemp("policy") / "ppo.ckpt"
    algo = train_and_save(path, env_to_module_connector=["MeanStdFilter"])
    log = evaluation_runner_log(algo, steps_per_env=250)
    obs = np.stack([entry["obs"] for entry in log])
    actions = np.array([entry["action"] for entry in log])
    return algo, path, obs, actions


def test_policy_from_checkpoint_acts_like_the_evaluation_runner_on_1000_observations(trained):
    algo, path, obs, actions = trained
    assert algo.connector_state["default_policy"][0]["count"] > 0, "the filter learned statistics"
    policy = Policy.from_checkpoint(path)
    assert np.array_equal(policy.compute_actions(obs), actions)
    assert [policy.compute_single_action(o) for o in obs[:50]] == actions[:50].tolist()
    assert np.array_equal(algo.get_policy().compute_actions(obs), actions)


def test_skipping_the_filter_would_change_the_actions(trained):
    """The test above is sensitive: the same network without the saved statistics acts differently."""
    _, path, obs, actions = trained
    policy = Policy.from_checkpoint(path)
    policy.env_to_module.set_state([{"count": 0.0, "mean": torch.zeros(4), "m2": torch.zeros(4)}])
    assert not np.array_equal(policy.compute_actions(obs), actions)


def test_from_checkpoint_reads_plain_data_and_never_creates_the_env(trained, monkeypatch):
    _, path, obs, actions = trained
    raw = torch.load(path, weights_only=True)
    recipe = raw["lightning_rl"]["inference"]["default_policy"]
    assert recipe["observation_space"]["type"] == "Box"
    assert recipe["policy_class"] == "lightning_rl.modules.policy_networks:StochasticPolicy"
    assert recipe["weight_tensors"] == {}, "weights are referenced in state_dict, not stored twice"

    def no_env(*args, **kwargs):
        raise AssertionError("Policy.from_checkpoint created the training env")

    monkeypatch.setattr(RecordingCartPole, "__init__", no_env)
    assert np.array_equal(Policy.from_checkpoint(path.parent).compute_actions(obs), actions)


def test_format_1_checkpoints_migrate_and_rebuild_the_policy_from_hyperparameters(trained, tmp_path):
    _, path, obs, actions = trained
    old = torch.load(path, weights_only=True)
    del old["lightning_rl"]["inference"]
    old["lightning_rl"]["format_version"] = 1
    torch.save(old, tmp_path / "v1.ckpt")
    # The inference layer reads only stored recipes; the training run rebuilds the algorithm.
    with pytest.raises(MissingRecipeError, match="policy_from_checkpoint"):
        Policy.from_checkpoint(tmp_path / "v1.ckpt")
    assert np.array_equal(policy_from_checkpoint(tmp_path / "v1.ckpt").compute_actions(obs), actions)
    run = TrainingRun.from_checkpoint(tmp_path / "v1.ckpt", trainer_kwargs={"logger": False})
    assert np.array_equal(run.get_policy().compute_actions(obs), actions)
    run.stop()


def test_checkpoints_saved_before_the_module_renames_still_load(trained, tmp_path):
    """``modules/policy.py`` became ``modules/policy_networks.py``: a file that stores the old
    path (its checksum covers it, so it is not rewritten) still loads, through the rename table."""
    _, path, obs, actions = trained
    raw = torch.load(path, weights_only=True)
    recipe = raw["lightning_rl"]["inference"]["default_policy"]
    recipe["policy_class"] = "lightning_rl.modules.policy:StochasticPolicy"
    ckpt.add_checksum(raw)
    torch.save(raw, tmp_path / "before_rename.ckpt")
    assert np.array_equal(
        Policy.from_checkpoint(tmp_path / "before_rename.ckpt").compute_actions(obs), actions
    )
    # A name that never existed is still refused by the name rules.
    recipe["policy_class"] = "lightning_rl.modules.policy:os.system"
    ckpt.add_checksum(raw)
    torch.save(raw, tmp_path / "hostile.ckpt")
    with pytest.raises(CheckpointError):
        Policy.from_checkpoint(tmp_path / "hostile.ckpt")


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (ckpt.FORMAT_VERSION + 1, "Upgrade lightning-rl"),
        (0, "cannot migrate"),
        ("2", "invalid checkpoint format"),
    ],
)
def test_unreadable_format_versions_fail_with_a_clear_message(trained, tmp_path, version, message):
    raw = torch.load(trained[1], weights_only=True)
    raw["lightning_rl"]["format_version"] = version
    torch.save(raw, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=message):
        Policy.from_checkpoint(tmp_path / "bad.ckpt")


def test_pickled_objects_are_refused_with_a_clear_message(trained, tmp_path):
    raw = torch.load(trained[1], weights_only=True)
    raw["hyper_parameters"]["env"] = RecordingCartPole  # a class: only full pickle could load it
    torch.save(raw, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match=r"pickled Python objects.*RecordingCartPole"):
        Policy.from_checkpoint(tmp_path / "pickled.ckpt")


def test_explore_samples_reproducibly_per_seed(trained):
    _, path, obs, actions = trained
    first = Policy.from_checkpoint(path, seed=7).compute_actions(obs, explore=True)
    again = Policy.from_checkpoint(path, seed=7).compute_actions(obs, explore=True)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, actions), "exploration samples, it does not take the mode"


def test_stateful_connectors_keep_per_stream_state_like_the_runner(tmp_path):
    """Previous action and reward are part of the observation: the policy gets them from the
    caller's episode_start flags and rewards exactly as the runner computed them."""
    path = tmp_path / "stateful.ckpt"
    connectors = [PreviousActionReward(), "MeanStdFilter"]
    algo = train_and_save(path, iterations=1, env_to_module_connector=connectors)
    num_envs, steps = 4, 100
    log = evaluation_runner_log(algo, steps_per_env=steps, num_envs=num_envs)
    policy = Policy.from_checkpoint(path)
    rewards = None
    for t in range(steps):
        rows = log[t * num_envs : (t + 1) * num_envs]
        actions, info = policy.compute_actions(
            np.stack([r["obs"] for r in rows]),
            episode_start=[r["first"] for r in rows],
            rewards=rewards,
            return_info=True,
        )
        assert np.array_equal(info["observation"], np.stack([r["module_obs"] for r in rows])), f"step {t}"
        assert actions.tolist() == [r["action"] for r in rows], f"step {t}"
        rewards = [r["reward"] for r in rows]
    assert sum(r["first"] for r in log) > num_envs, "episodes ended and restarted during the check"

    # One stream of env copy 0 through compute_single_action, and an independent copy.
    stream = [r for r in log if r["env"] == 0]
    single, other = Policy.from_checkpoint(path), policy.copy()
    reward = None
    for r in stream:
        assert single.compute_single_action(r["obs"], episode_start=r["first"], reward=reward) == r["action"]
        assert other.compute_single_action(r["obs"], episode_start=r["first"], reward=reward) == r["action"]
        reward = r["reward"]


def test_recurrent_state_of_the_inference_policy_follows_episodes_like_the_runner():
    spec = PolicySpec(EpisodeClockPolicy, {"observation_space": None, "action_space": None})
    num_envs, steps = 4, 100
    runner = EnvRunner(EnvRunnerSpec(resolve_env(RecordingCartPole), spec, num_envs=num_envs, seed=5))
    RecordingCartPole.log.clear()
    rollout = runner.sample(steps, explore=False).data
    log, observation_space = list(RecordingCartPole.log), runner.observation_space
    RecordingCartPole.log.clear()
    assert rollout["hidden_steps"].shape == (num_envs, steps), (
        "the recurrent state is stored with the rollout"
    )
    recipe = PolicyRecipe("default_policy", observation_space, runner.action_space, [], [], spec, weights={})
    runner.stop()
    policy, stream = Policy(recipe), Policy(recipe).copy()
    for t in range(steps):
        rows = log[t * num_envs : (t + 1) * num_envs]
        actions = policy.compute_actions(
            np.stack([r["obs"] for r in rows]), episode_start=[r["first"] for r in rows]
        )
        assert actions.tolist() == [r["action"] for r in rows], f"step {t}"
    assert sum(r["first"] for r in log) > num_envs, "episodes ended and restarted during the check"
    for r in (r for r in log if r["env"] == 2):
        assert stream.compute_single_action(r["obs"], episode_start=r["first"]) == r["action"]


def test_multi_agent_policies_from_checkpoint_act_like_the_evaluation_runner(tmp_path):
    path = tmp_path / "multi.ckpt"
    algo, logged = train_multi_agent_and_log(path)
    means = [algo.connector_state[p][0]["mean"] for p in ("p0", "p1")]
    assert not torch.equal(*means), "each policy has its own filter statistics"
    for policy_id, seen in logged.items():
        assert len(seen["action"]) > 100
        policy = Policy.from_checkpoint(path, policy_id=policy_id)
        assert np.array_equal(policy.compute_actions(seen["obs"]), seen["action"]), policy_id
        assert np.array_equal(algo.get_policy(policy_id).compute_actions(seen["obs"]), seen["action"])
    with pytest.raises(ConfigError, match="several policies"):
        Policy.from_checkpoint(path)
    with pytest.raises(UnknownNameError, match="Did you mean 'p1'"):
        Policy.from_checkpoint(path, policy_id="p_1")


def test_unsquashed_continuous_actions_match_the_runner_conversion():
    algo = PPO("Pendulum-v1", seed=0)
    policy = algo.get_policy()
    obs = np.stack([algo.env_observation_space.sample() for _ in range(64)])
    actions = policy.compute_actions(obs)
    assert actions.shape == (64, 1) and np.all(np.abs(actions) <= 2.0)
    _, info = policy.compute_actions(obs, return_info=True)
    assert np.allclose(actions, 2.0 * np.clip(info["action"], -1, 1), atol=1e-6), "unsquashed to [-2, 2]"
