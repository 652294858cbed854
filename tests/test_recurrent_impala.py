"""Memory models in IMPALA and APPO: exact replay of the runners' fragments, resets inside a
fragment, bootstrap values from stored states, learning a memory task; and the clear error of
algorithms without memory-model support."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl import registry
from lightning_rl.algorithms.appo import APPO, APPOConfig, RecurrentAPPOModule
from lightning_rl.algorithms.impala import IMPALA, RecurrentImpalaModule
from lightning_rl.data.experience import results_to_tensordict
from lightning_rl.env_runners import EnvRunner
from lightning_rl.envs.classes import RepeatAfterMe
from lightning_rl.errors import ConfigError
from lightning_rl.policy import Policy
from lightning_rl.training_run import TrainingRun
from tests.envs import CountingEnv
from tests.test_recurrent import CORES
from tests.training import fit_then_evaluate


def fragments(algo, steps, count=1, num_envs=3):
    """``count`` consecutive fragments of ``steps`` steps from one runner with the algorithm's weights."""
    runner = EnvRunner(algo.env_runner_spec(num_envs=num_envs))
    return [results_to_tensordict([runner.sample(steps, state=algo.policy_state())]) for _ in range(count)]


def replayed_log_probs(module, network, batch):
    with torch.no_grad():
        params = module.policy_params_of(network, batch)
        return module.distribution(params).log_prob(batch["action"])


@pytest.mark.parametrize("algorithm", [IMPALA, APPO])
def test_memory_models_select_the_recurrent_module(algorithm):
    module = algorithm(CountingEnv, model_config=CORES["lstm"]).module
    assert isinstance(module, RecurrentImpalaModule | RecurrentAPPOModule)
    assert module.policy_spec().policy_class.__name__ == "RecurrentStochasticPolicy"


@pytest.mark.parametrize("core", list(CORES))
def test_replaying_fragments_reproduces_the_runners_log_probs(core):
    # Fragments of 13 steps replayed in chunks of 5 (5 + 5 + 3, the last one padded), episodes of
    # 3 and 7 steps ending inside chunks, and a second fragment starting from carried state.
    algo = APPO(CountingEnv, {"lengths": [3, 7]}, model_config={**CORES[core], "max_seq_len": 5})
    module = algo.module
    for batch in fragments(algo, 13, count=2):
        expected = batch["action_log_prob"]
        assert torch.allclose(replayed_log_probs(module, module.model, batch), expected, atol=1e-5)
        # APPO's target policy (a copy, not yet moved) replays the same way.
        target = replayed_log_probs(module, module.target_policy_net, batch)
        assert torch.allclose(target, expected, atol=1e-5)
    assert batch["recurrent_state"][:, 0].abs().sum() > 0, "the second fragment starts mid-episode"


def test_the_state_resets_at_episode_starts_inside_a_fragment():
    algo = IMPALA(CountingEnv, {"lengths": [4]}, model_config={**CORES["gru"], "max_seq_len": 10})
    (batch,) = fragments(algo, 10, num_envs=1)
    assert batch["is_init"][0, :, 0].nonzero().flatten().tolist() == [0, 4, 8]
    module = algo.module
    with torch.no_grad():
        before = module.replay(module.model, batch)
        changed = batch.clone()
        changed["observation"][:, 1:4] += 5.0  # inside the first episode only
        after = module.replay(module.model, changed)
    assert not torch.allclose(before[:, 1:4], after[:, 1:4])
    assert torch.equal(before[:, 4:], after[:, 4:]), "state leaked across the episode start at step 4"
    # Only each chunk's first stored state is used: the others are the runner's, not the replay's.
    changed = batch.clone()
    changed["recurrent_state"][:, 1:] = 123.0
    with torch.no_grad():
        assert torch.equal(module.replay(module.model, changed), before)


def test_bootstrap_values_come_from_the_stored_next_state():
    # Episodes of 50 steps: the first fragment ends mid-episode, so its last step bootstraps from
    # the next observation seen from the stored state after it, which is exactly where the next
    # fragment's replay starts: both must give the same value.
    algo = IMPALA(CountingEnv, {"lengths": [50]}, model_config={**CORES["lstm"], "max_seq_len": 4})
    first, second = fragments(algo, 6, count=2)
    module = algo.module
    with torch.no_grad():
        bootstrap = module.bootstrap_values(first[:, -1])
        _, values = module.forward_sequences(second)
    assert torch.allclose(bootstrap, values[:, 0], atol=1e-6)


def test_a_recurrent_minibatch_trains_end_to_end_through_vtrace():
    algo = APPO(CountingEnv, {"lengths": [3, 7]}, model_config={**CORES["attention"], "max_seq_len": 4})
    (batch,) = fragments(algo, 9)
    loss, stats = algo.module.compute_loss(batch)
    loss.backward()
    grads = [p.grad for p in algo.module.model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(stats["mean_rho"]) == pytest.approx(1.0, abs=1e-5), "behaviour = target policy"


def test_recurrent_appo_checkpoint_round_trip_and_inference_path(tmp_path):
    run = (
        APPOConfig(defaults="native")
        .environment(RepeatAfterMe)
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=10)
        .rl_module(model_config={**CORES["lstm"], "max_seq_len": 4})
        .training(train_batch_size=40)
        .trainer(default_root_dir=str(tmp_path))
        .debugging(seed=0)
        .build_algo()
    )
    run.train()
    path = run.save(tmp_path / "appo_lstm.ckpt")
    weights = {k: v.clone() for k, v in run.algorithm.state_dict().items()}
    run.stop()
    restored = TrainingRun.from_checkpoint(path, {"default_root_dir": str(tmp_path)})
    assert isinstance(restored.algorithm.module, RecurrentAPPOModule)
    assert all(torch.equal(v, weights[k]) for k, v in restored.algorithm.state_dict().items())
    assert restored.train()["training_iteration"] == 2
    restored.stop()
    policy = Policy.from_checkpoint(path)
    obs, _ = RepeatAfterMe().reset(seed=0)
    assert all(policy.compute_single_action(obs) in (0, 1) for _ in range(3))


def train_repeat_after_me(algorithm, model_config, tmp_path, iterations):
    pl.seed_everything(0, verbose=False)
    algo = algorithm(
        RepeatAfterMe,
        {"repeat_delay": 1},
        num_envs_per_env_runner=8,
        rollout_fragment_length=25,
        train_batch_size=400,
        minibatch_size=100,
        lr=3e-3,
        gamma=0.9,
        entropy_coeff=0.0,
        model_config={"fcnet_hiddens": [32], "max_seq_len": 25, **model_config},
        evaluation_duration=16,
        seed=0,
    )
    evaluation_return = fit_then_evaluate(algo, iterations, tmp_path)
    assert algo.num_env_steps_sampled_lifetime <= iterations * 400
    return evaluation_return


LSTM = {"use_lstm": True, "lstm_cell_size": 32}


@pytest.mark.learning
@pytest.mark.parametrize(("algorithm", "iterations"), [(APPO, 20), (IMPALA, 40)], ids=["appo", "impala"])
def test_an_lstm_solves_repeat_after_me(algorithm, iterations, tmp_path):
    # 400 env steps per iteration: APPO 8000 steps, IMPALA (one pass per batch) 16000.
    assert train_repeat_after_me(algorithm, LSTM, tmp_path, iterations) >= 45  # of 49


@pytest.mark.learning
def test_without_memory_appo_cannot_solve_repeat_after_me(tmp_path):
    assert train_repeat_after_me(APPO, {}, tmp_path, 20) <= 10


@pytest.mark.parametrize("name", ["dqn", "sac", "bc", "marwil", "cql", "a2c"])
def test_algorithms_without_memory_models_reject_them_clearly(name):
    # Built-ins and the example plugin's A2C, which does not opt in (supports_memory_models).
    algorithm = registry.get_algorithm_class(name)
    message = (
        r"model_config use_lstm=True: .* has no memory-model support; algorithms that do: APPO, IMPALA, PPO"
    )
    with pytest.raises(ConfigError, match=message):
        algorithm("CartPole-v1", model_config={"use_lstm": True})
    with pytest.raises(ConfigError, match=r"use_attention=True"):
        algorithm("CartPole-v1", model_config={"use_attention": True})
