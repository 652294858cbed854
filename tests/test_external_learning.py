"""PPO learns CartPole from external client processes only (remote and local inference).

The clients are real processes (``examples/external_cartpole/client.py``) that run CartPole
themselves and find the server through its address file; the learner never steps an env for
training. The evaluation (deterministic, 20 episodes) runs on a local CartPole copy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from tests.external_helpers import TOKEN

CLIENT = Path(__file__).resolve().parents[1] / "examples" / "external_cartpole" / "client.py"
NUM_CLIENTS = 4


def learn_from_clients(
    tmp_path, quiet_trainer_kwargs, inference: str
) -> tuple[StopOnReturn, PPO, pl.Trainer]:
    address_file = tmp_path / "server.json"
    pl.seed_everything(0, verbose=False)
    algo = PPO(
        "CartPole-v1",
        external={"token": TOKEN, "address_file": str(address_file)},
        num_envs_per_env_runner=NUM_CLIENTS,
        rollout_fragment_length=256 // NUM_CLIENTS,
        train_batch_size=256,
        minibatch_size=256,
        num_epochs=20,
        lr=1e-3,
        gamma=0.98,
        lambda_=0.8,
        evaluation_duration=20,
        seed=0,
    )
    clients = [
        subprocess.Popen(
            [
                *(sys.executable, str(CLIENT), "--address-file", str(address_file), "--token", TOKEN),
                *("--inference", inference, "--seed", str(seed)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(NUM_CLIENTS)
    ]
    stop = StopOnReturn(450)
    trainer = pl.Trainer(
        **{**quiet_trainer_kwargs, "max_epochs": 1000, "check_val_every_n_epoch": 4},
        callbacks=[stop, StopOnEnvSteps(100_000)],
    )
    try:
        trainer.fit(algo)
    finally:
        outputs = []
        for client in clients:
            try:
                outputs.append(client.communicate(timeout=60))
            except subprocess.TimeoutExpired:
                client.kill()
                outputs.append(client.communicate())
    for client, (out, err) in zip(clients, outputs, strict=True):
        assert client.returncode == 0, err[-2000:]
        assert '"episodes"' in out, out + err[-2000:]
    return stop, algo, trainer


@pytest.mark.learning
@pytest.mark.parametrize("inference", ["remote", "local"])
def test_ppo_learns_cartpole_to_450_from_external_clients_only(tmp_path, quiet_trainer_kwargs, inference):
    stop, algo, trainer = learn_from_clients(tmp_path, quiet_trainer_kwargs, inference)
    metrics = trainer.callback_metrics
    assert stop.reached_at is not None, (
        f"evaluation return only {metrics.get('evaluation/episode_return_mean')}"
    )
    assert float(metrics["evaluation/episode_return_mean"]) >= 450
    assert algo.num_env_steps_sampled_lifetime <= 100_000
    # The clients' episodes are the only training episodes (the last iteration alone may end none:
    # a 500-step episode can outlast an iteration).
    assert algo.experience.num_episodes_lifetime > 0, "the training episodes are the clients'"
