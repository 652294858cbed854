"""RLlib's ``algo.restore_from_path(path, component=...)`` (issue 19 item 8): a BC checkpoint's
RLModule weights go into PPO's bigger module (RLlib's BC-then-PPO example), RLlib-style
component paths included; nothing else of the run changes; unknown components and module ids
give one error naming the choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_rl import BCConfig, Columns, RLModuleSpec, TorchRLModule, ValueFunctionAPI
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.checkpoint_components import (
    COMPONENT_LEARNER,
    COMPONENT_LEARNER_GROUP,
    COMPONENT_RL_MODULE,
    restore_modules,
)
from lightning_rl.errors import CheckpointError, ConfigError, UnknownNameError
from lightning_rl.offline.record import record_episodes

RL_MODULE = f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"


class SmallBCModel(TorchRLModule):
    """Logits only, as RLlib's example BC model."""

    def setup(self):
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))

    def _forward(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self.net(batch[Columns.OBS])}


class SmallPPOModel(SmallBCModel, ValueFunctionAPI):
    """The BC model plus a zero value head (PPO fine-tunes it)."""

    def setup(self):
        super().setup()
        self.vf = nn.Linear(4, 1)
        nn.init.zeros_(self.vf.weight)
        nn.init.zeros_(self.vf.bias)

    def compute_values(self, batch, embeddings=None):
        return self.vf(batch[Columns.OBS]).squeeze(-1)


@pytest.fixture(scope="module")
def bc_checkpoint(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    tmp = tmp_path_factory.mktemp("bc")
    record_episodes(PPO("CartPole-v1"), tmp / "data", 200, num_envs=2, seed=0)
    algo = (
        BCConfig()
        .environment("CartPole-v1")
        .offline_data(input_=str(tmp / "data"), dataset_num_iters_per_learner=2)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=SmallBCModel))
        .training(train_batch_size=32)
        .trainer(default_root_dir=str(tmp), logger=False)
        .build_algo()
    )
    try:
        algo.train()
        weights = {k: v.clone() for k, v in algo.algorithm.module.rl_module.state_dict().items()}
        return algo.save(tmp / "bc"), weights
    finally:
        algo.stop()


def _ppo(tmp_path):
    return (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=SmallPPOModel))
        .training(train_batch_size=32, minibatch_size=32, num_epochs=1)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )


def test_bc_module_weights_go_into_ppos_module(bc_checkpoint, tmp_path, monkeypatch):
    checkpoint, bc_weights = bc_checkpoint
    ppo = _ppo(tmp_path)
    try:
        module = ppo.algorithm.module.rl_module
        # RLlib's form: the component's directory inside the checkpoint, and the component.
        ppo.restore_from_path(Path(checkpoint) / RL_MODULE, component=RL_MODULE)
        for key, value in bc_weights.items():
            assert torch.equal(module.state_dict()[key], value)
        assert torch.all(module.vf.weight == 0)  # PPO's own head is left as it was
        assert ppo.iteration == 0  # only the module: no resume of BC's counters
        with pytest.raises(UnknownNameError, match=r"Unknown checkpoint component 'env_runner'.*rl_module"):
            ppo.restore_from_path(checkpoint, component="env_runner")
        # One module by id, from the checkpoint file itself; then PPO trains on.
        with torch.no_grad():
            module.net[0].weight.zero_()
        ppo.restore_from_path(checkpoint, component=f"{RL_MODULE}/default_policy")
        assert torch.equal(module.net[0].weight, bc_weights["net.0.weight"])
        assert ppo.train()["training_iteration"] == 1
        # Without a component: the whole run, as restore() (weights now, counters at the next
        # train()); it builds from the names in the file, so the user's class must be allowed.
        saved = ppo.save(tmp_path / "ppo")
        monkeypatch.setenv("LIGHTNING_RL_TRUSTED_CLASSES", f"{__name__}:SmallPPOModel")
        with torch.no_grad():
            module.net[0].weight.zero_()
        ppo.restore_from_path(saved)
        assert ppo.iteration == 1 and torch.any(module.net[0].weight != 0)
    finally:
        ppo.stop()


def test_unknown_components_and_module_ids_are_refused(bc_checkpoint):
    checkpoint, _ = bc_checkpoint
    ppo = PPO("CartPole-v1", rl_module_spec=RLModuleSpec(module_class=SmallPPOModel))
    with pytest.raises(UnknownNameError, match=r"Unknown checkpoint component 'learner_group'"):
        restore_modules(ppo, checkpoint, "learner_group")
    with pytest.raises(UnknownNameError, match="nope"):
        restore_modules(ppo, checkpoint, f"{RL_MODULE}/nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        restore_modules(ppo, Path(checkpoint).parent / "missing.ckpt", RL_MODULE)
    # A default PPO's networks are not the BC model's: one error, nothing half-loaded.
    plain = PPO("CartPole-v1")
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    with pytest.raises(ConfigError, match=r"is a user's RLModule .* is lightning-rl's default networks"):
        restore_modules(plain, checkpoint, RL_MODULE)
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_load_state_path_takes_rllibs_module_path(bc_checkpoint):
    checkpoint, bc_weights = bc_checkpoint
    spec = RLModuleSpec(module_class=SmallPPOModel, load_state_path=str(Path(checkpoint) / RL_MODULE))
    module = PPO("CartPole-v1", rl_module_spec=spec).module.rl_module
    assert all(torch.equal(module.state_dict()[k], v) for k, v in bc_weights.items())
    with pytest.raises(ConfigError, match="has no RLModule policy 'nope'"):
        PPO(
            "CartPole-v1",
            rl_module_spec=RLModuleSpec(
                module_class=SmallPPOModel, load_state_path=str(Path(checkpoint) / RL_MODULE / "nope")
            ),
        )


def test_the_same_algorithms_module_comes_back_whole(tmp_path):
    """Default networks, same algorithm: the module's whole saved state (actor, critic) loads;
    the target's other state (its optimizer, counters) is not touched."""
    run = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .rl_module(model_config={"fcnet_hiddens": [8]})
        .training(train_batch_size=32, minibatch_size=32, num_epochs=1)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        run.train()
        checkpoint = run.save(tmp_path / "ppo")
        trained = {k: v.clone() for k, v in run.algorithm.policies["default_policy"].state_dict().items()}
    finally:
        run.stop()
    fresh = PPO("CartPole-v1", model_config={"fcnet_hiddens": [8]})
    component = f"{RL_MODULE}/default_policy"
    assert restore_modules(fresh, Path(checkpoint) / component, component) == ["default_policy"]
    state = fresh.policies["default_policy"].state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
