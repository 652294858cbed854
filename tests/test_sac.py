"""SAC (continuous and discrete): learning, losses against torchrl's, actions and bounds, errors, CLI."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import DiscreteSACLoss, SACLoss

from lightning_rl.algorithms.sac import SAC, DiscreteSACModule, SACConfig, SACModule
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.model_config import resolve_model_config
from lightning_rl.modules.sac_networks import SquashedGaussianPolicy
from lightning_rl.registry import get_algorithm_class
from tests.envs import ActionSpaceEnv
from tests.test_cli import quiet, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")

REPO = Path(__file__).resolve().parents[1]
PENDULUM = REPO / "configs" / "sac" / "pendulum.yaml"
DISCRETE_CARTPOLE = REPO / "configs" / "sac" / "cartpole.yaml"


def config_args(path: Path) -> dict:
    return dict(yaml.safe_load(path.read_text())["model"]["init_args"])


def train_to(algo, quiet_trainer_kwargs, threshold, max_env_steps):
    stop = StopOnReturn(threshold)
    trainer = pl.Trainer(
        **{**quiet_trainer_kwargs, "max_epochs": 10_000, "check_val_every_n_epoch": 4},
        callbacks=[stop, StopOnEnvSteps(max_env_steps)],
    )
    trainer.fit(algo)
    return stop, trainer


@pytest.mark.learning
def test_sac_learns_pendulum_to_minus_200_within_20k_steps(quiet_trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    algo = SAC(**{**config_args(PENDULUM), "seed": 0})
    stop, trainer = train_to(algo, quiet_trainer_kwargs, -200, 20_000)
    assert stop.reached_at is not None, f"evaluation return only {trainer.callback_metrics}"


@pytest.mark.learning
def test_discrete_sac_learns_cartpole_to_400(quiet_trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    algo = SAC(**{**config_args(DISCRETE_CARTPOLE), "seed": 0})
    assert isinstance(algo.module, DiscreteSACModule)
    stop, trainer = train_to(algo, quiet_trainer_kwargs, 400, 100_000)
    assert stop.reached_at is not None, f"evaluation return only {trainer.callback_metrics}"


def random_batch(size, obs_dim, action, generator):
    return TensorDict(
        {
            "observation": torch.randn(size, obs_dim, generator=generator),
            "action": action,
            "next": {
                "observation": torch.randn(size, obs_dim, generator=generator),
                "reward": torch.randn(size, 1, generator=generator),
                "terminated": torch.rand(size, 1, generator=generator) < 0.2,
                "done": torch.zeros(size, 1, dtype=torch.bool),
            },
            "steps_to_next_obs": torch.randint(1, 4, (size, 1), generator=generator),
            "priority_weight": torch.rand(size, generator=generator),
        },
        [size],
    )


def test_continuous_losses_match_torchrls_sac_loss():
    torch.manual_seed(0)
    obs_space, action_space = gym.spaces.Box(-1.0, 1.0, (3,)), gym.spaces.Box(-1.0, 1.0, (2,))
    module = SACModule(
        obs_space,
        action_space,
        resolve_model_config({"fcnet_hiddens": [16]}),
        gamma=0.9,
        n_step=3,
        num_q_nets=2,
        initial_alpha=0.5,
        target_entropy=-2.0,
    )

    class LocScale(nn.Module):
        def forward(self, obs):
            loc, log_std = module.actor(obs)
            return loc, log_std.exp()

    class QValue(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, obs, action):
            return self.net(torch.cat([obs, action], -1))

    actor = ProbabilisticActor(
        TensorDictModule(LocScale(), in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0, "tanh_loc": False},
        return_log_prob=True,
        spec=Bounded(-1.0, 1.0, (2,)),
    )
    critics = [
        ValueOperator(QValue(module.critic.net.member(i)), in_keys=["observation", "action"])
        for i in range(2)
    ]
    reference = SACLoss(actor, critics, loss_function="l2", alpha_init=0.5, target_entropy=-2.0)
    reference.make_value_estimator(gamma=0.9)
    generator = torch.Generator().manual_seed(0)
    size = 50_000  # the losses are expectations over sampled actions: compare them on many samples
    batch = random_batch(size, 3, torch.rand(size, 2, generator=generator) * 2 - 1, generator)
    _, td_error, ours = module.compute_loss(batch)
    theirs = reference(batch.clone())
    ours = {k: float(v.detach()) for k, v in ours.items()}
    theirs = {k: float(v.detach()) for k, v in theirs.items()}
    assert 2 * ours["critic_loss"] == pytest.approx(theirs["loss_qvalue"], rel=0.02)
    assert ours["actor_loss"] == pytest.approx(theirs["loss_actor"], rel=0.02, abs=0.01)
    assert ours["alpha_loss"] == pytest.approx(theirs["loss_alpha"], rel=0.02, abs=0.01)
    assert ours["entropy"] == pytest.approx(theirs["entropy"], rel=0.02, abs=0.01)
    assert td_error.shape == (size,)


def test_discrete_losses_equal_torchrls_discrete_sac_loss():
    torch.manual_seed(0)
    obs_space, action_space = gym.spaces.Box(-1.0, 1.0, (3,)), gym.spaces.Discrete(4)
    module = DiscreteSACModule(
        obs_space,
        action_space,
        resolve_model_config({"fcnet_hiddens": [16]}),
        gamma=0.9,
        n_step=3,
        num_q_nets=2,
        initial_alpha=0.5,
        target_entropy=0.7,
    )

    class Logits(nn.Module):
        def forward(self, obs):
            return module.actor(obs)[0]

    actor = ProbabilisticActor(
        TensorDictModule(Logits(), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critics = [
        TensorDictModule(member, in_keys=["observation"], out_keys=["action_value"])
        for member in module.critic.members
    ]
    reference = DiscreteSACLoss(
        actor,
        critics,
        action_space="categorical",
        num_actions=4,
        loss_function="l2",
        alpha_init=0.5,
        target_entropy=0.7,
    )
    reference.make_value_estimator(gamma=0.9)
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(256, 3, torch.randint(0, 4, (256,), generator=generator), generator)
    total, td_error, ours = module.compute_loss(batch)
    theirs_batch = batch.clone()
    theirs = reference(theirs_batch)
    assert torch.allclose(2 * ours["critic_loss"], theirs["loss_qvalue"], atol=1e-5)
    assert torch.allclose(ours["actor_loss"], theirs["loss_actor"], atol=1e-5)
    assert torch.allclose(ours["alpha_loss"], theirs["loss_alpha"], atol=1e-5)
    assert torch.allclose(td_error, theirs_batch["td_error"], atol=1e-5)
    # The summed loss trains each parameter group with its own loss only.
    critic_grads = torch.autograd.grad(total, module.parameter_groups()["critic"], retain_graph=True)
    wanted = torch.autograd.grad(ours["critic_loss"], module.parameter_groups()["critic"])
    assert all(torch.allclose(a, b) for a, b in zip(critic_grads, wanted, strict=True))


def test_actions_are_squashed_into_the_bounds_and_evaluation_is_deterministic():
    obs_space, action_space = gym.spaces.Box(-1.0, 1.0, (3,)), gym.spaces.Box(-2.0, 3.0, (2,))
    policy = SquashedGaussianPolicy(obs_space, action_space, {"fcnet_hiddens": [8]})
    obs = torch.randn(1000, 3)
    generator = torch.Generator().manual_seed(0)
    explored = policy(obs, explore=True, generator=generator)["action"]
    assert explored.min() >= -2.0 and explored.max() <= 3.0
    evaluated = policy(obs, explore=False)["action"]
    assert torch.equal(evaluated, policy(obs, explore=False)["action"])
    loc, _ = policy.actor(obs)
    assert torch.allclose(evaluated, torch.tanh(loc) * 2.5 + 0.5)
    assert not torch.allclose(explored, evaluated)


def test_normalized_actions_let_the_unsquash_connector_map_minus_one_one_to_the_bounds():
    algo = SAC("Pendulum-v1")
    assert [s["name"] for s in algo.module_to_env_specs["default_policy"]] == ["UnsquashActions"]
    assert float(algo.module.actor.action_scale) == 1.0
    raw = SAC("Pendulum-v1", normalize_actions=False)
    assert float(raw.module.actor.action_scale) == 2.0  # Pendulum's torque bounds are +-2
    assert algo.module.target_entropy == -1.0  # "auto": -action_dim


@pytest.mark.parametrize("bad", ["high", [0.5], True])
def test_a_target_entropy_of_the_wrong_type_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match=r"target_entropy must be 'auto' or a number, got"):
        SAC("Pendulum-v1", target_entropy=bad)


def test_unbounded_or_unsupported_action_spaces_are_one_clear_error():
    with pytest.raises(SpaceError, match="action bounds, which must be finite"):
        SAC(ActionSpaceEnv, env_config={"kind": "unbounded"})
    with pytest.raises(SpaceError, match="SAC needs a 1-D Box or a Discrete action space, got MultiDiscrete"):
        SAC(ActionSpaceEnv, env_config={"kind": "multi_discrete"})


def test_sac_registry_fluent_config_and_one_iteration(tmp_path):
    assert get_algorithm_class("sac") is SAC
    run = (
        SACConfig()
        .environment("Pendulum-v1")
        .env_runners(rollout_fragment_length=64)
        .training(train_batch_size=32, num_steps_sampled_before_learning_starts=64, training_intensity=2)
        .trainer(default_root_dir=str(tmp_path))
        .build_algo()
    )
    with run:
        result = run.train()
    stats = result["learners"]["default_policy"]
    assert {"critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy"} <= set(stats)
    assert np.isfinite(stats["critic_loss"]) and int(run.algorithm.num_grad_updates_lifetime) == 4


@pytest.mark.parametrize("config", [PENDULUM, DISCRETE_CARTPOLE], ids=["pendulum", "discrete_cartpole"])
def test_cli_fit_from_the_config(tmp_path, config):
    proc = run_cli(["fit", "--config", str(config), "--trainer.max_epochs", "2", *quiet(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iterations=2" in proc.stdout


def test_a_checkpoint_serves_the_deterministic_policy_in_env_units(tmp_path):
    from lightning_rl.policy import Policy

    run = (
        SACConfig()
        .environment("Pendulum-v1")
        .env_runners(rollout_fragment_length=64)
        .training(train_batch_size=32, num_steps_sampled_before_learning_starts=64)
        .trainer(default_root_dir=str(tmp_path))
        .build_algo()
    )
    with run:
        run.train()
        path = run.save(tmp_path / "ckpt")
        actor = run.algorithm.module.actor
    policy = Policy.from_checkpoint(path)
    obs = np.array([0.6, -0.8, 0.3], dtype=np.float32)
    action = policy.compute_single_action(obs)
    expected = 2.0 * actor.mode(torch.as_tensor(obs).unsqueeze(0))[0].detach().numpy()  # unsquashed to +-2
    assert action.shape == (1,) and np.allclose(action, expected, atol=1e-5)
