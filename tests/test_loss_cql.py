"""CQL's written-out loss (``algorithms/cql/loss.py``) equals torchrl's ``CQLLoss`` and
``DiscreteCQLLoss`` on the same batch, weights and random draws; weights saved by the old
torchrl-based modules load into the new ones."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, QValueActor, ValueOperator
from torchrl.modules.distributions import TanhNormal
from torchrl.objectives import CQLLoss, DiscreteCQLLoss

from lightning_rl.algorithms.cql import CQLModule, DiscreteCQLModule
from lightning_rl.algorithms.cql.loss import CQL_KEYS
from lightning_rl.modules.model_config import DefaultModelConfig

OBS = gym.spaces.Box(-1.0, 1.0, (4,))
BOX = gym.spaces.Box(-1.0, 1.0, (2,))
MODEL = DefaultModelConfig(fcnet_hiddens=[16])
SIZE = 24


class _LocScale(nn.Module):
    def __init__(self, actor: nn.Module) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_std = self.actor(obs)
        return loc, log_std.exp()


class _Member(nn.Module):
    """One critic of the ensemble as the ``(obs, action) -> [B, 1]`` module torchrl stacks."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1))


def batch(discrete: bool = False) -> TensorDict:
    generator = torch.Generator().manual_seed(3)
    if discrete:
        action = torch.randint(0, 3, (SIZE,), generator=generator)
    else:
        action = torch.rand(SIZE, 2, generator=generator) * 2 - 1
        action[0] = 1.0  # on the bound: the behaviour-cloning log-probability must stay finite
    terminated = torch.zeros(SIZE, 1, dtype=torch.bool)
    terminated[::5] = True
    return TensorDict(
        {
            CQL_KEYS.observation: torch.randn(SIZE, 4, generator=generator),
            CQL_KEYS.action: action,
            "next": {
                "observation": torch.randn(SIZE, 4, generator=generator),
                "reward": torch.randn(SIZE, 1, generator=generator),
                "terminated": terminated,
                "done": terminated.clone(),
            },
        },
        batch_size=[SIZE],
    )


def continuous_module(**overrides) -> CQLModule:
    torch.manual_seed(0)
    settings = dict(
        gamma=0.9,
        tau=0.005,
        initial_alpha=0.5,
        target_entropy=-2.0,
        temperature=0.7,
        num_actions=5,
        min_q_weight=2.0,
        deterministic_backup=True,
        lagrangian=False,
        lagrangian_thresh=1.5,
    )
    module = CQLModule(OBS, BOX, MODEL, **{**settings, **overrides})
    with torch.no_grad():  # targets that differ from the online critics
        for parameter in module.target_critic.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return module


def torchrl_cql_loss(module: CQLModule) -> CQLLoss:
    """torchrl's ``CQLLoss`` on the module's actor, critics, target critics and temperatures."""
    config = module.loss_config
    low, high = -torch.ones(2), torch.ones(2)
    spec = Bounded(low, high, shape=(2,), dtype=torch.float32)
    actor = ProbabilisticActor(
        TensorDictModule(_LocScale(module.actor), in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high},
    )
    critic = ValueOperator(_Member(module.critic.net.member(0)), in_keys=["observation", "action"])
    loss = CQLLoss(
        actor,
        critic,
        loss_function="l2",
        alpha_init=float(module.log_alpha.detach().exp()),
        target_entropy=float(module.target_entropy),
        action_spec=spec,
        temperature=config.temperature,
        min_q_weight=config.min_q_weight,
        deterministic_backup=config.deterministic_backup,
        num_random=config.num_actions,
        with_lagrange=config.lagrangian,
        lagrange_thresh=config.lagrangian_thresh,
    )
    loss.make_value_estimator(gamma=config.gamma)
    with torch.no_grad():
        for params, ensemble in (
            (loss.qvalue_network_params, module.critic.net),
            (loss.target_qvalue_network_params, module.target_critic.net),
        ):
            for key, value in params.items(True, True):
                layer = int(key[-2]) // 2  # Sequential index of the Linear -> ensemble layer
                if key[-1] == "weight":
                    value.copy_(ensemble.weights[layer].transpose(1, 2))
                else:
                    value.copy_(ensemble.biases[layer].squeeze(1))
        if config.lagrangian:
            loss.log_alpha_prime.copy_(module.log_alpha_prime)
    return loss


def critic_gradients_as_torchrl(module: CQLModule) -> list[torch.Tensor]:
    grads = []
    for weight, bias in zip(module.critic.net.weights, module.critic.net.biases, strict=True):
        grads += [weight.grad.transpose(1, 2), bias.grad.squeeze(1)]
    return grads


@pytest.mark.parametrize("behaviour_cloning", [False, True])
@pytest.mark.parametrize("deterministic_backup", [True, False])
def test_written_out_cql_loss_equals_torchrls_cql_loss(behaviour_cloning, deterministic_backup):
    module = continuous_module(deterministic_backup=deterministic_backup)
    loss = torchrl_cql_loss(module)
    data = batch()

    torch.manual_seed(7)
    total, stats = module.compute_loss(data.clone(), behaviour_cloning)
    module.zero_grad()
    total.backward()
    ours = [p.grad.clone() for p in module.actor.parameters()] + critic_gradients_as_torchrl(module)
    ours_alpha = module.log_alpha.grad.clone()

    torch.manual_seed(7)
    out = loss(data.clone())
    actor_term = out["loss_actor_bc"] if behaviour_cloning else out["loss_actor"]
    expected = actor_term + out["loss_qvalue"] + out["loss_cql"] + out["loss_alpha"]
    module.zero_grad()
    loss.zero_grad()
    expected.backward()
    actor_params = dict(loss.actor_network_params.items(True, True))
    theirs = [
        actor_params[("module", "0", "module", "actor", *name.split("."))].grad
        for name, _ in module.actor.named_parameters()
    ]
    theirs += [p.grad for _, p in loss.qvalue_network_params.items(True, True)]

    assert torch.isfinite(total)
    torch.testing.assert_close(stats["critic_loss"], out["loss_qvalue"])
    torch.testing.assert_close(stats["cql_loss"], out["loss_cql"])
    torch.testing.assert_close(stats["actor_loss"], actor_term)
    torch.testing.assert_close(stats["alpha_loss"], out["loss_alpha"])
    torch.testing.assert_close(stats["entropy"], out["entropy"])
    torch.testing.assert_close(stats["alpha"], out["alpha"])
    torch.testing.assert_close(total, expected)
    assert len(ours) == len(theirs) == 8
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference)
    torch.testing.assert_close(ours_alpha, loss.log_alpha.grad)


def test_lagrangian_weight_scales_the_critics_penalty_and_follows_torchrls_alpha_prime_loss():
    """alpha' trains like torchrl's; unlike torchrl's, it also weighs the critics' penalty."""
    module = continuous_module(lagrangian=True)
    with torch.no_grad():
        module.log_alpha_prime.fill_(math.log(0.5))
    loss = torchrl_cql_loss(module)
    data = batch()
    torch.manual_seed(7)
    total, stats = module.compute_loss(data.clone(), False)
    module.zero_grad()
    total.backward()
    torch.manual_seed(7)
    out = loss(data.clone())
    loss.zero_grad()
    out["loss_alpha_prime"].backward()

    thresh = module.loss_config.lagrangian_thresh
    torch.testing.assert_close(stats["alpha_prime_loss"], out["loss_alpha_prime"])
    torch.testing.assert_close(stats["cql_loss"], 0.5 * (out["loss_cql"] - 2 * thresh))
    torch.testing.assert_close(module.log_alpha_prime.grad, loss.log_alpha_prime.grad)


def test_discrete_cql_loss_equals_torchrls_discrete_cql_loss():
    """Same loss while the target network equals the online one (as both start). torchrl 0.14's
    ``DiscreteCQLLoss`` bootstraps from the online network even after it moves (its value
    estimator holds the online parameters); the module bootstraps from its target network."""
    torch.manual_seed(0)
    module = DiscreteCQLModule(OBS, gym.spaces.Discrete(3), MODEL, gamma=0.9, tau=0.005, min_q_weight=2.0)
    actor = QValueActor(module.q_net, in_keys=["observation"], action_space="categorical")
    loss = DiscreteCQLLoss(actor, loss_function="l2", delay_value=True, action_space="categorical")
    loss.make_value_estimator(gamma=0.9)
    data = batch(discrete=True)

    total, stats = module.compute_loss(data.clone(), False)
    module.zero_grad()
    total.backward()
    ours = [p.grad.clone() for p in module.q_net.parameters()]
    out = loss(data.clone())
    expected = out["loss_qvalue"] + 2.0 * out["loss_cql"]
    module.zero_grad()
    expected.backward()

    torch.testing.assert_close(stats["critic_loss"], out["loss_qvalue"])
    torch.testing.assert_close(stats["cql_loss"], out["loss_cql"])
    torch.testing.assert_close(stats["qf_mean"], out["pred_value"])
    torch.testing.assert_close(stats["target_value_mean"], out["target_value"])
    torch.testing.assert_close(total, expected)
    for mine, parameter in zip(ours, module.q_net.parameters(), strict=True):
        torch.testing.assert_close(mine, parameter.grad)

    # Once the target network differs, it (not the online network) gives the TD target.
    with torch.no_grad():
        for parameter in module.target_q_net.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        _, stats = module.compute_loss(data.clone(), False)
        q = module.q_net(data["observation"]).gather(-1, data["action"].reshape(-1, 1)).squeeze(-1)
        next_value = module.target_q_net(data["next", "observation"]).amax(-1)
        not_terminated = ~data["next", "terminated"].reshape(-1)
        target = data["next", "reward"].reshape(-1) + 0.9 * not_terminated * next_value
    torch.testing.assert_close(stats["critic_loss"], 0.5 * (q - target).pow(2).mean())


def test_weights_saved_by_the_torchrl_based_modules_load():
    """A checkpoint of the old modules (torchrl's parameters under ``loss.*``) loads."""
    module = continuous_module(lagrangian=True)
    loss = torchrl_cql_loss(module)
    with torch.no_grad():
        loss.log_alpha.fill_(-1.0)
        loss.log_alpha_prime.fill_(0.25)
    old = {f"actor.{k}": v for k, v in module.actor.state_dict().items()}
    old.update({f"loss.{k}": v for k, v in loss.state_dict().items()})
    fresh = continuous_module(lagrangian=True)
    fresh.load_state_dict(old)
    for name in ("critic", "target_critic"):
        for mine, theirs in zip(
            getattr(fresh, name).state_dict().values(),
            getattr(module, name).state_dict().values(),
            strict=True,
        ):
            torch.testing.assert_close(mine, theirs)
    assert float(fresh.log_alpha) == -1.0 and float(fresh.log_alpha_prime) == 0.25
    # A tensor of the wrong shape under an old critic name is refused, not reshaped.
    broken = {**old, "loss.qvalue_network_params.module.net.0.weight": torch.zeros(3)}
    with pytest.raises(RuntimeError, match="qvalue_network_params"):
        continuous_module(lagrangian=True).load_state_dict(broken)

    torch.manual_seed(0)
    discrete = DiscreteCQLModule(OBS, gym.spaces.Discrete(3), MODEL, gamma=0.9, tau=0.005, min_q_weight=1.0)
    old_loss = DiscreteCQLLoss(
        QValueActor(discrete.q_net, in_keys=["observation"], action_space="categorical"),
        loss_function="l2",
        delay_value=True,
        action_space="categorical",
    )
    old_loss.make_value_estimator(gamma=0.9)
    with torch.no_grad():
        for _, value in old_loss.target_value_network_params.items(True, True):
            value.add_(1.0)
    old = {f"q_net.{k}": v for k, v in discrete.q_net.state_dict().items()}
    old.update({f"loss.{k}": v for k, v in old_loss.state_dict().items()})
    fresh_discrete = DiscreteCQLModule(
        OBS, gym.spaces.Discrete(3), MODEL, gamma=0.9, tau=0.005, min_q_weight=1.0
    )
    fresh_discrete.load_state_dict(old)
    for mine, online in zip(
        fresh_discrete.target_q_net.parameters(), discrete.q_net.parameters(), strict=True
    ):
        torch.testing.assert_close(mine, online + 1.0)
