"""IMPALA: learning (CartPole, continuous actions, multi-agent), policy-lag accounting, config errors."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.impala import IMPALA, IMPALAConfig
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.data.async_data import AsyncDataModule
from lightning_rl.envs.classes import MultiAgentCartPole
from lightning_rl.errors import ConfigError
from tests.envs import TargetEnv

CARTPOLE = dict(
    num_envs_per_env_runner=8,
    rollout_fragment_length=32,
    train_batch_size=256,
    train_batches_per_iteration=4,
    lr=1e-3,
    entropy_coeff=0.0,
    evaluation_duration=20,
)


def fit(algo, tmp_path, max_epochs, callbacks=(), **trainer_kwargs):
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=list(callbacks),
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(algo)
    return trainer


@pytest.mark.learning
def test_impala_learns_cartpole_to_450_within_60k_steps(tmp_path):
    pl.seed_everything(0, verbose=False)
    # Two passes over each batch in minibatches: the second pass learns from samples of an older
    # policy, which V-trace corrects (mean_rho != 1).
    algo = IMPALA("CartPole-v1", num_epochs=2, minibatch_size=128, seed=0, **CARTPOLE)
    assert isinstance(algo.experience, AsyncDataModule)
    stop = StopOnReturn(450)
    trainer = fit(algo, tmp_path, 200, [stop, StopOnEnvSteps(60_000)], check_val_every_n_epoch=2)
    assert stop.reached_at is not None, f"evaluation return only {trainer.callback_metrics}"
    assert algo.num_env_steps_sampled_lifetime <= 60_000
    assert float(trainer.callback_metrics["learners/default_policy/mean_rho"]) != 1.0


@pytest.mark.learning
def test_impala_learns_continuous_actions_through_the_unsquash_connector(tmp_path):
    pl.seed_everything(0, verbose=False)
    algo = IMPALA(
        TargetEnv,
        num_envs_per_env_runner=16,
        rollout_fragment_length=16,
        train_batch_size=256,
        minibatch_size=64,
        lr=3e-3,
        entropy_coeff=0.0,
        evaluation_duration=100,
        model_config={"fcnet_hiddens": [32]},
        seed=0,
    )
    stop = StopOnReturn(-0.05)
    fit(algo, tmp_path, 80, [stop], check_val_every_n_epoch=4)
    assert stop.reached_at is not None, "IMPALA did not learn a = 2 * target within 20k env steps"


def test_policy_lag_is_the_learner_version_minus_the_sampling_version(tmp_path):
    """In-process sampling, one update per batch, weights sent every 3 updates: the batches are
    learned from 0, 1, 2, 0, 1, 2 updates after the weights they were sampled with."""
    algo = IMPALA(
        "CartPole-v1",
        num_envs_per_env_runner=2,
        rollout_fragment_length=8,
        train_batch_size=16,
        train_batches_per_iteration=3,
        broadcast_interval=3,
    )
    trainer = fit(algo, tmp_path, 2, limit_val_batches=0)
    assert trainer.global_step == 6
    assert algo.policy_lag_count == 6 * 16
    assert algo.policy_lag_mean == pytest.approx(1.0)
    assert algo.policy_lag_max == 2
    assert float(trainer.callback_metrics["learners/default_policy/policy_lag_mean"]) == pytest.approx(1.0)
    assert trainer.callback_metrics["env_runners/num_weight_broadcasts"] == 2  # at versions 0 and 3


def test_multi_agent_policies_learn_from_their_own_flat_batches(tmp_path):
    algo = IMPALA(
        MultiAgentCartPole,
        {"num_agents": 2},
        policies={"p0", "p1"},
        policy_mapping_fn={0: "p0", 1: "p1"},
        num_envs_per_env_runner=2,
        rollout_fragment_length=16,
        train_batch_size=64,
        minibatch_size=32,
        num_epochs=2,
    )
    datamodule = AsyncDataModule()
    trainer = fit(algo, tmp_path, 2, limit_val_batches=0)
    assert trainer.global_step == 2 * 2 * 2  # iterations x epochs x chunks, whatever the agents did
    for policy_id in ("p0", "p1"):
        assert torch.isfinite(trainer.callback_metrics[f"learners/{policy_id}/total_loss"])
    # Chunks of the flat [M] batches are [1, m] sequences that end done (a cut is truncated).
    datamodule.attach(algo)
    datamodule.setup("fit")
    batch = datamodule.next_train_batch()
    chunks = list(datamodule.minibatches(batch))
    assert len(chunks) == 2
    for chunk in chunks:
        for part in chunk.values():
            assert part.batch_size[0] == 1 and bool(part["next", "done"][0, -1])
    datamodule.close()


def test_fluent_config_and_clear_errors():
    algo = (
        IMPALAConfig()
        .environment("CartPole-v1")
        .env_runners(
            num_envs_per_env_runner=2, rollout_fragment_length=10, max_requests_in_flight_per_env_runner=3
        )
        .training(train_batch_size=40, minibatch_size=20, vtrace_clip_pg_rho_threshold=0.5)
        .build_algorithm()
    )
    assert algo.hparams.max_requests_in_flight_per_env_runner == 3
    assert algo.module.loss_config.vtrace_clip_pg_rho_threshold == 0.5
    with pytest.raises(
        ConfigError, match=r"minibatch_size \(25\) must be a multiple of rollout_fragment_length"
    ):
        IMPALA("CartPole-v1", rollout_fragment_length=10, train_batch_size=40, minibatch_size=25)
    with pytest.raises(ConfigError, match="broadcast_interval must be a positive number, got 0"):
        IMPALA("CartPole-v1", broadcast_interval=0)
    with pytest.raises(ConfigError, match="vtrace_clip_rho_threshold must be a positive number"):
        IMPALA("CartPole-v1", vtrace_clip_rho_threshold=-1.0)
