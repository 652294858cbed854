"""APPO: learning (CartPole, multi-agent), target network, KL loss, circular buffer, fixed update counts."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.appo import APPO, APPOConfig
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.data.async_data import CircularBuffer
from lightning_rl.envs.classes import MultiAgentCartPole
from lightning_rl.errors import ConfigError
from tests.test_impala import CARTPOLE, fit


@pytest.mark.learning
def test_appo_learns_cartpole_to_450_within_60k_steps(tmp_path):
    pl.seed_everything(0, verbose=False)
    algo = APPO("CartPole-v1", seed=0, **CARTPOLE)
    stop = StopOnReturn(450)
    trainer = fit(algo, tmp_path, 200, [stop, StopOnEnvSteps(60_000)], check_val_every_n_epoch=2)
    assert stop.reached_at is not None, f"evaluation return only {trainer.callback_metrics}"
    assert algo.num_env_steps_sampled_lifetime <= 60_000


@pytest.mark.learning
def test_two_appo_policies_each_learn_their_cartpole(tmp_path):
    pl.seed_everything(0, verbose=False)
    algo = APPO(
        MultiAgentCartPole,
        {"num_agents": 2},
        policies={"p0", "p1"},
        policy_mapping_fn={0: "p0", 1: "p1"},
        minibatch_size=128,
        seed=0,
        **{**CARTPOLE, "evaluation_duration": 10},
    )

    class BothPolicies(pl.Callback):
        reached: int | None = None

        def on_validation_end(self, trainer, module):
            returns = [
                float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("evaluation/module_episode")
            ]
            if len(returns) == 2 and min(returns) >= 450:
                self.reached = module.num_env_steps_sampled_lifetime
                trainer.should_stop = True

    both = BothPolicies()
    trainer = fit(algo, tmp_path, 200, [both, StopOnEnvSteps(80_000)], check_val_every_n_epoch=5)
    assert both.reached is not None, trainer.callback_metrics


def test_each_iteration_makes_the_number_of_updates_the_config_fixes(tmp_path):
    algo = APPO(
        "CartPole-v1",
        num_envs_per_env_runner=4,
        rollout_fragment_length=8,
        train_batch_size=32,
        minibatch_size=16,
        train_batches_per_iteration=2,
        circular_buffer_num_batches=2,
        circular_buffer_iterations_per_batch=3,
    )
    trainer = fit(algo, tmp_path, 2, limit_val_batches=0)
    # iterations x new batches x buffer draws per batch x minibatches per batch (4 rows / 2)
    assert trainer.global_step == 2 * 2 * 3 * 2
    assert algo.num_env_steps_sampled_lifetime == 2 * 2 * 32


def test_the_target_network_follows_the_policy_every_target_network_update_freq_steps(tmp_path):
    def train(steps, freq, tau=1.0):
        algo = APPO(
            "CartPole-v1",
            num_envs_per_env_runner=2,
            rollout_fragment_length=8,
            train_batch_size=16,
            circular_buffer_iterations_per_batch=1,
            target_network_update_freq=freq,
            tau=tau,
            lr=1e-2,
        )
        fit(algo, tmp_path, steps, limit_val_batches=0)
        online = algo.module.policy_net.state_dict()
        target = algo.module.target_policy_net.state_dict()
        return all(torch.equal(online[k], target[k]) for k in online)

    assert train(steps=4, freq=2), "updated after step 4"
    assert not train(steps=3, freq=2), "last updated after step 2"
    module = APPO("CartPole-v1").module
    before = {k: v.clone() for k, v in module.target_policy_net.state_dict().items()}
    for p in module.policy_net.parameters():
        p.data.add_(1.0)
    module.update_target(0.25)
    for key, value in module.target_policy_net.state_dict().items():
        assert torch.allclose(value, before[key] + 0.25)


def test_the_kl_loss_coefficient_adapts_towards_kl_target(tmp_path):
    algo = APPO(
        "CartPole-v1",
        num_envs_per_env_runner=2,
        rollout_fragment_length=8,
        train_batch_size=16,
        use_kl_loss=True,
        kl_coeff=0.2,
        kl_target=1e-9,
        target_network_update_freq=2,
        lr=1e-2,
        seed=0,
    )
    trainer = fit(algo, tmp_path, 3, limit_val_batches=0)
    assert float(algo.module.kl_coeff) > 0.2
    assert float(trainer.callback_metrics["learners/default_policy/mean_kl_loss"]) > 0


def test_the_circular_buffer_hands_out_each_batch_at_most_k_times_and_drops_the_oldest():
    buffer = CircularBuffer(capacity=2, iterations_per_batch=3, generator=torch.Generator().manual_seed(0))
    uses = {"a": 0, "b": 0, "c": 0, "d": 0}
    buffer.add("a")
    for _ in range(2):
        batch, first_use = buffer.sample()
        assert first_use == (uses[batch] == 0)
        uses[batch] += 1
    buffer.add("b")
    buffer.add("c")  # full: "a" is dropped with a use left
    buffer.add("d")  # and "b" before its first use
    assert len(buffer) == 2 and buffer.num_dropped_unused == 1
    for _ in range(6):
        batch, _ = buffer.sample()
        uses[batch] += 1
    assert uses == {"a": 2, "b": 0, "c": 3, "d": 3}
    assert len(buffer) == 0


def test_appo_config_and_errors():
    algo = APPOConfig().environment("CartPole-v1").training(clip_param=0.3, tau=0.5).build_algorithm()
    assert algo.module.loss_config.clip_param == 0.3 and algo.hparams.tau == 0.5
    with pytest.raises(ConfigError, match="num_epochs must stay 1"):
        APPO("CartPole-v1", num_epochs=2)
    with pytest.raises(ConfigError, match=r"tau must be in \(0, 1\], got 1.5"):
        APPO("CartPole-v1", tau=1.5)
    with pytest.raises(ConfigError, match="circular_buffer_num_batches must be a positive number, got 0"):
        APPO("CartPole-v1", circular_buffer_num_batches=0)
