"""Exported policies (ONNX via onnxruntime, TorchScript) act exactly like the framework."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from gymnasium import spaces

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.cli import main
from lightning_rl.errors import ConfigError
from lightning_rl.export import export_policy, read_export_metadata
from lightning_rl.modules.policy_networks import PolicySpec, StochasticPolicy
from lightning_rl.policy import Policy, PolicyRecipe
from tests.inference_helpers import (
    PreviousActionReward,
    evaluation_runner_log,
    train_and_save,
    train_multi_agent_and_log,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "ppo.ckpt"
    algo = train_and_save(path, env_to_module_connector=["MeanStdFilter"])
    log = evaluation_runner_log(algo, steps_per_env=250)
    obs = np.stack([entry["obs"] for entry in log])
    actions = np.array([entry["action"] for entry in log])
    return path, obs, actions


def run_onnx(path, obs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["action"], {"obs": obs})[0]


def test_onnx_actions_equal_the_evaluation_runner_and_the_policy_on_1000_observations(trained, tmp_path):
    path, obs, actions = trained
    policy = Policy.from_checkpoint(path)
    onnx_path = export_policy(policy, tmp_path / "policy.onnx")
    assert len(obs) == 1000
    onnx_actions = run_onnx(onnx_path, obs)
    assert np.array_equal(onnx_actions, actions)
    assert np.array_equal(onnx_actions, policy.compute_actions(obs))
    assert np.array_equal(run_onnx(onnx_path, obs[:1]), actions[:1]), "any batch size, including 1"
    meta = read_export_metadata(onnx_path)
    assert meta["policy_id"] == "default_policy"
    assert meta["inputs"] == [{"name": "obs", "dtype": "float32", "shape": ["batch", 4]}]
    assert meta["env_to_module"] == [{"name": "MeanStdFilter", "config": {"clip": 10.0, "epsilon": 1e-08}}]
    assert meta["observation_space"]["shape"] == [4]


def test_torchscript_actions_equal_the_evaluation_runner(trained, tmp_path):
    path, obs, actions = trained
    script_path = export_policy(Policy.from_checkpoint(path), tmp_path / "policy.pt", "torchscript")
    module = torch.jit.load(str(script_path))
    assert np.array_equal(module(torch.from_numpy(obs)).numpy(), actions)
    assert read_export_metadata(script_path)["artifact"] == "torchscript"


def test_cli_export_writes_the_artifact_next_to_the_checkpoint(trained, capsys):
    """The command end to end in a subprocess (TorchScript: ONNX export is tested above in-process)."""
    path, obs, actions = trained
    executable = shutil.which("lightning-rl")
    cmd = [executable] if executable else [sys.executable, "-m", "lightning_rl.cli"]
    args = ["export", "--ckpt_path", str(path), "--format", "torchscript"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    artifact = path.with_suffix(".pt")
    assert str(artifact) in proc.stdout
    assert np.array_equal(torch.jit.load(str(artifact))(torch.from_numpy(obs)).numpy(), actions)
    assert main([*args, "--policy_id", "nope"]) == 2
    error = capsys.readouterr().err
    assert "Unknown policy id" in error and "default_policy" in error


def test_unsquashed_continuous_and_one_hot_discrete_connectors_export(tmp_path):
    pendulum = Policy.from_algorithm(PPO("Pendulum-v1", seed=0))
    obs = np.stack([pendulum.observation_space.sample() for _ in range(200)]).astype(np.float32)
    exported = run_onnx(export_policy(pendulum, tmp_path / "pendulum.onnx"), obs)
    assert np.allclose(exported, pendulum.compute_actions(obs), atol=1e-5)
    assert np.all(np.abs(exported) <= 2.0)

    taxi = Policy.from_algorithm(PPO("Taxi-v3", env_to_module_connector=["FlattenObservations"], seed=0))
    states = np.arange(500, dtype=np.int64)
    onnx_path = export_policy(taxi, tmp_path / "taxi.onnx")
    assert read_export_metadata(onnx_path)["inputs"][0]["dtype"] == "int64"
    assert np.array_equal(run_onnx(onnx_path, states), taxi.compute_actions(states))


def test_dict_observations_with_an_action_mask_export_one_input_per_key(tmp_path):
    observation_space = spaces.Dict(
        {"observation": spaces.Box(-1.0, 1.0, (9,), np.float32), "action_mask": spaces.MultiBinary(9)}
    )
    action_space = spaces.Discrete(9)
    spec = PolicySpec(
        StochasticPolicy,
        {"observation_space": observation_space, "action_space": action_space, "model_config": {}},
    )
    weights = spec.build().net.state_dict()
    policy = Policy(PolicyRecipe("player", observation_space, action_space, [], [], spec, weights))
    rng = np.random.default_rng(0)
    mask = (rng.random((400, 9)) < 0.3).astype(np.int8)
    mask[np.arange(400), rng.integers(0, 9, 400)] = 1  # at least one legal move
    obs = {"observation": rng.uniform(-1, 1, (400, 9)).astype(np.float32), "action_mask": mask}
    artifact = export_policy(policy, tmp_path / "masked.onnx")
    assert [i["name"] for i in read_export_metadata(artifact)["inputs"]] == list(observation_space.spaces)
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    exported = session.run(["action"], obs)[0]
    assert np.array_equal(exported, policy.compute_actions(obs))
    assert np.all(mask[np.arange(400), exported] == 1), "only legal actions"
    single = {key: value[0] for key, value in obs.items()}
    assert policy.compute_single_action(single) == exported[0]


def test_multi_agent_onnx_exports_act_like_the_evaluation_runner(tmp_path):
    _, logged = train_multi_agent_and_log(tmp_path / "multi.ckpt")
    for policy_id, seen in logged.items():
        artifact = export_policy(
            Policy.from_checkpoint(tmp_path / "multi.ckpt", policy_id), tmp_path / "p.onnx"
        )
        assert read_export_metadata(artifact)["policy_id"] == policy_id
        assert np.array_equal(run_onnx(artifact, seen["obs"]), seen["action"]), policy_id


def test_stochastic_export_samples_the_policy_distribution(trained, tmp_path):
    path, obs, _ = trained
    policy = Policy.from_checkpoint(path)
    artifact = export_policy(policy, tmp_path / "explore.onnx", explore=True)
    assert json.loads(json.dumps(read_export_metadata(artifact)))["explore"] is True
    one = np.repeat(obs[3:4], 20_000, axis=0)
    frequency = run_onnx(artifact, one).mean()
    _, info = policy.compute_actions(obs[3:4], return_info=True)
    log_prob_of_greedy = float(info["action_log_prob"][0])
    greedy = int(info["action"][0])
    p_right = np.exp(log_prob_of_greedy) if greedy == 1 else 1.0 - np.exp(log_prob_of_greedy)
    assert abs(frequency - p_right) < 0.02, (frequency, p_right)


def test_connectors_without_a_tensor_form_refuse_to_export(tmp_path):
    policy = Policy.from_algorithm(PPO("CartPole-v1", env_to_module_connector=[PreviousActionReward()]))
    with pytest.raises(ConfigError, match=r"PreviousActionReward.*no tensor-op form"):
        export_policy(policy, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="Unknown export format 'tflite'"):
        export_policy(policy, tmp_path / "x.tflite", "tflite")


def test_the_inference_example_runs_and_both_paths_agree(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "inference_after_training.py"
    args = [sys.executable, str(example), "--iterations", "2", "--episodes", "2", "--out", str(tmp_path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "identical", proc.stdout


@pytest.mark.parametrize("memory", ["use_lstm", "use_gru", "use_attention"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_memory_model_exports_take_and_return_the_state_and_act_like_the_policy(memory, fmt, tmp_path):
    model_config = {memory: True, "max_seq_len": 8, "lstm_cell_size": 16, "attention_dim": 16}
    policy = Policy.from_algorithm(PPO("CartPole-v1", model_config=model_config, seed=1))
    artifact = export_policy(policy, tmp_path / f"policy.{fmt}", fmt)
    state_contract = read_export_metadata(artifact)["state"]
    assert state_contract["input"] == "state" and state_contract["output"] == "state_out"
    size = state_contract["size"]
    assert size == policy.inference_policy.export_state_size
    if fmt == "onnx":
        session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])

        def run(obs, state):
            return session.run(["action", "state_out"], {"obs": obs, "state": state})
    else:
        module = torch.jit.load(str(artifact))

        def run(obs, state):
            action, state_out = module(torch.from_numpy(obs), torch.from_numpy(state))
            return action.numpy(), state_out.numpy()

    envs = gym_vector_cartpole(num_envs=2)
    obs, _ = envs.reset(seed=0)
    state = np.zeros((2, size), np.float32)
    starts = np.ones(2, bool)
    episodes_started = 0
    for _ in range(520):  # CartPole truncates at 500: even a balancing policy starts again
        state[starts] = 0.0  # the contract: zeros at an episode's first step
        action, state = run(obs.astype(np.float32), state)
        expected = policy.compute_actions(obs, episode_start=starts)
        assert np.array_equal(action, expected)
        assert np.allclose(state, policy.inference_policy.state.numpy(), atol=1e-5)
        obs, _, terminated, truncated, _ = envs.step(action)
        starts = terminated | truncated
        episodes_started += int(starts.sum())
    assert episodes_started > 0, "the rollout crosses episode boundaries"
    assert np.abs(state).max() > 0, "the state carries information between steps"


def gym_vector_cartpole(num_envs: int):
    import gymnasium as gym

    return gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1") for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def test_stateful_policies_without_a_pure_step_or_with_sampling_refuse_to_export(tmp_path):
    lstm = Policy.from_algorithm(PPO("CartPole-v1", model_config={"use_lstm": True, "max_seq_len": 8}))
    with pytest.raises(ConfigError, match=r"RecurrentStochasticPolicy.*greedy only"):
        export_policy(lstm, tmp_path / "x.onnx", explore=True)
    from lightning_rl.algorithms.dreamerv3 import DreamerV3

    dreamer = Policy.from_algorithm(DreamerV3("CartPole-v1", model_size="nano"))
    with pytest.raises(ConfigError, match=r"DreamerV3Policy keeps model state.*lightning_rl.Policy"):
        export_policy(dreamer, tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx").exists()
