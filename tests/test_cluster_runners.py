"""Cluster-facing runner settings on the session's local Ray: placement settings, placement
groups, waiting for resources, slow runners, partial start-up, the numpy data path.

The multi-node behaviour (RAY_ADDRESS, a 0-CPU head, custom-resource placement, a lost node)
is in ``tests/test_cluster.py``.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict, defaultdict, namedtuple

import gymnasium as gym
import numpy as np
import pytest
import torch

from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.data.experience import results_to_tensordict
from lightning_rl.env_runners import EnvRunner, EnvRunnerGroup, FaultToleranceConfig
from lightning_rl.env_runners.env_runner_group import (
    INLINE_STATE_BYTES,
    EnvRunnerPlacement,
    merge_fragments,
    numpy_results,
    state_argument,
    torch_result,
)
from lightning_rl.env_runners.wire import WireArray, tensors_from_wire, tensors_to_wire
from lightning_rl.errors import ConfigError
from lightning_rl.ray_cluster import ensure_ray, missing_resources


class SlowOnceEnv(gym.Wrapper):
    """CartPole whose first runner (never a replacement) sleeps ``delay`` s once, at step 30."""

    def __init__(self, config=None) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.slow = getattr(config, "worker_index", 0) == 1 and not getattr(config, "recreated_worker", False)
        self.delay = float(dict(config or {}).get("delay", 0.0))
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.slow and self.steps == 30:
            time.sleep(self.delay)
        return self.env.step(action)


class SlowStartEnv(gym.Wrapper):
    """CartPole that takes ``delay`` s to build on runner 2."""

    def __init__(self, config=None) -> None:
        if getattr(config, "worker_index", 0) == 2:
            time.sleep(float(dict(config or {}).get("delay", 0.0)))
        super().__init__(gym.make("CartPole-v1"))


def _group(env, env_config, fault_tolerance, **kwargs) -> tuple[EnvRunnerGroup, dict]:
    algo = PPO(env, env_config, seed=0)
    group = EnvRunnerGroup(
        algo.env_runner_spec(num_envs=1), num_env_runners=2, fault_tolerance=fault_tolerance, **kwargs
    )
    return group, algo.policy_state()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"custom_resources_per_env_runner": {"CPU": 1}}, "must be a custom resource name"),
        ({"custom_resources_per_env_runner": {"sim": 0}}, r"custom_resources_per_env_runner\['sim'\]"),
        ({"num_gpus_per_env_runner": -1}, "num_gpus_per_env_runner must be"),
        ({"placement_strategy": "TIGHT"}, r"placement_strategy 'TIGHT' is unknown.*PACK"),
        ({"env_runner_scheduling_strategy": "NEAR"}, r"'NEAR' is unknown.*SPREAD"),
        ({"env_runner_scheduling_strategy": {"node": "x"}}, "node affinity"),
        ({"placement_strategy": "PACK", "env_runner_scheduling_strategy": "SPREAD"}, "exclude each other"),
        ({"env_runner_label_selector": {"zone": 1}}, "label_selector must be a dict of strings"),
        (
            {"num_env_runners": 2, "min_healthy_env_runners": 3},
            r"min_healthy_env_runners.*\[1, num_env_runners=2\]",
        ),
        ({"ray_resources_timeout_s": 0}, "ray_resources_timeout_s must be a positive number"),
        ({"evaluation_custom_resources_per_env_runner": {"GPU": 1}}, "must be a custom resource name"),
        ({"ray_init_kwargs": "namespace=x"}, "ray_init_kwargs must be a dict"),
    ],
)
def test_bad_placement_settings_are_one_clear_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        PPO("CartPole-v1", **settings)


def test_fluent_config_takes_rllib_placement_names():
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(
            num_env_runners=2, num_gpus_per_env_runner=0.5, custom_resources_per_env_runner={"sim": 1}
        )
        .resources(placement_strategy="SPREAD")
        .fault_tolerance(min_healthy_env_runners=1)
    )
    algo = config.build_algorithm()
    placement = EnvRunnerPlacement(**algo.env_runner_placement_kwargs())
    assert placement.bundle() == {"CPU": 1.0, "GPU": 0.5, "sim": 1.0}
    assert placement.placement_strategy == "SPREAD"
    evaluation = EnvRunnerPlacement(
        **PPO("CartPole-v1", evaluation_num_cpus_per_env_runner=2).env_runner_placement_kwargs(True)
    )
    assert evaluation.bundle() == {"CPU": 2.0}
    assert algo.fault_tolerance_config().min_healthy_env_runners == 1


def test_missing_resources_are_requested_and_named_after_the_timeout(ray_session, caplog):
    assert missing_resources([{"CPU": 1}]) == {}
    assert missing_resources([{"CPU": 1, "no_such_resource": 2}]) == {"CPU": 1.0, "no_such_resource": 2.0}
    with pytest.raises(ConfigError, match=r"still lacks \{.*'no_such_resource': 2\.0\} after waiting 1 s"):
        ensure_ray(bundles=[{"CPU": 1, "no_such_resource": 2}], timeout_s=1)
    assert "cannot place the EnvRunners yet" in caplog.text


def test_results_cross_ray_as_numpy_and_arrive_as_writable_tensors(ray_session):
    algo = PPO("CartPole-v1", seed=0)
    runner = numpy_results(EnvRunner)(algo.env_runner_spec(num_envs=2))
    raw = runner.sample(8, True, algo.policy_state())
    assert type(raw.data["observation"]).__name__ == "ndarray"
    converted = torch_result(raw)
    assert isinstance(converted.data["next"]["reward"], torch.Tensor)
    runner.stop()
    group = EnvRunnerGroup(
        algo.env_runner_spec(num_envs=2), num_env_runners=1, placement=EnvRunnerPlacement(num_cpus=0.5)
    )
    try:
        (result,) = group.sample(8, algo.policy_state())
        observation = result.data["observation"]
        assert isinstance(observation, torch.Tensor) and observation.shape[:2] == (2, 8)
        observation.add_(1.0)  # writable memory, not the object store's read-only pages
        # zero_copy: Ray's arrays as delivered, read-only views that numpy refuses to write ...
        first, second = (
            group.sample(8, algo.policy_state(), zero_copy=True)[0],
            group.sample(8, zero_copy=True)[0],
        )
        shared = first.data["observation"]
        assert isinstance(shared, np.ndarray) and not shared.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            shared[0, 0, 0] = 1.0
        # ... copied exactly once, by the merge, into memory the learner owns (no warning).
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            one = merge_fragments([first.data])
            two = results_to_tensordict([first, second])
        assert one["observation"].data_ptr() != shared.ctypes.data
        assert torch.equal(one["observation"], torch.from_numpy(shared.copy()))
        assert two.batch_size == (4, 8) and torch.equal(two["observation"][:2], one["observation"])
        assert torch.equal(two["observation"][2:], torch.from_numpy(second.data["observation"].copy()))
        two["observation"].add_(1.0)
        assert torch.equal(one["observation"], torch.from_numpy(shared.copy())), "Ray's buffer untouched"
        local = torch.zeros(2, 3)
        assert merge_fragments([local]) is local, "a private tensor of one runner is not copied"
    finally:
        group.stop()


def test_the_learners_state_crosses_ray_as_arrays_and_arrives_as_the_same_tensors(ray_session):
    import ray

    weights = OrderedDict(w=torch.randn(3, 4), steps=torch.tensor(7), mask=torch.tensor([True, False]))
    weights._metadata = OrderedDict({"": {"version": 1}})
    Pair = namedtuple("Pair", "first second")
    extra = {
        "half": torch.ones(2, dtype=torch.bfloat16),
        "parameter": torch.nn.Parameter(torch.ones(2)),
        "counts": defaultdict(list, seen=[torch.arange(3)]),
        "pair": Pair(torch.zeros(2), 5),
    }
    state = {
        "version": 3,
        "policies": {"p": {"weights": weights, "extra": extra}},
        "connectors": {"p": [{"count": 2.0, "mean": np.zeros(4), "m2": np.ones(4)}]},
    }
    wire = tensors_to_wire(state)
    assert isinstance(wire["policies"]["p"]["weights"]["w"], WireArray)
    arrived = tensors_from_wire(ray.get(ray.put(wire)))
    sent, got = state["policies"]["p"], arrived["policies"]["p"]
    assert type(got["weights"]) is OrderedDict and got["weights"]._metadata == weights._metadata
    for key, tensor in sent["weights"].items():
        assert type(got["weights"][key]) is torch.Tensor and got["weights"][key].dtype == tensor.dtype
        assert torch.equal(got["weights"][key], tensor)
    assert got["weights"]["w"].numpy().flags.writeable, "memory the runner owns, not the object store's pages"
    # What numpy cannot hold exactly keeps Ray's own pickling; containers keep their types.
    assert got["extra"]["half"].dtype == torch.bfloat16
    assert type(got["extra"]["parameter"]) is torch.nn.Parameter and got["extra"]["parameter"].requires_grad
    assert got["extra"]["counts"].default_factory is list and torch.equal(
        got["extra"]["counts"]["seen"][0], torch.arange(3)
    )
    assert type(got["extra"]["pair"]) is Pair and torch.equal(got["extra"]["pair"].first, torch.zeros(2))
    assert isinstance(arrived["connectors"]["p"][0]["mean"], np.ndarray) and arrived["version"] == 3

    # A small state goes inside each call, as a copy, tensors not converted included (an
    # asynchronous sampler sends it after the learner's next steps); a large one, bfloat16 or
    # not, into the object store once, serialised at once.
    inline = state_argument(state)
    assert isinstance(inline, dict)
    weights["w"].add_(1.0)
    extra["half"].add_(1.0)
    decoded = tensors_from_wire(inline)["policies"]["p"]
    assert torch.equal(decoded["weights"]["w"] + 1.0, weights["w"])
    assert torch.equal(decoded["extra"]["half"] + 1.0, extra["half"])
    for dtype in (torch.float32, torch.bfloat16):
        large = {"policies": {"p": {"weights": {"w": torch.zeros(INLINE_STATE_BYTES // 2, dtype=dtype)}}}}
        assert isinstance(state_argument(large), ray.ObjectRef), dtype

    def runner_weights(view):
        return {k: v.clone() for k, v in view.policy.net.state_dict().items()}

    for hiddens in ([8], [160, 160]):  # ~0.5 KB inside the calls, ~110 KB through the object store
        algo = PPO("CartPole-v1", seed=0, model_config={"fcnet_hiddens": hiddens})
        group = EnvRunnerGroup(
            algo.env_runner_spec(num_envs=1), num_env_runners=1, placement=EnvRunnerPlacement(num_cpus=0.5)
        )
        try:
            policy_state = algo.policy_state()
            for tensor in policy_state["policies"][algo.policy_ids[0]]["weights"].values():
                tensor.uniform_(-1.0, 1.0)
            policy_state["version"] = 99
            for how in ("set_state", "sample", "evaluate"):
                if how == "set_state":
                    group.set_state(policy_state)
                elif how == "sample":
                    group.sample(4, policy_state)
                else:
                    group.evaluate(1, policy_state)
                (loaded,) = group.foreach_env_runner(runner_weights)
                for key, tensor in policy_state["policies"][algo.policy_ids[0]]["weights"].items():
                    assert torch.equal(loaded[key], tensor), (hiddens, key)
                policy_state["version"] += 1
                for tensor in policy_state["policies"][algo.policy_ids[0]]["weights"].values():
                    tensor.mul_(0.5)
        finally:
            group.stop()


def test_a_slow_runner_is_left_alone_its_fragment_sampled_elsewhere_and_its_late_result_dropped(ray_session):
    ft = FaultToleranceConfig(sample_timeout_s=2.0, env_runner_hung_timeout_s=120.0)
    group, state = _group(SlowOnceEnv, {"delay": 8.0}, ft, placement=EnvRunnerPlacement(num_cpus=0.5))
    try:
        results = group.sample(50, state)
        assert len(results) == 2, "train_batch_size is kept: two fragments as configured"
        assert [r.worker_index for r in results] == [2, 2], "runner 2 sampled runner 1's fragment"
        assert group.num_reassigned_fragments == 1 and group.num_restarts == 0
        deadline = time.monotonic() + 60
        while group.num_late_results_dropped == 0 and time.monotonic() < deadline:
            results = group.sample(10, state)
        assert group.num_late_results_dropped == 1, "the slow call's result came back and was dropped"
        results = group.sample(10, state)
        assert sorted(r.worker_index for r in results) == [1, 2], "the slow runner samples again"
        assert group.num_restarts == 0 and group.num_failures == 0
    finally:
        group.stop()


def test_sampling_starts_with_min_healthy_env_runners_and_the_rest_join_later(ray_session):
    ft = FaultToleranceConfig(min_healthy_env_runners=1)
    start = time.monotonic()
    group, state = _group(SlowStartEnv, {"delay": 12.0}, ft, placement=EnvRunnerPlacement(num_cpus=0.5))
    try:
        assert group.num_healthy_runners == 1 and group.num_pending_replacements == 1
        results = group.sample(20, state)
        assert [r.worker_index for r in results] == [1, 1], "the healthy runner samples both fragments"
        deadline = start + 120
        while group.num_healthy_runners < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            group.poll_replacements()
        assert group.num_healthy_runners == 2 and group.num_restarts == 0
        assert sorted(r.worker_index for r in group.sample(20, state)) == [1, 2]
    finally:
        group.stop()


def test_runners_reserved_in_a_placement_group_and_released_on_stop(ray_session):
    from ray.util import placement_group_table

    algo = PPO("CartPole-v1", seed=0)
    group = EnvRunnerGroup(
        algo.env_runner_spec(num_envs=1),
        num_env_runners=2,
        placement=EnvRunnerPlacement(num_cpus=0.5, placement_strategy="PACK"),
    )
    pg_id = group._placement_group.id.hex()
    try:
        assert placement_group_table()[pg_id]["state"] == "CREATED"
        assert len(group.sample(10, algo.policy_state())) == 2
    finally:
        group.stop()
    assert placement_group_table()[pg_id]["state"] == "REMOVED"
