"""A DataModule depends only on the data layer's ExperienceSource interface, not on Algorithm.

The fake below is the whole contract: a real CartPole env sampled by a real in-process
EnvRunner, a uniform policy, and a post-processing hook. No algorithm is built.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_rl.algorithms.bc import BC
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.data.on_policy import OnPolicyDataModule
from lightning_rl.data.source import ExperienceSource, OfflineExperienceSource, SamplingSettings
from lightning_rl.env_runners.env_runner import EnvRunnerSpec
from lightning_rl.env_runners.env_runner_group import FaultToleranceConfig
from lightning_rl.envs.registration import resolve_env
from lightning_rl.errors import ConfigError
from lightning_rl.modules.policy_networks import InferencePolicy, PolicySpec

DATA_DIR = Path(__file__).resolve().parents[1] / "lightning_rl" / "data"


class UniformPolicy(InferencePolicy):
    """Uniform random actions over ``n`` discrete actions."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, obs, explore=True, generator=None):
        rows = obs.shape[0]
        action = torch.randint(self.n, (rows,), generator=generator)
        return {"action": action, "action_log_prob": torch.full((rows,), -math.log(self.n))}


class FakeSource:
    """A minimal ExperienceSource: what the DataModule calls, and a record of the calls."""

    is_multi_agent = False
    policy_ids = [DEFAULT_POLICY_ID]
    device = torch.device("cpu")
    weights_version = 0

    def __init__(self, settings: SamplingSettings) -> None:
        self.settings = settings
        self.minibatch_generator = torch.Generator().manual_seed(0)
        self.processed_shapes: list[tuple[int, ...]] = []
        self.merged: list[Any] = []
        self.states_sent = 0

    def sampling_settings(self) -> SamplingSettings:
        return self.settings

    def env_runner_spec(self, num_envs: int, evaluation: bool = False, seed_offset: int = 0) -> EnvRunnerSpec:
        return EnvRunnerSpec(
            env_creator=resolve_env("CartPole-v1"),
            policy_spec=PolicySpec(UniformPolicy, {"n": 2}),
            num_envs=num_envs,
            seed=3 + seed_offset,
            update_connectors=not evaluation,
        )

    def env_runner_placement_kwargs(self, evaluation: bool = False) -> dict[str, Any]:
        return {"num_cpus": 1.0}

    def fault_tolerance_config(self) -> FaultToleranceConfig:
        return FaultToleranceConfig()

    def policy_state(self) -> dict[str, Any]:
        self.states_sent += 1
        policy = {"weights": {}, "extra": {}}
        return {"version": 0, "policies": {DEFAULT_POLICY_ID: policy}, "connectors": {DEFAULT_POLICY_ID: []}}

    def merge_connector_deltas(self, deltas) -> None:
        self.merged.append(deltas)

    def process_rollout(self, batch):
        self.processed_shapes.append(tuple(batch.batch_size))
        batch["advantage"] = batch["next", "reward"].clone()
        return batch

    def sequence_length(self) -> int | None:
        return None


def test_on_policy_datamodule_samples_for_a_fake_source():
    settings = SamplingSettings(
        num_env_runners=0,
        num_envs_per_env_runner=2,
        train_batch_size=32,
        minibatch_size=16,
        num_epochs=2,
        seed=3,
    )
    source = FakeSource(settings)
    datamodule = OnPolicyDataModule()
    datamodule.attach(source)
    datamodule.setup("fit")
    try:
        loader = datamodule.train_dataloader()
        minibatches = list(loader)
    finally:
        datamodule.close()
    # 32 steps = 2 env copies x 16 steps, post-processed once as [2, 16], then 2 epochs x 2 minibatches.
    assert source.processed_shapes == [(2, 16)]
    assert len(minibatches) == len(loader) == 4
    assert all(tuple(mb.batch_size) == (16,) for mb in minibatches)
    first = minibatches[0]
    assert torch.equal(first["advantage"], first["next", "reward"])
    assert set(first["action"].tolist()) <= {0, 1}
    assert first["observation"].shape == (16, 4)
    assert datamodule.num_env_steps_sampled_lifetime == 32
    assert source.states_sent == 1 and len(source.merged) == 1


def test_overrides_go_on_top_of_the_source_settings_and_unknown_names_are_refused():
    source = FakeSource(SamplingSettings(num_envs_per_env_runner=2, train_batch_size=32))
    datamodule = OnPolicyDataModule(num_envs_per_env_runner=4)
    datamodule.attach(source)
    assert datamodule.settings.num_envs_per_env_runner == 4
    assert datamodule.rollout_fragment_length() == 8  # 32 steps over 4 env copies
    typo = OnPolicyDataModule(num_env_runner=2)
    typo.attach(source)
    with pytest.raises(ConfigError, match=r"num_env_runner.*num_env_runners"):
        typo.settings  # noqa: B018


def test_the_data_layer_never_imports_the_algorithms_package():
    offenders = []
    for path in sorted(DATA_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("lightning_rl.algorithms")]
    assert offenders == []


def test_algorithms_implement_the_interface_their_datamodules_need():
    ppo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=32, num_epochs=3)
    assert isinstance(ppo, ExperienceSource) and isinstance(FakeSource(SamplingSettings()), ExperienceSource)
    settings = ppo.sampling_settings()
    assert (settings.train_batch_size, settings.minibatch_size, settings.num_epochs) == (64, 32, 3)
    assert isinstance(BC("CartPole-v1"), OfflineExperienceSource)
