"""External clients feed the normal training stack: Trainer, DataModules, checkpoints, Ray actors."""

from __future__ import annotations

import json
import threading

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.dqn import DQN
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.envs.external import ExternalEnvClient
from lightning_rl.envs.external.config import TOKEN_ENV_VAR
from lightning_rl.errors import ConfigError, EnvError, UnknownNameError
from lightning_rl.external_server import server_addresses
from tests.external_helpers import TOKEN, StepCountEnv

SPACES = {
    "observation_space": {"type": "Box", "shape": [3], "dtype": "float32", "low": "-inf", "high": "inf"},
    "action_space": {"type": "Discrete", "n": 2},
}


class AddressFileClients:
    """Client threads that wait for the server's address file, then play StepCountEnv."""

    def __init__(self, path, count: int, **client_kwargs) -> None:
        self.path = path
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.clients: list[ExternalEnvClient] = []
        self.threads = [
            threading.Thread(target=self._play, args=(i, client_kwargs), daemon=True) for i in range(count)
        ]

    def _play(self, index: int, client_kwargs: dict) -> None:
        try:
            while not self.path.exists():
                if self.stop_event.wait(0.05):
                    return
            address = json.loads(self.path.read_text())
            client = ExternalEnvClient((address["host"], address["port"]), TOKEN, **client_kwargs)
            self.clients.append(client)
            client.run(StepCountEnv({"client_id": index, "length": 8}), should_stop=self.stop_event.is_set)
        except BaseException as exc:
            if not self.stop_event.is_set():
                self.errors.append(exc)

    def __enter__(self) -> AddressFileClients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for client in self.clients:
            client.close()
        for thread in self.threads:
            thread.join(timeout=30)


def fit(algo, kwargs, epochs: int, **trainer_kwargs) -> pl.Trainer:
    trainer = pl.Trainer(**{**kwargs, "max_epochs": epochs, "limit_val_batches": 0, **trainer_kwargs})
    trainer.fit(algo)
    return trainer


def test_ppo_trains_from_clients_and_the_token_stays_out_of_checkpoints(tmp_path, quiet_trainer_kwargs):
    address_file = tmp_path / "server.json"
    algo = PPO(
        "ExternalSpaces",
        env_config=SPACES,
        external={"token": TOKEN, "address_file": str(address_file)},
        train_batch_size=64,
        minibatch_size=32,
        num_epochs=2,
    )
    assert algo.hparams.external["address_file"] == str(address_file)
    assert "token" not in algo.hparams.external
    with AddressFileClients(address_file, 2) as clients:
        trainer = fit(algo, quiet_trainer_kwargs, 3)
    assert not clients.errors
    metrics = trainer.callback_metrics
    assert metrics["num_env_steps_sampled_lifetime"] >= 3 * 64
    assert metrics["env_runners/episode_len_mean"] == 8
    assert torch.isfinite(metrics["learners/default_policy/total_loss"])
    assert algo.policy_state()["version"] == trainer.global_step > 0
    path = tmp_path / "external.ckpt"
    trainer.save_checkpoint(path)
    assert TOKEN.encode() not in path.read_bytes()
    restored = torch.load(path, weights_only=True)
    assert restored["hyper_parameters"]["external"]["port"] == 0


def test_a_restored_run_takes_the_token_from_the_environment(tmp_path, monkeypatch, quiet_trainer_kwargs):
    algo = PPO(
        StepCountEnv,
        external={"address_file": str(tmp_path / "a.json")},
        train_batch_size=32,
        minibatch_size=32,
    )
    with pytest.raises(ConfigError, match=TOKEN_ENV_VAR):
        fit(algo, quiet_trainer_kwargs, 1)
    monkeypatch.setenv(TOKEN_ENV_VAR, TOKEN)
    with AddressFileClients(tmp_path / "a.json", 1):
        fit(algo, quiet_trainer_kwargs, 1)


def test_dqn_trains_from_clients_through_the_replay_datamodule(tmp_path, quiet_trainer_kwargs):
    address_file = tmp_path / "server.json"
    algo = DQN(
        StepCountEnv,
        external={"token": TOKEN, "address_file": str(address_file), "batch_mode": "complete_episodes"},
        rollout_fragment_length=32,
        num_steps_sampled_before_learning_starts=64,
        train_batch_size=16,
        training_intensity=1,
        n_step=3,
        replay_buffer_config={"type": "ReplayBuffer", "capacity": 1000},
    )
    with AddressFileClients(address_file, 2) as clients:
        trainer = fit(algo, quiet_trainer_kwargs, 3)
    assert not clients.errors
    buffer = algo.experience.buffers["default_policy"] if algo.experience.buffers else None
    assert trainer.callback_metrics["replay_buffer/default_policy/num_entries"] >= 64 + 2 * 32
    assert buffer is None or len(buffer) > 0
    assert int(algo.num_grad_updates_lifetime) > 0


def test_the_server_runs_inside_a_ray_actor(ray_session, tmp_path, quiet_trainer_kwargs):
    address_file = tmp_path / "server-{worker_index}.json"
    algo = PPO(
        StepCountEnv,
        external={"token": TOKEN, "address_file": str(address_file)},
        num_env_runners=1,
        train_batch_size=64,
        minibatch_size=64,
        num_epochs=1,
    )
    with AddressFileClients(tmp_path / "server-1.json", 2) as clients:
        trainer = fit(algo, quiet_trainer_kwargs, 2)
        assert not clients.errors
    assert trainer.callback_metrics["num_env_steps_sampled_lifetime"] >= 2 * 64
    assert trainer.callback_metrics["env_runners/num_healthy_env_runners"] == 1


def test_server_addresses_of_a_running_datamodule():
    algo = PPO(StepCountEnv, external={"token": TOKEN}, train_batch_size=32, minibatch_size=32)
    datamodule = algo.experience
    with pytest.raises(RuntimeError, match="start with training"):
        server_addresses(algo)
    datamodule.setup("fit")
    try:
        ((host, port),) = server_addresses(algo)
        assert host == "127.0.0.1" and port > 0
        client = ExternalEnvClient((host, port), TOKEN)
        assert client.observation_space.shape == (3,) and client.action_space.n == 2
        assert client.config["requires_action_log_probs"] is True
        client.close()
    finally:
        datamodule.close()


def test_the_fluent_config_selects_the_external_runner():
    config = PPOConfig().environment(
        StepCountEnv, external={"token": TOKEN, "port": 0, "batch_mode": "complete_episodes"}
    )
    algo = config.build_algorithm()
    assert algo.hparams.external["batch_mode"] == "complete_episodes"
    spec = algo.env_runner_spec(num_envs=4)
    assert type(spec).__name__ == "ExternalEnvRunnerSpec" and spec.num_envs == 4
    assert type(algo.env_runner_spec(num_envs=4, evaluation=True)).__name__ == "EnvRunnerSpec"


@pytest.mark.parametrize(
    ("external", "message"),
    [
        ({"prot": 1}, "Unknown external env setting 'prot'. Did you mean 'port'"),
        ({"port": 70000}, "port must be an integer in [0, 65535]"),
        ({"batch_mode": "episodes"}, "Unknown external batch_mode 'episodes'"),
        ({"timeout_s": 0}, "timeout_s must be a positive number"),
        ("yes", "external must be a dict"),
    ],
)
def test_bad_external_settings_are_one_clear_error(external, message):
    with pytest.raises(ConfigError) as info:
        PPO(StepCountEnv, external=external)
    assert message in str(info.value)


def test_external_spaces_without_dynamics_and_without_spaces():
    from lightning_rl.envs.external.spaces_env import ExternalSpacesEnv

    env = ExternalSpacesEnv(SPACES)
    assert env.observation_space.shape == (3,) and env.action_space.n == 2
    with pytest.raises(EnvError, match="no dynamics"):
        env.reset()
    with pytest.raises((ConfigError, EnvError), match="observation_space"):
        PPO("ExternalSpaces", env_config={"action_space": SPACES["action_space"]}, external={"token": TOKEN})
    with pytest.raises(UnknownNameError):
        PPO("ExternalSpace-typo", external={"token": TOKEN})


def test_multi_agent_envs_cannot_be_external():
    from lightning_rl.envs.classes import MultiAgentCartPole

    with pytest.raises(ConfigError, match="single-agent"):
        PPO(MultiAgentCartPole, external={"token": TOKEN})


def test_a_sample_without_clients_ends_in_one_clear_error():
    algo = PPO(
        StepCountEnv,
        external={"token": TOKEN, "sample_timeout_s": 0.3},
        train_batch_size=32,
        minibatch_size=32,
    )
    spec = algo.env_runner_spec(num_envs=1)
    runner = spec.runner_class()(spec)
    try:
        with pytest.raises(EnvError, match="0 clients are connected"):
            runner.sample(8, True, algo.policy_state())
    finally:
        runner.stop()


def test_connectors_with_per_episode_state_are_refused_with_their_name():
    from tests.inference_helpers import PreviousActionReward

    algo = PPO(StepCountEnv, external={"token": TOKEN}, env_to_module_connector=[PreviousActionReward()])
    spec = algo.env_runner_spec(num_envs=1)
    with pytest.raises(ConfigError, match=r"PreviousActionReward.*per-episode state"):
        spec.runner_class()(spec)
