"""DreamerV3: symlog/two-hot, KL balancing and free bits, imagined returns, image and continuous
models, config errors, checkpoints that resume, the CLI, and learning CartPole."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from tensordict import TensorDict
from torchrl.modules import SymExpTwoHot
from torchrl.modules.functional import symexp, symlog
from torchrl.objectives import categorical_kl_terms, two_hot_cross_entropy

from lightning_rl import DreamerV3 as ExportedDreamerV3
from lightning_rl import DreamerV3Config, Policy
from lightning_rl.algorithms.dreamerv3 import DreamerV3, DreamerV3Policy, LogDreams
from lightning_rl.algorithms.dreamerv3.behavior import dream_weights, lambda_returns
from lightning_rl.algorithms.dreamerv3.dreams import image_grid
from lightning_rl.algorithms.dreamerv3.networks import UNIMIX
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.registry import get_algorithm_class
from lightning_rl.training_run import TrainingRun
from tests.test_cli import quiet, run_cli

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "dreamerv3"
TINY = {"model_size": "nano", "batch_size_B": 4, "batch_length_T": 8, "horizon_H": 5}


def config_args(name: str) -> dict:
    return dict(yaml.safe_load((CONFIGS / name).read_text())["model"]["init_args"])


# -- symlog, two-hot -------------------------------------------------------------------------
def test_symlog_and_two_hot_round_trip():
    x = torch.tensor([-1e4, -37.5, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 42.0, 1e5])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5, atol=1e-6)
    assert torch.allclose(symlog(torch.tensor([math.e - 1])), torch.tensor([1.0]))
    two_hot = SymExpTwoHot(255)
    encoded = two_hot.encode(x)
    assert torch.allclose(encoded.sum(-1), torch.ones(len(x)))
    assert ((encoded > 0).sum(-1) <= 2).all(), "at most two neighbouring bins"
    assert torch.allclose(two_hot.decode(encoded.log()), x, rtol=1e-4, atol=1e-4)
    # The cross entropy of a target's own encoding is its entropy (the minimum over logits).
    loss = two_hot_cross_entropy(encoded.clamp_min(1e-30).log(), x, two_hot.bins)
    entropy = -(encoded * encoded.clamp_min(1e-30).log()).sum(-1)
    assert torch.allclose(loss, entropy, atol=1e-5)


# -- KL balancing and free bits --------------------------------------------------------------
def unimix_probs(logits: torch.Tensor) -> torch.Tensor:
    return (1 - UNIMIX) * torch.softmax(logits, -1) + UNIMIX / logits.shape[-1]


def test_kl_balancing_and_free_bits_match_a_hand_computation():
    torch.manual_seed(0)
    posterior = torch.randn(3, 2, 4, 5, requires_grad=True)  # [B, T, categoricals, classes]
    prior = torch.randn(3, 2, 4, 5, requires_grad=True)
    q, p = unimix_probs(posterior), unimix_probs(prior)
    kl = (q * (q.log() - p.log())).sum((-1, -2))  # summed over the latents: [B, T]
    free_bits = float(kl.detach().median())
    dyn, rep = categorical_kl_terms(posterior, prior, free_nats=free_bits, unimix=UNIMIX)
    expected = kl.clamp_min(free_bits).mean()
    assert torch.allclose(dyn, expected) and torch.allclose(rep, expected)
    # Balancing: the dynamics term trains only the prior, the representation term only the posterior.
    (grad_post,) = torch.autograd.grad(dyn, posterior, retain_graph=True, allow_unused=True)
    assert grad_post is None or grad_post.abs().max() == 0
    (grad_prior,) = torch.autograd.grad(rep, prior, retain_graph=True, allow_unused=True)
    assert grad_prior is None or grad_prior.abs().max() == 0
    # Free bits: elements below the threshold contribute no gradient at all.
    (grad_prior,) = torch.autograd.grad(dyn, prior)
    below = kl.detach() < free_bits
    assert below.any() and (grad_prior[below].abs().amax((-1, -2)) == 0).all()
    assert (grad_prior[~below].abs().amax((-1, -2)) > 0).all()


def test_the_world_model_loss_is_prediction_plus_scaled_kl_terms():
    algo = DreamerV3("CartPole-v1", **TINY, seed=0)
    module = algo.module
    window = random_window(4, 8, obs_dim=4, discrete_actions=2)
    loss, stats, h, z = module.world_model.loss(
        window["observation"],
        module.model_actions(window["prev_action"]),
        window["reward"],
        window["is_first"],
        (~window["is_terminated"]).float(),
        free_bits=1.0,
        dyn_scale=0.5,
        rep_scale=0.1,
    )
    prediction = stats["decoder_loss"] + stats["reward_loss"] + stats["continue_loss"]
    expected = prediction + 0.5 * stats["dynamics_loss"] + 0.1 * stats["representation_loss"]
    assert torch.allclose(loss, expected)
    assert stats["dynamics_loss"] >= 1.0 and stats["representation_loss"] >= 1.0, "free bits floor"
    assert h.shape == (4, 8, module.dims.gru_units) and z.shape == (4, 8, module.dims.stoch_size)
    # A fresh two-hot reward head predicts exactly 0 (zero-initialised output layer).
    assert torch.equal(module.world_model.reward(torch.cat([h, z], -1)), torch.zeros(4, 8))


# -- imagined returns ------------------------------------------------------------------------
def test_lambda_returns_and_dream_weights_match_a_hand_computation():
    # H = 2 dreamed steps from one start; reward[k], value[k], cont[k] of dreamed state k.
    reward = torch.tensor([[0.0], [1.0], [2.0]])
    value = torch.tensor([[10.0], [20.0], [30.0]])
    cont = torch.tensor([[1.0], [0.5], [1.0]])
    gamma, lam = 0.9, 0.8
    r1 = 2.0 + gamma * 1.0 * 30.0  # R_1 = r_2 + gamma c_2 v_2 (bootstrap R_2 = v_2)
    r0 = 1.0 + gamma * 0.5 * ((1 - lam) * 20.0 + lam * r1)
    assert torch.allclose(lambda_returns(reward, value, cont, gamma, lam), torch.tensor([[r0], [r1]]))
    assert torch.allclose(dream_weights(cont, gamma), torch.tensor([[1.0], [0.45], [0.405]]))


# -- models: images, continuous actions, the runner policy -------------------------------------
def random_window(b, t, obs_dim=None, image=None, discrete_actions=None, action_dim=None):
    generator = torch.Generator().manual_seed(0)
    obs = (
        torch.randint(0, 256, (b, t, *image), dtype=torch.uint8, generator=generator)
        if image
        else torch.randn(b, t, obs_dim, generator=generator)
    )
    action = (
        torch.randint(discrete_actions, (b, t), generator=generator)
        if discrete_actions
        else torch.rand(b, t, action_dim, generator=generator) * 2 - 1
    )
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = is_first[0, 3] = True
    return TensorDict(
        {
            "observation": obs,
            "prev_action": action,
            "reward": torch.rand(b, t, generator=generator),
            "is_first": is_first,
            "is_terminated": torch.zeros(b, t, dtype=torch.bool),
        },
        [b, t],
    )


def losses(algo, window):
    return algo.window_losses(algo.module, window)


def test_the_atari100k_pong_config_parses_and_builds_an_image_model():
    args = config_args("atari100k_pong.yaml")
    algo = DreamerV3(**args)
    assert algo.observation_space.shape == (3, 64, 64) and algo.hparams.model_size == "S"
    module = algo.module
    assert module.world_model.image and module.discrete
    assert module.dims.gru_units == 512 and module.dims.dense_layers == 2
    # A tiny image model: CNN encoder down to 4x4 and a decoder that retraces it exactly.
    small = DreamerV3(**{**args, **TINY})
    window = random_window(2, 4, image=(3, 64, 64), discrete_actions=int(small.action_space.n))
    world_model, actor_loss, critic_loss, _ = losses(small, window)
    target = small.module.world_model.decoder_target(window["observation"])
    assert target.shape == (2, 4, 3, 64, 64) and target.min() >= -0.5 and target.max() <= 0.5
    truth, prediction = small.module.open_loop_prediction(window, context=2)
    assert prediction.shape == truth.shape == (2, 4, 3, 64, 64)
    grid = image_grid(truth, prediction, channels_last=False)  # what LogDreams logs for images
    assert grid.shape == (2 * 2 * 64, 4 * 64, 3) and grid.dtype == np.uint8
    (world_model + actor_loss + critic_loss).backward()
    encoder_grad = small.module.world_model.encoder.conv[0].weight.grad
    assert encoder_grad is not None and encoder_grad.abs().sum() > 0


def test_continuous_actions_backpropagate_through_the_dynamics_into_the_actor_only():
    algo = DreamerV3("Pendulum-v1", **TINY, seed=0)
    module = algo.module
    assert not module.discrete and not algo.uses_reinforce()
    window = random_window(4, 8, obs_dim=3, action_dim=1)
    _, actor_loss, _, _ = losses(algo, window)
    actor_params = list(module.behavior.actor.parameters())
    grads = torch.autograd.grad(actor_loss, actor_params, retain_graph=True)
    assert any(g.abs().sum() > 0 for g in grads)
    world_model_params = list(module.world_model.parameters())
    critic_params = list(module.behavior.critic.parameters())
    world_model_grads = torch.autograd.grad(
        actor_loss, world_model_params + critic_params, retain_graph=True, allow_unused=True
    )
    assert all(g is None or g.abs().sum() == 0 for g in world_model_grads), (
        "the actor loss trains the actor only"
    )
    # The runner-side policy acts in [-1, 1] and keeps one model state per env copy.
    policy = DreamerV3Policy(**module.policy_spec().kwargs)
    policy.load_weights(module.policy_weights())
    policy.reset(3)
    out = policy(torch.randn(3, 3), explore=True, generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (3, 1) and out["action"].abs().max() <= 1.0
    assert policy.h.shape == (3, module.dims.gru_units)


def test_the_runner_policy_infers_the_same_first_state_as_the_learner():
    algo = DreamerV3("CartPole-v1", **TINY, seed=0)
    module = algo.module
    policy = DreamerV3Policy(**module.policy_spec().kwargs)
    policy.load_weights(module.policy_weights())
    obs = torch.randn(5, 4)
    policy.reset(5)
    policy(obs, explore=False)
    rssm = module.world_model.rssm
    h, _, _, _ = rssm.observe(
        module.world_model.encoder(obs.unsqueeze(1)),
        torch.zeros(5, 1, module.action_dim),
        torch.ones(5, 1, dtype=torch.bool),
    )
    assert torch.allclose(policy.h, h[:, 0], atol=1e-6)


# -- config, registration --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"model_size": "XXL"}, ConfigError, r"model_size.*'XXL'.*XS"),
        ({"model_overrides": {"gru": 8}}, ConfigError, r"model_overrides key.*'gru'.*gru_units"),
        ({"batch_length_T": 0}, ConfigError, r"batch_length_T must be a positive integer, got 0"),
        ({"training_ratio": -1}, ConfigError, r"training_ratio must be a positive number, got -1"),
        ({"actor_gradient": "magic"}, ConfigError, r"actor_gradient.*'magic'.*reinforce"),
        ({"critic_ema_decay": 1.5}, ConfigError, r"critic_ema_decay must be in \[0, 1\], got 1.5"),
        ({"free_bits": -1.0}, ConfigError, r"free_bits must be a number >= 0, got -1.0"),
        ({"replay_buffer_config": {"size": 10}}, ConfigError, r"replay_buffer_config key.*'size'.*capacity"),
        (
            {"training_ratio": 1, "rollout_fragment_length": 4},
            ConfigError,
            r"training_ratio=1 with 4 env steps .* 0.125 updates per iteration",
        ),
    ],
)
def test_bad_config_values_are_one_clear_error(overrides, error, match):
    with pytest.raises(error, match=match):
        DreamerV3("CartPole-v1", **{**TINY, **overrides})


def test_unsupported_spaces_are_one_clear_error():
    with pytest.raises(
        SpaceError, match=r"needs a 1-D Box \(vector\) or 3-D Box \(image\) observation space"
    ):
        DreamerV3("Taxi-v3", **TINY)
    with pytest.raises(SpaceError, match=r"acts in \[-1, 1\].*normalize_actions=True"):
        DreamerV3("Pendulum-v1", **TINY, normalize_actions=False)


def test_registry_export_and_fluent_config(tmp_path):
    assert get_algorithm_class("dreamerv3") is DreamerV3 is ExportedDreamerV3
    config = (
        DreamerV3Config()
        .environment("CartPole-v1")
        .env_runners(rollout_fragment_length=64)
        .training(**TINY, training_ratio=32, num_steps_sampled_before_learning_starts=64)
        .trainer(default_root_dir=str(tmp_path))
    )
    assert config.algo_kwargs["model_size"] == "nano"
    with config.build_algo() as run:
        result = run.train()
    learner = result["learners"]["default_policy"]
    assert {"world_model_loss", "dynamics_loss", "actor_loss", "critic_loss", "return_scale"} <= set(learner)
    assert result["num_env_steps_sampled_lifetime"] == 64
    # 64 steps sampled x 32 replayed per step / (4 x 8) per update = 64 updates.
    assert int(run.algorithm.num_grad_updates_lifetime) == 64


# -- checkpoints -----------------------------------------------------------------------------
def test_a_checkpoint_mid_training_keeps_the_replay_and_training_resumes(tmp_path):
    config = (
        DreamerV3Config()
        .environment("CartPole-v1")
        .env_runners(rollout_fragment_length=16)
        .training(
            **TINY,
            training_ratio=8,
            num_steps_sampled_before_learning_starts=32,
            checkpoint_replay_buffer=True,
        )
        .trainer(default_root_dir=str(tmp_path))
        .debugging(seed=3)
    )
    run = config.build_algo()
    run.train()
    run.train()
    steps = run.algorithm.num_env_steps_sampled_lifetime
    updates = int(run.algorithm.num_grad_updates_lifetime)
    buffer = run.datamodule.buffer
    stored = buffer.state_dict()
    path = run.save(tmp_path / "ckpt")
    weights = {k: v.clone() for k, v in run.algorithm.state_dict().items()}
    live_policy = Policy.from_algorithm(run.algorithm, seed=0)
    run.stop()

    # The stateful runner policy (one RSSM state per row; a latent sampled every step, so
    # same seed, same actions) comes back from the checkpoint alone.
    loaded_policy = Policy.from_checkpoint(path, seed=0)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    for _ in range(30):
        action = live_policy.compute_actions(obs[None])
        assert np.array_equal(loaded_policy.compute_actions(obs[None]), action)
        obs, _, terminated, truncated, _ = env.step(int(action[0]))
        if terminated or truncated:
            break

    checkpoint = torch.load(path, weights_only=True)  # plain tensors and numbers only
    saved = checkpoint["SequenceReplayDataModule"]["sequence_replay"]["streams"]
    assert sum(len(s["steps"]["reward"]) for s in saved) == len(buffer) >= steps

    restored = TrainingRun.from_checkpoint(path, trainer_kwargs={"default_root_dir": str(tmp_path)})
    assert all(torch.equal(v, restored.algorithm.state_dict()[k]) for k, v in weights.items())
    result = restored.train()
    assert result["num_env_steps_sampled_lifetime"] == steps + 16, "no new warm-up after the resume"
    assert int(restored.algorithm.num_grad_updates_lifetime) == updates + 16 * 8 // 32
    continued = restored.datamodule.buffer.state_dict()["streams"][0]["steps"]
    old = stored["streams"][0]["steps"]
    size = len(old["reward"])
    assert torch.equal(continued["observation"][:size], old["observation"]), "the restored steps are kept"
    restored.stop()

    no_buffer = config.training(checkpoint_replay_buffer=False).build_algo()
    with no_buffer:
        no_buffer.train()
        state = torch.load(no_buffer.save(tmp_path / "small"), weights_only=True)["SequenceReplayDataModule"]
    assert "sequence_replay" not in state


def test_bf16_mixed_precision_trains(quiet_trainer_kwargs):
    algo = DreamerV3("CartPole-v1", **TINY, training_ratio=32, num_steps_sampled_before_learning_starts=32)
    trainer = pl.Trainer(
        **quiet_trainer_kwargs, max_epochs=2, precision="bf16-mixed", check_val_every_n_epoch=2
    )
    trainer.fit(algo)
    assert int(algo.num_grad_updates_lifetime) > 0
    assert math.isfinite(float(trainer.callback_metrics["learners/default_policy/world_model_loss"]))
    assert all(p.dtype == torch.float32 for p in algo.parameters()), "weights stay float32"


def test_cli_fit_from_the_cartpole_config(tmp_path):
    tiny = [f"--model.{k}={v}" for k, v in TINY.items()]
    args = ["fit", "--config", str(CONFIGS / "cartpole.yaml"), "--trainer.max_epochs", "2", *tiny]
    args += ["--model.num_steps_sampled_before_learning_starts", "64", "--model.training_ratio", "32"]
    # fp32 and one thread: bf16 autocast only pays off for the config's XS-sized matmuls.
    args += ["--model.rollout_fragment_length", "16", "--model.num_cpus_per_learner", "1"]
    args += ["--trainer.precision", "32-true"]
    proc = run_cli([*args, *quiet(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))


def test_dreams_are_logged_as_images_to_tensorboard(tmp_path, quiet_trainer_kwargs):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    algo = DreamerV3("CartPole-v1", **TINY, training_ratio=8, rollout_fragment_length=16)
    dreams = LogDreams(every_n_epochs=2, num_windows=3, context_steps=3)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    kwargs = {**quiet_trainer_kwargs, "logger": logger, "max_epochs": 2, "check_val_every_n_epoch": 10}
    pl.Trainer(**kwargs, callbacks=[dreams]).fit(algo)
    # 3 windows x (truth, dream, error) x 4 observation dims (+ separators), 8 steps; 8-pixel cells.
    assert dreams.last_image.shape == (3 * (3 * 4 + 1) * 8, 8 * 8, 3)
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "dreams/open_loop" in events.Tags()["images"]
    with pytest.raises(ConfigError, match="every_n_epochs must be a positive integer, got 0"):
        LogDreams(every_n_epochs=0)


def test_the_pendulum_config_builds_a_continuous_model():
    algo = DreamerV3(**config_args("pendulum.yaml"))
    assert not algo.module.discrete and algo.hparams.model_size == "XS"


# -- learning --------------------------------------------------------------------------------
@pytest.mark.learning
def test_dreamerv3_learns_cartpole(quiet_trainer_kwargs):
    """A small model (RLlib's debugging size) with raised learning rates: the CPU test's budget.

    The bar is a greedy evaluation mean of 100, 4.5x a random policy's ~22, where 150 cost
    about twice the updates (this test is the suite's slowest). 16-step windows at training
    ratio 256 keep one update per env step at half the cost of 32-step ones (the loop over T
    and the dream starts both halve; CartPole's observation is its whole state, so a short
    context loses nothing): seeds 0 / 1 / 2 reach 100 at 1,440 / 1,120 / 1,280 env steps, in
    125 / 103 / 101 s alone (32-step windows, seed 0: 1,600 steps, 324 s).
    benchmarks/dreamerv3_cartpole.py measures size XS to 450."""
    pl.seed_everything(0, verbose=False)
    algo = DreamerV3(
        "CartPole-v1",
        model_size="micro",
        batch_size_B=16,
        batch_length_T=16,
        training_ratio=256,
        rollout_fragment_length=32,
        num_steps_sampled_before_learning_starts=512,
        world_model_lr=1e-3,
        actor_lr=3e-4,
        critic_lr=3e-4,
        evaluation_duration=10,
        evaluation_num_envs_per_env_runner=10,
        seed=0,
    )
    stop = StopOnReturn(100)
    trainer = pl.Trainer(
        **{**quiet_trainer_kwargs, "max_epochs": 10_000, "check_val_every_n_epoch": 5},
        callbacks=[stop, StopOnEnvSteps(3000)],
    )
    trainer.fit(algo)
    assert stop.reached_at is not None, f"evaluation return only {trainer.callback_metrics}"
