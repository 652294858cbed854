"""PPO's written-out loss (``algorithms/ppo/loss.py``) equals torchrl's ``ClipPPOLoss``."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss

from lightning_rl.algorithms.ppo.loss import PPO_KEYS, PPOLossConfig, masked_mean, ppo_loss
from lightning_rl.algorithms.ppo.ppo import PPOModule
from lightning_rl.modules.model_config import DefaultModelConfig

OBS = gym.spaces.Box(-1.0, 1.0, (4,))
SPACES = {"discrete": gym.spaces.Discrete(3), "continuous": gym.spaces.Box(-1.0, 1.0, (2,))}


def module_and_batch(
    action_space: gym.Space, config: PPOLossConfig, shape=(32,)
) -> tuple[PPOModule, TensorDict]:
    torch.manual_seed(0)
    module = PPOModule(
        OBS,
        action_space,
        DefaultModelConfig(fcnet_hiddens=[16]),
        gamma=0.99,
        lambda_=0.95,
        loss_config=config,
        entropy_coeff=0.01,
        kl_coeff=0.3,
    )
    keys = PPO_KEYS
    obs = torch.randn(*shape, 4)
    with torch.no_grad():
        params = module.policy_net(obs)
        action, _ = module.policy_net.distribution.sample(params)
        old_log_prob = module.distribution(params).log_prob(action) + 0.3 * torch.randn(shape)
        old_value = module.value_net(obs) + 0.5 * torch.randn(*shape, 1)
    batch = TensorDict(
        {
            keys.observation: obs,
            keys.action: action,
            keys.old_log_prob: old_log_prob,
            keys.advantage: torch.randn(*shape, 1),
            keys.value_target: torch.randn(*shape, 1),
            keys.old_value: old_value,
        },
        batch_size=shape,
    )
    return module, batch


def torchrl_loss(module: PPOModule, config: PPOLossConfig, reduction: str = "mean") -> ClipPPOLoss:
    distribution = module.policy_net.distribution
    param_keys = list(distribution.param_keys)
    actor = ProbabilisticActor(
        TensorDictModule(module.policy_net, in_keys=[PPO_KEYS.observation], out_keys=param_keys),
        in_keys=param_keys,
        distribution_class=distribution.torch_distribution_class(),
        distribution_kwargs=distribution.torch_distribution_kwargs(),
        return_log_prob=True,
    )
    critic = ValueOperator(module.value_net, in_keys=[PPO_KEYS.observation], out_keys=[PPO_KEYS.old_value])
    return ClipPPOLoss(
        actor,
        critic,
        clip_epsilon=config.clip_param,
        entropy_bonus=config.use_entropy,
        entropy_coeff=0.01,
        critic_coeff=config.vf_loss_coeff,
        loss_critic_type="l2",
        normalize_advantage=config.normalize_advantages,
        clip_value=config.vf_clip_param,
        reduction=reduction,
        functional=False,
    )


def gradients(module: PPOModule, loss: torch.Tensor) -> list[torch.Tensor]:
    module.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


@pytest.mark.parametrize("space", sorted(SPACES))
@pytest.mark.parametrize(
    ("vf_clip_param", "use_entropy", "normalize_advantages"),
    [(None, False, True), (0.2, True, False), (0.5, True, True)],
)
def test_written_out_loss_equals_torchrls_clip_ppo_loss(
    space, vf_clip_param, use_entropy, normalize_advantages
):
    config = PPOLossConfig(
        clip_param=0.2,
        vf_clip_param=vf_clip_param,
        vf_loss_coeff=0.5,
        use_entropy=use_entropy,
        normalize_advantages=normalize_advantages,
        use_kl_loss=False,
    )
    module, batch = module_and_batch(SPACES[space], config)
    module.entropy_coeff.fill_(0.01)

    total, stats = module.compute_loss(batch)
    ours = gradients(module, total)

    out = torchrl_loss(module, config)(batch)
    expected = out["loss_objective"] + out["loss_critic"]
    if use_entropy:
        expected = expected + out["loss_entropy"]
        torch.testing.assert_close(stats["entropy"], out["entropy"])
    torchrls = gradients(module, expected)

    assert 0.0 < float(stats["clip_fraction"]) < 1.0, "the batch exercises both sides of the clip"
    torch.testing.assert_close(stats["policy_loss"], out["loss_objective"])
    torch.testing.assert_close(stats["vf_loss"], out["loss_critic"])
    torch.testing.assert_close(stats["clip_fraction"], out["clip_fraction"])
    torch.testing.assert_close(stats["mean_kl_loss"], out["kl_approx"])
    torch.testing.assert_close(stats["vf_explained_var"], out["explained_variance"].squeeze())
    torch.testing.assert_close(total, expected)
    if vf_clip_param is not None:
        torch.testing.assert_close(stats["value_clip_fraction"], out["value_clip_fraction"])
    assert len(ours) == len(torchrls) > 0
    for mine, theirs in zip(ours, torchrls, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_masked_sequence_loss_equals_torchrls_per_element_loss_averaged_over_real_steps():
    """Memory models: per-step torchrl losses, averaged over the mask, as the module did before."""
    config = PPOLossConfig(
        clip_param=0.3,
        vf_clip_param=None,
        vf_loss_coeff=1.0,
        use_entropy=True,
        normalize_advantages=False,
        use_kl_loss=False,
    )
    module, batch = module_and_batch(SPACES["discrete"], config, shape=(4, 6))
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0.0
    mask[3, 2:] = 0.0
    dist = module.distribution(module.policy_net(batch["observation"]))
    terms = ppo_loss(
        log_prob=dist.log_prob(batch["action"]),
        old_log_prob=batch["action_log_prob"],
        advantage=batch["advantage"],
        value=module.value_net(batch["observation"]),
        value_target=batch["value_target"],
        old_value=batch["state_value"],
        entropy=dist.entropy(),
        config=config,
        entropy_coeff=0.01,
        mask=mask,
    )
    out = torchrl_loss(module, config, reduction="none")(batch)
    torch.testing.assert_close(terms.policy_loss, masked_mean(out["loss_objective"], mask))
    torch.testing.assert_close(terms.vf_loss, masked_mean(out["loss_critic"], mask))
    torch.testing.assert_close(terms.entropy_loss, masked_mean(out["loss_entropy"], mask))


def test_kl_penalty_is_the_k3_estimate_weighted_by_the_modules_coefficient():
    config = PPOLossConfig(
        clip_param=0.2,
        vf_clip_param=None,
        vf_loss_coeff=0.5,
        use_entropy=False,
        normalize_advantages=True,
        use_kl_loss=True,
    )
    module, batch = module_and_batch(SPACES["continuous"], config)
    total, stats = module.compute_loss(batch)
    log_ratio = module.distribution(module.policy_net(batch["observation"])).log_prob(batch["action"])
    log_ratio = log_ratio - batch["action_log_prob"]
    kl = (log_ratio.exp() - 1 - log_ratio).mean()
    torch.testing.assert_close(stats["kl"], kl)
    torch.testing.assert_close(total, stats["policy_loss"] + stats["vf_loss"] + 0.3 * kl)


def test_checkpoints_written_with_the_torchrl_loss_object_still_load():
    """Before loss.py, the module also held ``loss.*`` and ``actor.*`` copies of its weights."""
    config = PPOLossConfig(0.2, None, 0.5, False, True, False)
    module, _ = module_and_batch(SPACES["discrete"], config)
    state = module.state_dict()
    old = dict(state)
    old.update({f"loss.actor_network.{k}": v for k, v in module.policy_net.state_dict().items()})
    old.update({f"actor.module.0.module.{k}": v for k, v in module.policy_net.state_dict().items()})
    old["loss.entropy_coeff"] = torch.tensor(0.0)
    fresh, _ = module_and_batch(SPACES["discrete"], config)
    fresh.load_state_dict(old, strict=True)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key])
