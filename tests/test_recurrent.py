"""Memory models: state handling in runners, exact replay on the learner, masks, checkpoints, learning."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.data.experience import results_to_tensordict
from lightning_rl.data.on_policy import to_sequences
from lightning_rl.env_runners import EnvRunner
from lightning_rl.envs.classes import RepeatAfterMe
from lightning_rl.policy import Policy
from lightning_rl.training_run import TrainingRun
from tests.envs import CountingEnv
from tests.training import fit_then_evaluate

CORES = {
    "lstm": {"use_lstm": True, "lstm_cell_size": 16},
    "gru": {"use_gru": True, "lstm_cell_size": 16},
    "attention": {
        "use_attention": True,
        "attention_dim": 16,
        "attention_num_heads": 2,
        "attention_memory_inference": 3,
    },
}


def rollout(algo, steps, runner=None):
    runner = runner or EnvRunner(algo.env_runner_spec(num_envs=3))
    return runner, results_to_tensordict([runner.sample(steps, state=algo.policy_state())])


@pytest.mark.parametrize("core", list(CORES))
def test_state_resets_at_episode_starts_inside_the_vector_env(core):
    algo = PPO(CountingEnv, {"lengths": [3, 5]}, model_config={**CORES[core], "max_seq_len": 4})
    _, batch = rollout(algo, 12)
    state_in = batch["recurrent_state"]
    is_init = batch["is_init"][..., 0]
    assert is_init[:, 0].all(), "the first step of a fresh runner starts episodes"
    assert (state_in[is_init] == 0).all(), "every episode starts from the zero state"
    assert (state_in[~is_init].abs().sum(-1) > 0).all(), "mid-episode steps carry state"
    # Episode ends inside the vector env are exactly where is_init follows.
    assert torch.equal(is_init[:, 1:], batch["next", "done"][:, :-1, 0])


@pytest.mark.parametrize("core", list(CORES))
def test_state_is_carried_across_rollout_fragments(core):
    algo = PPO(CountingEnv, {"lengths": [50]}, model_config={**CORES[core], "max_seq_len": 4})
    runner, first = rollout(algo, 5)
    _, second = rollout(algo, 5, runner)
    assert not second["is_init"][:, 0].any()
    assert torch.allclose(second["recurrent_state"][:, 0], first["next_recurrent_state"][:, -1])


@pytest.mark.parametrize("core", list(CORES))
def test_learner_replay_reproduces_the_runners_log_probs(core):
    algo = PPO(CountingEnv, {"lengths": [3, 7]}, model_config={**CORES[core], "max_seq_len": 5})
    _, batch = rollout(algo, 13)
    sequences = to_sequences(batch, 5)
    model = algo.module.model
    with torch.no_grad():
        features = model.sequence(
            sequences["observation"], sequences["is_init"][..., 0], sequences["recurrent_state"][:, 0]
        )
        log_probs = model.distribution.log_prob(model.policy_params(features), sequences["action"])
    mask = sequences["mask"]
    assert torch.allclose(log_probs[mask], sequences["action_log_prob"][mask], atol=1e-5)


def test_sequences_are_padded_and_padding_never_reaches_the_loss():
    algo = PPO(CountingEnv, {"lengths": [4, 6]}, model_config={**CORES["lstm"], "max_seq_len": 4})
    _, batch = rollout(algo, 10)  # 10 steps -> sequences of 4, 4, 2 + 2 padding
    batch = algo.process_rollout(batch)
    sequences = to_sequences(batch, 4)
    assert sequences.batch_size == (9, 4)
    assert sequences["mask"].sum() == 30 and not sequences["mask"][2::3, 2:].any()
    loss, _ = algo.module.compute_loss(sequences)
    garbage = sequences.clone()
    garbage["advantage"][~garbage["mask"]] = 1e6
    garbage["value_target"][~garbage["mask"]] = -1e6
    garbage_loss, _ = algo.module.compute_loss(garbage)
    assert torch.allclose(loss, garbage_loss), "padded steps changed the loss"


def test_recurrent_checkpoint_round_trip_and_inference_path(tmp_path):
    run = (
        PPOConfig(defaults="native")
        .environment(RepeatAfterMe)
        .rl_module(model_config={**CORES["lstm"], "max_seq_len": 8})
        .training(train_batch_size=128, minibatch_size=64, num_epochs=1)
        .trainer(default_root_dir=str(tmp_path))
        .debugging(seed=0)
        .build_algo()
    )
    run.train()
    path = run.save(tmp_path / "lstm.ckpt")
    weights = {k: v.clone() for k, v in run.algorithm.state_dict().items()}
    run.stop()
    restored = TrainingRun.from_checkpoint(path, {"default_root_dir": str(tmp_path)})
    assert all(torch.equal(v, weights[k]) for k, v in restored.algorithm.state_dict().items())
    assert restored.train()["training_iteration"] == 2
    restored.stop()
    policy = Policy.from_checkpoint(path)
    env = RepeatAfterMe()
    obs, _ = env.reset(seed=0)
    actions = [policy.compute_single_action(obs) for _ in range(3)]
    assert all(a in (0, 1) for a in actions)


def train_repeat_after_me(model_config, tmp_path, iterations=40):
    pl.seed_everything(0, verbose=False)
    algo = PPO(
        RepeatAfterMe,
        {"repeat_delay": 1},
        num_envs_per_env_runner=8,
        train_batch_size=512,
        minibatch_size=128,
        num_epochs=4,
        lr=3e-3,
        gamma=0.9,
        lambda_=0.9,
        model_config={"fcnet_hiddens": [32], "max_seq_len": 16, **model_config},
        evaluation_duration=16,
        seed=0,
    )
    return fit_then_evaluate(algo, iterations, tmp_path)


@pytest.mark.learning
@pytest.mark.parametrize(
    "memory",
    [
        {"use_lstm": True, "lstm_cell_size": 32},
        {"use_attention": True, "attention_dim": 32, "attention_memory_inference": 4},
    ],
    ids=["lstm", "attention"],
)
def test_memory_models_solve_repeat_after_me(memory, tmp_path):
    assert train_repeat_after_me(memory, tmp_path) >= 45  # of 49


@pytest.mark.learning
def test_a_feed_forward_policy_cannot_solve_repeat_after_me(tmp_path):
    assert train_repeat_after_me({}, tmp_path) <= 10
