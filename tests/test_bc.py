"""BC: learning CartPole from a recorded PPO expert, the fluent config and CLI, and BC then PPO."""

from __future__ import annotations

import shutil
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.bc import BC, BCConfig
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnReturn
from lightning_rl.errors import ConfigError
from lightning_rl.policy import Policy
from tests import offline_fixtures
from tests.offline_fixtures import QUIET, REPO


@pytest.fixture
def expert_data(tmp_path_factory):
    return offline_fixtures.cartpole_expert_data(tmp_path_factory)


def train_bc(path: str, **kwargs) -> tuple[BC, float, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    algo = BC(
        "CartPole-v1",
        input_=path,
        lr=1e-3,
        train_batch_size=512,
        dataset_num_iters_per_learner=100,
        evaluation_duration=20,
        seed=0,
        **kwargs,
    )
    stop = StopOnReturn(475)
    trainer = pl.Trainer(max_epochs=10, callbacks=[stop], **QUIET)
    trainer.fit(algo)
    assert stop.reached_at is not None, f"BC reached only {trainer.callback_metrics}"
    return algo, float(trainer.callback_metrics["evaluation/episode_return_mean"]), trainer


@pytest.mark.learning
def test_bc_learns_cartpole_from_a_recorded_ppo_expert(expert_data):
    assert expert_data["expert_return"] >= 475
    algo, bc_return, _ = train_bc(expert_data["path"])
    assert bc_return >= 475
    assert algo.num_env_steps_trained_lifetime <= 10 * 100 * 512


@pytest.mark.learning
def test_ppo_starts_from_the_cloned_policy_and_its_filter(expert_data, tmp_path):
    bc, bc_return, bc_trainer = train_bc(
        expert_data["path"], env_to_module_connector=["MeanStdFilter"], vf_coeff=1.0, gamma=0.98
    )
    ppo_args = dict(
        env_to_module_connector=["MeanStdFilter"],
        train_batch_size=256,
        minibatch_size=256,
        num_epochs=10,
        lr=3e-4,  # fine-tuning: smaller steps than PPO from scratch (1e-3)
        gamma=0.98,
        lambda_=0.8,
        evaluation_duration=20,
        seed=0,
    )
    ppo = PPO("CartPole-v1", **ppo_args)
    ppo.load_policy_weights_from(bc)
    state = ppo.connector_state["default_policy"][0]
    assert state["count"] == bc.connector_state["default_policy"][0]["count"] > 0
    for name, tensor in bc.module.policy_net.state_dict().items():
        assert torch.equal(ppo.module.policy_net.state_dict()[name], tensor)
    for name, tensor in bc.module.value_net.state_dict().items():
        assert torch.equal(ppo.module.value_net.state_dict()[name], tensor)
    trainer = pl.Trainer(max_epochs=1, **QUIET)
    trainer.fit(ppo)  # one PPO iteration, then the first evaluation
    first = float(trainer.callback_metrics["evaluation/episode_return_mean"])
    assert first >= 0.9 * bc_return, f"PPO's first evaluation {first} vs BC's {bc_return}"
    # The same from a checkpoint file; a network of another shape is refused.
    checkpoint = tmp_path / "bc.ckpt"
    bc_trainer.save_checkpoint(checkpoint)
    from_file = PPO("CartPole-v1", **ppo_args)
    from_file.load_policy_weights_from(str(checkpoint))
    for name, tensor in bc.module.policy_net.state_dict().items():
        assert torch.equal(from_file.module.policy_net.state_dict()[name], tensor)
    wider = PPO(
        "CartPole-v1", env_to_module_connector=["MeanStdFilter"], model_config={"fcnet_hiddens": [32]}
    )
    with pytest.raises(ConfigError, match="same model_config"):
        wider.load_policy_weights_from(bc)
    with pytest.raises(ConfigError, match="env-to-module connectors"):
        PPO("CartPole-v1").load_policy_weights_from(bc)
    with pytest.raises(ConfigError, match="observation space"):
        PPO("Acrobot-v1", env_to_module_connector=["MeanStdFilter"]).load_policy_weights_from(bc)


def test_fluent_config_and_training_run(expert_data, tmp_path):
    config = (
        BCConfig()
        .environment("CartPole-v1")
        .offline_data(input_=expert_data["path"], dataset_num_iters_per_learner=5)
        .training(train_batch_size=64, lr=1e-3)
        .evaluation(evaluation_interval=1, evaluation_duration=2)
        .trainer(default_root_dir=str(tmp_path))
    )
    with config.build_algo() as run:
        result = run.train()
        assert result["training_iteration"] == 1
        assert result["evaluation"]["episode_return_mean"] > 0
        assert run.datamodule.num_env_steps_trained_lifetime == 5 * 64
        path = run.save()
    policy = Policy.from_checkpoint(path)
    assert policy.compute_single_action([0.0, 0.0, 0.0, 0.0]) in (0, 1)
    with pytest.raises(ConfigError, match="BC is MARWIL with beta=0"):
        BC("CartPole-v1", beta=0.5)


def test_cli_trains_bc_from_a_recorded_directory(expert_data, tmp_path):
    executable = shutil.which("lightning-rl")
    cmd = [executable] if executable else [sys.executable, "-m", "lightning_rl.cli"]
    proc = subprocess.run(
        [
            *cmd,
            "fit",
            "--config",
            str(REPO / "configs" / "bc" / "cartpole.yaml"),
            "--model.input_",
            expert_data["path"],
            "--model.dataset_num_iters_per_learner",
            "5",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iterations=1" in proc.stdout and "evaluation/episode_return_mean" in proc.stdout
