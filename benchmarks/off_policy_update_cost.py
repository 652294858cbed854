"""Cost of one gradient update: torchrl's losses and target updaters vs lightning-rl's.

    python benchmarks/off_policy_update_cost.py [--repeats 300]

For DQN, C51, SAC and discrete SAC on the networks of the shipped configs, times one full
update (loss forward, backward, Adam step, target update) with torchrl's loss module
(``DQNLoss``, ``DistributionalDQNLoss``, ``SACLoss``, ``DiscreteSACLoss`` with ``SoftUpdate``)
and with the plain-tensor losses lightning-rl uses, both on the same networks; and, as the
floor, one forward and backward pass of the critic network alone. Also times torchrl's
``SoftUpdate.step()`` against the fused ``soft_update_``. Learner threads: 1, as in training.
The last line is one JSON object (milliseconds per update).
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import gymnasium as gym
import torch
from _common import emit
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, Categorical
from torchrl.modules import (
    DistributionalQValueActor,
    ProbabilisticActor,
    QValueActor,
    TanhNormal,
    ValueOperator,
)
from torchrl.objectives import DiscreteSACLoss, DistributionalDQNLoss, DQNLoss, SACLoss, SoftUpdate
from torchrl.objectives.utils import ValueEstimators

from lightning_rl.algorithms.dqn.loss import distributional_loss, q_learning_loss
from lightning_rl.algorithms.off_policy import soft_update_
from lightning_rl.algorithms.sac import DiscreteSACModule, SACModule
from lightning_rl.modules.model_config import resolve_model_config
from lightning_rl.modules.q_networks import QNetwork

warnings.filterwarnings("ignore")
CARTPOLE_OBS, CARTPOLE_ACTIONS = gym.spaces.Box(-5.0, 5.0, (4,)), gym.spaces.Discrete(2)
PENDULUM_OBS, PENDULUM_ACTIONS = gym.spaces.Box(-8.0, 8.0, (3,)), gym.spaces.Box(-1.0, 1.0, (1,))


def per_call_ms(fn, repeats: int) -> float:
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return round((time.perf_counter() - start) / repeats * 1e3, 4)


def batch(size: int, obs_dim: int, action: torch.Tensor) -> TensorDict:
    return TensorDict(
        {
            "observation": torch.randn(size, obs_dim),
            "action": action,
            "next": {
                "observation": torch.randn(size, obs_dim),
                "reward": torch.randn(size, 1),
                "terminated": torch.rand(size, 1) < 0.05,
                "done": torch.zeros(size, 1, dtype=torch.bool),
            },
        },
        [size],
    )


def adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(list(params), lr=1e-4, fused=True)


def step(optimizer, loss) -> None:
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    optimizer.step()


def dqn_costs(repeats: int, distributional: bool) -> dict[str, float]:
    model = {"fcnet_hiddens": [128, 128], "fcnet_activation": "relu"}
    extra = {"num_atoms": 51, "v_min": 0.0, "v_max": 100.0} if distributional else {}
    q_net = QNetwork(CARTPOLE_OBS, CARTPOLE_ACTIONS, model, dueling=True, **extra)
    target = copy.deepcopy(q_net)
    data = batch(64, 4, torch.randint(0, 2, (64,)))
    if distributional:

        class AtomsFirst(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, obs):
                return self.net.logits(obs).transpose(-1, -2)

        reference = DistributionalDQNLoss(
            DistributionalQValueActor(
                AtomsFirst(q_net), in_keys=["observation"], support=q_net.support, action_space="categorical"
            ),
            gamma=0.99,
        )
        loss_key = "loss"

        def ours():
            return distributional_loss(q_net, target, data, gamma=0.99, double_q=True)[0]
    else:
        reference = DQNLoss(
            QValueActor(q_net, in_keys=["observation"], spec=Categorical(2)),
            double_dqn=True,
            loss_function="smooth_l1",
            action_space="categorical",
        )
        reference.make_value_estimator(ValueEstimators.TD0, gamma=0.99)
        loss_key = "loss"

        def ours():
            return q_learning_loss(q_net, target, data, gamma=0.99, double_q=True)[0]

    updater = SoftUpdate(reference, tau=0.005)
    theirs_optimizer, ours_optimizer = adam(q_net.parameters()), adam(q_net.parameters())
    online, offline = list(q_net.parameters()), list(target.parameters())

    def torchrl_update():
        step(theirs_optimizer, reference(data.clone(False))[loss_key])
        updater.step()

    def ours_update():
        step(ours_optimizer, ours())
        soft_update_(offline, online, 0.005)

    obs = data["observation"]

    def network():
        q_net.zero_grad(set_to_none=False)
        q_net(obs).sum().backward()

    return {
        "torchrl_ms": per_call_ms(torchrl_update, repeats),
        "lightning_rl_ms": per_call_ms(ours_update, repeats),
        "critic_forward_backward_ms": per_call_ms(network, repeats),
    }


def sac_costs(repeats: int) -> dict[str, float]:
    config = resolve_model_config({"fcnet_hiddens": [64, 64], "fcnet_activation": "relu"})
    module = SACModule(
        PENDULUM_OBS,
        PENDULUM_ACTIONS,
        config,
        gamma=0.99,
        n_step=1,
        num_q_nets=2,
        initial_alpha=1.0,
        target_entropy=-1.0,
    )

    class LocScale(nn.Module):
        def __init__(self, actor):
            super().__init__()
            self.actor = actor

        def forward(self, obs):
            loc, log_std = self.actor(obs)
            return loc, log_std.exp()

    class QValue(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, obs, action):
            return self.net(torch.cat([obs, action], -1))

    actor = ProbabilisticActor(
        TensorDictModule(
            LocScale(copy.deepcopy(module.actor)), in_keys=["observation"], out_keys=["loc", "scale"]
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0, "tanh_loc": False},
        return_log_prob=True,
        spec=Bounded(-1.0, 1.0, (1,)),
    )
    critics = [
        ValueOperator(QValue(module.critic.net.member(i)), in_keys=["observation", "action"])
        for i in range(2)
    ]
    reference = SACLoss(actor, critics, loss_function="l2")
    reference.make_value_estimator(gamma=0.99)
    updater = SoftUpdate(reference, tau=0.005)
    data = batch(256, 3, torch.rand(256, 1) * 2 - 1)
    theirs_optimizer, ours_optimizer = adam(reference.parameters()), adam(module.parameters())

    def torchrl_update():
        out = reference(data.clone(False))
        step(theirs_optimizer, out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"])
        updater.step()

    def ours_update():
        step(ours_optimizer, module.compute_loss(data)[0])
        module.update_targets(0.005)

    single_critic = critics[0]
    obs, action = data["observation"], data["action"]

    def network():
        single_critic.zero_grad(set_to_none=False)
        single_critic.module(obs, action).sum().backward()

    return {
        "torchrl_ms": per_call_ms(torchrl_update, repeats),
        "lightning_rl_ms": per_call_ms(ours_update, repeats),
        "critic_forward_backward_ms": per_call_ms(network, repeats),
        "soft_update_torchrl_ms": per_call_ms(updater.step, repeats),
        "soft_update_lightning_rl_ms": per_call_ms(lambda: module.update_targets(0.005), repeats),
    }


def discrete_sac_costs(repeats: int) -> dict[str, float]:
    config = resolve_model_config({"fcnet_hiddens": [128, 128], "fcnet_activation": "relu"})
    module = DiscreteSACModule(
        CARTPOLE_OBS,
        CARTPOLE_ACTIONS,
        config,
        gamma=0.99,
        n_step=1,
        num_q_nets=2,
        initial_alpha=0.1,
        target_entropy=0.05,
    )

    class Logits(nn.Module):
        def __init__(self, actor):
            super().__init__()
            self.actor = actor

        def forward(self, obs):
            return self.actor(obs)[0]

    actor = ProbabilisticActor(
        TensorDictModule(Logits(copy.deepcopy(module.actor)), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critics = [
        TensorDictModule(copy.deepcopy(m), in_keys=["observation"], out_keys=["action_value"])
        for m in module.critic.members
    ]
    reference = DiscreteSACLoss(
        actor, critics, action_space="categorical", num_actions=2, loss_function="l2", target_entropy=0.05
    )
    reference.make_value_estimator(gamma=0.99)
    updater = SoftUpdate(reference, tau=0.01)
    data = batch(64, 4, torch.randint(0, 2, (64,)))
    theirs_optimizer, ours_optimizer = adam(reference.parameters()), adam(module.parameters())

    def torchrl_update():
        out = reference(data.clone(False))
        step(theirs_optimizer, out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"])
        updater.step()

    def ours_update():
        step(ours_optimizer, module.compute_loss(data)[0])
        module.update_targets(0.01)

    critic = module.critic.members[0]
    obs = data["observation"]

    def network():
        critic.zero_grad(set_to_none=False)
        critic(obs).sum().backward()

    return {
        "torchrl_ms": per_call_ms(torchrl_update, repeats),
        "lightning_rl_ms": per_call_ms(ours_update, repeats),
        "critic_forward_backward_ms": per_call_ms(network, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    result = {
        "dqn_cartpole": dqn_costs(args.repeats, distributional=False),
        "c51_cartpole": dqn_costs(args.repeats, distributional=True),
        "sac_pendulum": sac_costs(args.repeats),
        "discrete_sac_cartpole": discrete_sac_costs(args.repeats),
    }
    for costs in result.values():
        costs["speedup"] = round(costs["torchrl_ms"] / costs["lightning_rl_ms"], 2)
    emit(result)


if __name__ == "__main__":
    main()
