"""Runs on a multi-node Ray cluster on 127.0.0.1: join by RAY_ADDRESS, wait for a node, place
runners by a custom resource, survive a killed node.

Every cluster lives in a child process (:class:`tests.ray_helpers.LoopbackCluster`) and every
training run in another (:class:`tests.ray_helpers.Driver`, joining through ``RAY_ADDRESS`` as
``ray job submit`` or a KubeRay RayJob would make it), so nothing here touches the session's
local Ray of ``tests/conftest.py``; both are stopped by the test that started them.
"""

from __future__ import annotations

import time

import pytest

from tests.ray_helpers import Driver, LoopbackCluster

# Small PPO that learns CartPole in a few thousand steps; runners need the "sim" resource.
PPO_SETTINGS = dict(
    num_env_runners=2,
    num_envs_per_env_runner=4,
    num_cpus_per_env_runner=0.5,
    custom_resources_per_env_runner={"sim": 1},
    train_batch_size=256,
    minibatch_size=256,
    num_epochs=10,
    lr=1e-3,
    gamma=0.98,
    lambda_=0.8,
    seed=0,
    evaluation_duration=10,
    env_runner_health_probe_timeout_s=5.0,
)

# A KubeRay head's workers arrive after the job started: the worker node joins this much later.
JOIN_DELAY_S = 20.0


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.timeout(240)
def test_ray_address_run_waits_on_a_zero_cpu_head_then_places_runners_on_the_node_that_joins(tmp_path):
    # A KubeRay-style head: no CPUs, the workers come later (here: added by the test).
    with LoopbackCluster(num_cpus=0) as cluster:
        started = time.monotonic()
        driver = Driver({**PPO_SETTINGS, "max_epochs": 2}, cluster.address, tmp_path / "driver.log")
        try:
            _wait_for(
                lambda: driver.stderr_contains("cannot place the EnvRunners yet"),
                120,
                "the wait to be logged",
            )
            assert driver.stderr_contains("'sim': 2.0"), "the log names what is missing"
            # The worker joins no sooner than 20 s after the run started (the case); on a
            # loaded machine the wait is often logged later than that, and then nothing is added.
            time.sleep(max(0.0, JOIN_DELAY_S - (time.monotonic() - started)))
            node = cluster.add_node(num_cpus=2, resources={"sim": 2})
            events = [driver.next_event(180) for _ in range(3)]
        finally:
            driver.close()
    epochs, done = events[:2], events[2]
    assert done["done"]
    assert done["runner_nodes"] == [node, node], "both runners run on the node with the 'sim' resource"
    assert node != cluster.head_id
    for epoch in epochs:
        assert epoch["env_runners/num_env_steps_sampled"] == 256
        assert epoch["env_runners/num_healthy_env_runners"] == 2


@pytest.mark.timeout(300)
def test_a_killed_node_is_survived_with_the_batch_size_kept_and_learning_intact(tmp_path):
    with LoopbackCluster(num_cpus=0) as cluster:
        keep = cluster.add_node(num_cpus=1, resources={"sim": 1})
        lost = cluster.add_node(num_cpus=1, resources={"sim": 1})
        settings = {
            **PPO_SETTINGS,
            "max_epochs": 150,
            "stop_return": 150.0,
            "stop_metric": "env_runners/episode_return_mean",
            # A rolling mean over 20 episodes, not RLlib's 100: with one or two ~200-step episodes
            # per 256-step iteration a 100-episode window lags the policy by ~40 iterations. Local
            # Ray, seeds 0-2: 150 is reached at iteration 53 / 35 / 28 (window 100: 77 / 71 / 78,
            # and one CI run under load missed 150 within 150 iterations).
            "metrics_num_episodes_for_smoothing": 20,
            # ... and only once the lost runner's replacement was started: the lost actor is
            # first probed for env_runner_health_probe_timeout_s (5 s), and the survivor alone
            # can reach 150 sooner (~30 iterations, 2-3 s).
            "stop_after_restarts": 1,
        }
        driver = Driver(settings, cluster.address, tmp_path / "driver.log")
        events = []
        replacement = None
        try:
            while True:
                event = driver.next_event(180)
                events.append(event)
                if event.get("done"):
                    break
                if event["epoch"] == 2:
                    assert sorted(event["runner_nodes"]) == sorted([keep, lost])
                    cluster.remove_node(lost)
                if (
                    event["epoch"] > 2
                    and replacement is None
                    and event["env_runners/num_pending_replacements"]
                ):
                    replacement = cluster.add_node(num_cpus=1, resources={"sim": 1})
        finally:
            driver.close()
    done = events[-1]
    assert done["reached"], events[-2]
    assert done["restarts"] >= 1, "the lost node's runner was replaced"
    assert replacement is not None, "a replacement waited for a node with the 'sim' resource"
    assert lost not in done["runner_nodes"]
    # The lost runner's fragments were sampled by the survivor: no iteration learned from less.
    assert all(e["env_runners/num_env_steps_sampled"] == 256 for e in events[:-1])
    assert any(e["env_runners/num_reassigned_fragments"] > 0 for e in events[:-1])
