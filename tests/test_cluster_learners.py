"""DDP learners on a two-node Ray cluster on 127.0.0.1 (issue 17 items 3 and 6).

The cluster lives in a child process (:class:`tests.ray_helpers.LoopbackCluster`): a head with
no CPUs and two worker nodes with one CPU and one ``learner`` resource each, so the two learners
(``custom_resources_per_learner={"learner": 1}``) can only run one per node. The driver is
another child process joining through ``RAY_ADDRESS`` (as under ``ray job submit``); it builds
the run with the RLlib-style fluent config and trains PPO on CartPole with Ray Train's DDP
(gloo on CPU). Checkpoints go to a local directory standing in for shared storage, and the
test process restores one from there and trains on. Nothing here touches the session's local
Ray; both child processes are stopped by the test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.errors import ConfigError
from lightning_rl.ray_learners import RayLearnerSettings, RayTrainRun, param_digest
from lightning_rl.training_run import TrainingRun
from tests.ray_helpers import ROOT, LoopbackCluster, child_env

ITERATIONS = 2
STEPS_PER_LEARNER = 64  # train_batch_size in tests/cluster_learners_driver.py


def _run_driver(address: str, storage: str, timeout_s: float) -> dict:
    settings = {"storage_path": storage, "iterations": ITERATIONS}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "cluster_learners_driver.py"), json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=child_env(RAY_ADDRESS=address),
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    reports = [line[2:] for line in output.splitlines() if line.startswith("@@")]
    assert proc.returncode == 0 and reports, output[-6000:]
    return json.loads(reports[-1])


@pytest.mark.timeout(420)
def test_two_ddp_learners_one_per_node_stay_in_sync_and_checkpoint_to_shared_storage(tmp_path):
    shared = tmp_path / "shared"
    with LoopbackCluster(num_cpus=0) as cluster:
        nodes = [cluster.add_node(num_cpus=1, resources={"learner": 1}) for _ in range(2)]
        result = _run_driver(cluster.address, str(shared), timeout_s=360)

    ranks = result["learner_ranks"]
    assert len(ranks) == 2
    assert sorted(r["node_id"] for r in ranks) == sorted(nodes), "one learner on each 'learner' node"
    assert ranks[0]["param_sha256"] == ranks[1]["param_sha256"], "DDP kept both ranks' weights equal"
    assert result["training_iteration"] == ITERATIONS
    # Each learner sampled its own batch every iteration; the counter is global.
    assert result["num_env_steps_sampled_lifetime"] == 2 * ITERATIONS * STEPS_PER_LEARNER

    # The checkpoints are in the shared directory, one per iteration, the last one reported.
    files = sorted(shared.glob("*/checkpoint_*/checkpoint.ckpt"))
    assert len(files) == ITERATIONS
    assert result["checkpoint"] in {str(f) for f in files}

    # It restores outside the cluster: same weights as the learners, same iteration, and
    # training continues from it (optimizer state and counters included).
    run = TrainingRun.from_checkpoint(result["checkpoint"], {"default_root_dir": str(tmp_path / "local")})
    try:
        assert param_digest(run.algorithm) == ranks[0]["param_sha256"]
        assert run.iteration == ITERATIONS
        more = run.train()
        assert more["training_iteration"] == ITERATIONS + 1
        assert more["num_env_steps_sampled_lifetime"] == (2 * ITERATIONS + 1) * STEPS_PER_LEARNER
    finally:
        run.stop()


# -- settings checked at the door (no Ray needed) ----------------------------------------------
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"num_learners": 0}, "num_learners"),
        ({"num_cpus_per_learner": -1}, "num_cpus_per_learner"),
        ({"custom_resources_per_learner": {"CPU": 1}}, "custom_resources_per_learner"),
        ({"custom_resources_per_learner": {"learner": "one"}}, "learner"),
        ({"placement_strategy": "EVERYWHERE"}, "SPREAD"),
        ({"name": "../escape"}, "name"),
        ({"checkpoint_frequency": 0}, "checkpoint_frequency"),
    ],
)
def test_bad_learner_settings_are_one_clear_error(settings, named):
    with pytest.raises(ConfigError, match=named):
        RayLearnerSettings(**settings)


def test_learner_resources_use_rllibs_names():
    settings = RayLearnerSettings(
        num_learners=2, num_cpus_per_learner=2, num_gpus_per_learner=1, custom_resources_per_learner={"a": 1}
    )
    assert settings.resources_per_learner() == {"CPU": 2.0, "GPU": 1.0, "a": 1.0}


def test_fluent_learner_placement_is_checked_and_round_trips():
    with pytest.raises(ConfigError, match="'local', 'ray'"):
        PPOConfig().learners(learner_placement="cluster")
    config = PPOConfig().learners(
        num_learners=2,
        learner_placement="ray",
        custom_resources_per_learner={"learner": 1},
        storage_path="s3://b/r",
    )
    rebuilt = PPOConfig().update_from_dict(config.to_dict())
    assert rebuilt.learner_placement == "ray"
    assert rebuilt.ray_learner_settings == {
        "custom_resources_per_learner": {"learner": 1},
        "storage_path": "s3://b/r",
    }
    assert "learner_placement" not in PPOConfig().to_dict(), "configs without Ray learners are unchanged"


def test_trainer_settings_that_ray_decides_are_refused():
    with pytest.raises(ConfigError, match="strategy"):
        RayTrainRun(PPO, {"env": "CartPole-v1"}, {"strategy": "ddp"})
