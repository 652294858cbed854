"""DQN and its Rainbow options: learning, losses against torchrl's, targets, exploration, CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import lightning.pytorch as pl
import pytest
import torch
import yaml
from tensordict import TensorDict
from torchrl.data import Categorical
from torchrl.modules import DistributionalQValueActor, QValueActor
from torchrl.objectives import DistributionalDQNLoss, DQNLoss
from torchrl.objectives.utils import ValueEstimators

from lightning_rl.algorithms.dqn import DQN, DQNConfig
from lightning_rl.algorithms.dqn.loss import distributional_loss, q_learning_loss
from lightning_rl.algorithms.off_policy import soft_update_
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.q_networks import EpsilonGreedyQPolicy, QNetwork
from lightning_rl.registry import get_algorithm_class
from tests.test_cli import quiet, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = REPO / "configs" / "dqn" / "cartpole.yaml"
RAINBOW = REPO / "configs" / "dqn" / "rainbow_cartpole.yaml"
OBS = gym.spaces.Box(-5.0, 5.0, (4,))
ACTIONS = gym.spaces.Discrete(3)


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
def test_dqn_learns_cartpole_to_475_within_100k_steps(quiet_trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    algo = DQN(**{**config_args(CARTPOLE), "seed": 0})
    stop, trainer = train_to(algo, quiet_trainer_kwargs, 475, 100_000)
    assert stop.reached_at is not None, f"evaluation return only {trainer.callback_metrics}"
    assert stop.reached_at[1] <= 100_000


@pytest.mark.learning
def test_rainbow_with_every_switch_on_learns_cartpole(quiet_trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    algo = DQN(**{**config_args(RAINBOW), "seed": 0})
    module = algo.module
    assert module.double_q and module.q_net.dueling and module.n_step == 3
    assert module.distributional and module.noisy and algo.experience.prioritized
    stop, trainer = train_to(algo, quiet_trainer_kwargs, 475, 100_000)
    assert stop.reached_at is not None, f"evaluation return only {trainer.callback_metrics}"


def random_batch(size=64, prioritized=True, n_step=True):
    generator = torch.Generator().manual_seed(1)
    data = {
        "observation": torch.randn(size, 4, generator=generator),
        "action": torch.randint(0, 3, (size,), generator=generator),
        "next": {
            "observation": torch.randn(size, 4, generator=generator),
            "reward": torch.randn(size, 1, generator=generator),
            "terminated": torch.rand(size, 1, generator=generator) < 0.2,
            "done": torch.zeros(size, 1, dtype=torch.bool),
        },
    }
    if n_step:
        data["steps_to_next_obs"] = torch.randint(1, 4, (size, 1), generator=generator)
    if prioritized:
        data["priority_weight"] = torch.rand(size, generator=generator)
    return TensorDict(data, [size])


def perturb_(module):
    """Make the online network differ from its (copied) target."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("double_q", [False, True])
def test_q_learning_loss_equals_torchrls_dqn_loss(dueling, double_q):
    torch.manual_seed(0)
    q_net = QNetwork(OBS, ACTIONS, {"fcnet_hiddens": [16]}, dueling=dueling)
    reference = DQNLoss(
        QValueActor(q_net, in_keys=["observation"], spec=Categorical(3)),
        double_dqn=double_q,
        loss_function="smooth_l1",
        action_space="categorical",
    )
    reference.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
    target_net = copy.deepcopy(q_net)  # torchrl's target parameters are a copy taken now, too
    perturb_(q_net)
    batch = random_batch()
    ours, td_error, _ = q_learning_loss(q_net, target_net, batch, gamma=0.9, double_q=double_q)
    ours_grads = torch.autograd.grad(ours, list(q_net.parameters()))
    theirs_batch = batch.clone()
    theirs = reference(theirs_batch)["loss"]
    theirs_grads = torch.autograd.grad(theirs, list(q_net.parameters()))
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours_grads, theirs_grads, strict=True))
    assert torch.allclose(td_error.pow(2), theirs_batch["td_error"].squeeze(-1), atol=1e-5)


def test_distributional_loss_equals_torchrls_distributional_dqn_loss():
    torch.manual_seed(0)
    q_net = QNetwork(OBS, ACTIONS, {"fcnet_hiddens": [16]}, dueling=True, num_atoms=11, v_min=-3.0, v_max=3.0)

    class AtomsFirst(torch.nn.Module):
        """torchrl lays distributional values out as [..., atoms, actions]."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, obs):
            return self.net.logits(obs).transpose(-1, -2)

    reference = DistributionalDQNLoss(
        DistributionalQValueActor(
            AtomsFirst(q_net), in_keys=["observation"], support=q_net.support, action_space="categorical"
        ),
        gamma=0.9,
    )
    target_net = copy.deepcopy(q_net)
    perturb_(q_net)
    batch = random_batch()
    ours, cross_entropy, _ = distributional_loss(q_net, target_net, batch, gamma=0.9, double_q=True)
    ours_grads = torch.autograd.grad(ours, list(q_net.parameters()))
    theirs_batch = batch.clone()
    theirs = reference(theirs_batch)["loss"]
    theirs_grads = torch.autograd.grad(theirs, list(q_net.parameters()))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours_grads, theirs_grads, strict=True))
    assert torch.allclose(cross_entropy, theirs_batch["td_error"].squeeze(-1), atol=1e-5)


def test_soft_and_hard_target_updates():
    online = [torch.tensor([1.0, 2.0]), torch.tensor([4.0])]
    target = [torch.zeros(2), torch.tensor([2.0])]
    soft_update_(target, online, 0.25)
    assert target[0].tolist() == [0.25, 0.5] and target[1].tolist() == [2.5]
    soft_update_(target, online, 1.0)
    assert target[0].tolist() == [1.0, 2.0] and target[1].tolist() == [4.0]


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize(
    ("tau", "freq", "expected"),
    [(1.0, 0, "online"), (1.0, 10**9, "initial"), (0.5, 0, "halfway")],
)
def test_the_algorithm_updates_its_targets_by_tau_every_freq_env_steps(
    quiet_trainer_kwargs, tau, freq, expected
):
    algo = DQN(
        "CartPole-v1",
        rollout_fragment_length=32,
        train_batch_size=32,
        num_steps_sampled_before_learning_starts=0,
        target_network_update_freq=freq,
        tau=tau,
        replay_buffer_config={"type": "ReplayBuffer"},
        seed=0,
    )
    initial = _params(algo.module.q_net)
    pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 1, "limit_val_batches": 0}).fit(algo)
    assert int(algo.num_grad_updates_lifetime) == 1
    online, target = _params(algo.module.q_net), _params(algo.module.target_q_net)
    wanted = {
        "online": online,
        "initial": initial,
        "halfway": [0.5 * a + 0.5 * b for a, b in zip(initial, online, strict=True)],
    }[expected]
    assert all(torch.allclose(t, w) for t, w in zip(target, wanted, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(initial, online, strict=True)), "one update happened"


def test_epsilon_and_lr_follow_their_schedules_and_epsilon_reaches_the_runners(tmp_path):
    run = (
        DQNConfig()
        .environment("CartPole-v1")
        .env_runners(rollout_fragment_length=100)
        .training(
            train_batch_size=32,
            num_steps_sampled_before_learning_starts=0,
            epsilon=[[0, 1.0], [400, 0.2]],
            lr_schedule=[[0, 1e-3], [400, 1e-4]],
            replay_buffer_config={"type": "ReplayBuffer"},
        )
        .trainer(default_root_dir=str(tmp_path))
        .build_algo()
    )
    run.train()
    run.train()  # sampled with the epsilon after 100 steps
    runner_policy = run.datamodule.train_group.local_runner.policy
    assert runner_policy.epsilon == pytest.approx(1.0 - 0.8 * 100 / 400)
    assert run.algorithm.current_epsilon() == pytest.approx(1.0 - 0.8 * 200 / 400)
    assert run.algorithm.policy_extra("default_policy") == {"epsilon": pytest.approx(0.6)}
    # Set when the second iteration started, at 100 env steps.
    assert run.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 - 9e-4 * 100 / 400)
    with pytest.raises(ConfigError, match=r"lr_schedule values must be >= 0, got -0\.001"):
        DQN("CartPole-v1", lr_schedule=[[0, 1e-3], [1000, -1e-3]])
    run.stop()


def test_exploration_is_epsilon_greedy_and_evaluation_is_greedy():
    policy = EpsilonGreedyQPolicy(OBS, ACTIONS, {"fcnet_hiddens": [8]})
    policy.eval()
    obs = torch.randn(2000, 4)
    greedy = policy.q_net(obs).argmax(-1)
    policy.set_extra({"epsilon": 1.0})
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(policy(obs, explore=False, generator=generator)["action"], greedy)
    explored = policy(obs, explore=True, generator=generator)["action"]
    counts = torch.bincount(explored, minlength=3).float() / len(obs)
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.05), "epsilon=1 acts uniformly"


def test_noisy_nets_explore_with_noise_and_evaluate_on_the_mean_weights():
    policy = EpsilonGreedyQPolicy(OBS, ACTIONS, {"fcnet_hiddens": [8]}, noisy=True, sigma0=2.0)
    policy.eval()
    obs = torch.randn(500, 4)
    mean_net = copy.deepcopy(policy.q_net).eval()
    evaluated = policy(obs, explore=False)["action"]
    assert torch.equal(evaluated, mean_net(obs).argmax(-1))
    explored = policy(obs, explore=True)["action"]
    assert not torch.equal(explored, evaluated), "noise changes some greedy actions"
    assert torch.equal(policy(obs, explore=False)["action"], evaluated)


def test_dqn_on_a_box_action_space_is_one_clear_error():
    with pytest.raises(SpaceError, match=r"DQN needs a Discrete action space, got Box.*use SAC"):
        DQN("Pendulum-v1")


def test_registry_fluent_config_and_results(tmp_path):
    assert get_algorithm_class("dqn") is DQN
    config = (
        DQNConfig()
        .environment("CartPole-v1")
        .training(n_step=2, train_batch_size=16, num_steps_sampled_before_learning_starts=32)
        .trainer(default_root_dir=str(tmp_path))
    )
    assert config.algo_kwargs["n_step"] == 2 and config.double_q is True
    with DQNConfig().environment("CartPole-v1").training(train_batch_size=16).build_algo() as run:
        result = run.train()
    assert {"qf_loss", "qf_mean", "td_error_abs_mean"} <= set(result["learners"]["default_policy"])
    assert result["num_env_steps_sampled_lifetime"] == 1000  # RLlib's default learning start


@pytest.mark.parametrize("config", [CARTPOLE, RAINBOW], ids=["dqn", "rainbow"])
def test_cli_fit_from_the_config(tmp_path, config):
    proc = run_cli(["fit", "--config", str(config), "--trainer.max_epochs", "2", *quiet(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iterations=2" in proc.stdout
    assert list(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))


def test_a_checkpoint_serves_the_greedy_policy(tmp_path):
    from lightning_rl.policy import Policy

    run = (
        DQNConfig()
        .environment("CartPole-v1")
        .training(train_batch_size=16, num_steps_sampled_before_learning_starts=64, noisy=True)
        .trainer(default_root_dir=str(tmp_path))
        .build_algo()
    )
    with run:
        run.train()
        path = run.save(tmp_path / "ckpt")
        q_net = copy.deepcopy(run.algorithm.module.q_net).eval()
    policy = Policy.from_checkpoint(path)
    observations = torch.randn(50, 4)
    greedy = q_net(observations).argmax(-1).tolist()
    assert [policy.compute_single_action(o.numpy()) for o in observations] == greedy


def test_ray_runners_act_with_the_learners_weights_and_epsilon(ray_session, quiet_trainer_kwargs):
    algo = DQN(
        "CartPole-v1",
        num_env_runners=1,
        num_envs_per_env_runner=4,
        rollout_fragment_length=16,
        train_batch_size=32,
        num_steps_sampled_before_learning_starts=0,
        epsilon=[[0, 0.5], [1000, 0.5]],
        evaluation_duration=4,
        dueling=True,
        num_atoms=11,
        v_min=0.0,
        v_max=10.0,
        seed=3,
    )
    trainer = pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 2})
    trainer.fit(algo)
    metrics = trainer.callback_metrics
    assert metrics["num_env_steps_sampled_lifetime"] == 2 * 64
    assert metrics["env_runners/num_healthy_env_runners"] == 1
    assert metrics["evaluation/num_episodes"] == 4
    assert int(algo.num_grad_updates_lifetime) == 2


def test_ddp_ranks_make_the_same_number_of_updates(tmp_path):
    """Two CPU ranks, each with its own runner and prioritized buffer: a rank waiting for a
    gradient all-reduce the other never starts would hang this run."""
    args = ["--trainer.max_epochs", "2", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    args += ["--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "0"]
    proc = run_cli(["fit", "--config", str(RAINBOW), *args, *quiet(tmp_path)], tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The warm-up counts env steps of all ranks: 1000 in all, then 256 per rank per iteration.
    assert "iterations=2" in proc.stdout and "num_env_steps_sampled_lifetime=1512.00" in proc.stdout


def test_multi_agent_policies_each_get_a_buffer_an_optimizer_and_stats(quiet_trainer_kwargs):
    mapping = {"policies": ["p0", "p1"], "policy_mapping_fn": {0: "p0", 1: "p1"}}
    common = dict(env_config={"num_agents": 2}, rollout_fragment_length=64, train_batch_size=32, **mapping)
    algo = DQN(
        "MultiAgentCartPole",
        num_steps_sampled_before_learning_starts=64,
        training_intensity=2,
        replay_buffer_config={"capacity": 1000},
        **common,
    )
    trainer = pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 2, "limit_val_batches": 0})
    trainer.fit(algo)
    assert sorted(algo.experience.buffers) == ["p0", "p1"]
    assert len(trainer.optimizers) == 2
    for policy_id in ("p0", "p1"):
        assert torch.isfinite(trainer.callback_metrics[f"learners/{policy_id}/qf_loss"])
    with pytest.raises(ConfigError, match="n_step=3 needs time-ordered"):
        DQN("MultiAgentCartPole", n_step=3, **common)
