"""PPO learns CartPole to 450 from Node.js clients only (a second, non-Python protocol client).

``examples/external_cartpole/node_client.mjs`` is written from docs/external_env_protocol.md
alone, with Node's standard library: it runs the CartPole-v1 dynamics itself, finds the server
through its address file, retries the connection, speaks JSON frames over a real loopback
socket and stops at ``server_closing``. The learner never steps an env for training; the
evaluation (20 deterministic episodes) runs on a local CartPole copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import lightning.pytorch as pl
import pytest

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnEnvSteps
from tests.external_helpers import TOKEN

CLIENT = Path(__file__).resolve().parents[1] / "examples" / "external_cartpole" / "node_client.mjs"
NUM_CLIENTS = 4


class EvaluationThenSamplingTargets(pl.Callback):
    """Stops once the evaluation mean has reached 450 and, after that, the clients' own episodes
    (the sampling policy's, ``env_runners/episode_return_mean``) average ``sampling_target``.

    Evaluation alone could stop a run before the clients played a trained policy: one run
    reached 450 after ~2,000 client steps, with the clients' last episodes no longer than their
    first (22.5 vs 25.3 steps), so the test could not tell whether they played what was learned.
    """

    def __init__(self, sampling_target: float = 50.0) -> None:
        self.sampling_target = sampling_target
        self.reached_at: tuple[int, float] | None = None  # (env steps, evaluation mean)

    def on_validation_end(self, trainer: pl.Trainer, module: PPO) -> None:
        value = trainer.callback_metrics.get("evaluation/episode_return_mean")
        if self.reached_at is None and value is not None and float(value) >= 450:
            self.reached_at = (module.num_env_steps_sampled_lifetime, float(value))

    def on_train_epoch_end(self, trainer: pl.Trainer, module: PPO) -> None:
        sampling = trainer.callback_metrics.get("env_runners/episode_return_mean")
        if self.reached_at is not None and sampling is not None and float(sampling) >= self.sampling_target:
            trainer.should_stop = True


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "The Node.js reference client needs `node` (v18+) on PATH; install Node.js to run this test "
            "(it is a requirement, never skipped)."
        )
    return node


def test_node_client_speaks_the_protocol_without_lightning_rl():
    source = CLIENT.read_text()
    lines = [line for line in source.splitlines() if line.startswith("import ")]
    imports = {line.split(" from ")[-1].strip(' ";') for line in lines}
    assert imports == {"node:fs", "node:net", "node:process"}, imports
    version = subprocess.run([node_binary(), "--version"], capture_output=True, text=True, check=True)
    assert int(version.stdout.strip().lstrip("v").split(".")[0]) >= 18, version.stdout


# CartPole-v1's mean episode return under uniformly random actions (3,000 episodes, seeds 0-2999).
RANDOM_POLICY_RETURN = 22.2


@pytest.mark.learning
def test_ppo_learns_cartpole_to_450_from_node_clients(tmp_path, quiet_trainer_kwargs):
    node = node_binary()
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
    # Started before the server exists: they wait for the address file, then connect.
    clients = [
        subprocess.Popen(
            [node, str(CLIENT), "--address-file", str(address_file), "--token", TOKEN, "--seed", str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(NUM_CLIENTS)
    ]
    stop = EvaluationThenSamplingTargets()
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
    reports = []
    for client, (out, err) in zip(clients, outputs, strict=True):
        assert client.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    metrics = trainer.callback_metrics
    reached = metrics.get("evaluation/episode_return_mean")
    assert stop.reached_at is not None, f"evaluation return only {reached}"
    assert stop.reached_at[1] >= 450
    assert float(metrics["env_runners/episode_return_mean"]) >= stop.sampling_target, metrics
    assert algo.num_env_steps_sampled_lifetime <= 100_000
    # Every training step came from the Node clients (they stopped at server_closing, exit 0).
    assert all(report["episodes"] > 0 for report in reports), reports
    client_steps = sum(report["steps"] for report in reports)
    assert client_steps >= algo.num_env_steps_sampled_lifetime, (client_steps, reports)
    # The clients played the policy the learner trained: their last episodes (the sampling
    # policy, still exploring) beat their first ones, and last more than twice as long as a
    # random policy's. How late "last" is depends on how the clients' steps interleave
    # (evaluation reached 450 after 2,000 to 4,100 client steps), so the run goes on until the
    # clients' own episodes average 50. The first 10 episodes of each client are no fixed
    # baseline: the learner updates after every 256 steps, within them (their means were
    # 25-42 across runs), hence the random policy's mean as the reference.
    first = [r for report in reports for r in report["first_returns"]]
    late = [r for report in reports for r in report["last_returns"]]
    assert first and late, reports
    late_mean = sum(late) / len(late)
    assert late_mean > sum(first) / len(first), reports
    assert late_mean > 2 * RANDOM_POLICY_RETURN, reports
