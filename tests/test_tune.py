"""Ray Tune the RLlib way: a fluent config with search spaces as ``param_space``, per-trial
checkpoints that restore with their counters, RLlib's result keys, no NaN/inf placeholders."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from ray import tune
from ray.tune import PlacementGroupFactory

from lightning_rl import checkpoint_format as ckpt
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.config.algorithm_config import is_search_space
from lightning_rl.errors import UnknownNameError
from lightning_rl.tune import AlgorithmTrainable, config_from_dict, trainable

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tune_ppo.py"
BATCH = 64


def load_example():
    spec = importlib.util.spec_from_file_location("tune_ppo_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numbers(node, prefix=""):
    """Every number in a nested result, with its slash-joined key."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numbers(value, f"{prefix}{key}/")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield prefix.rstrip("/"), node


def test_fluent_config_with_search_spaces_round_trips_through_its_dict():
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .training(lr=tune.grid_search([1e-3, 3e-4]), num_epochs=tune.choice([1, 2]))
        .evaluation(evaluation_interval=tune.grid_search([1, 2]))
        .learners(num_learners=tune.grid_search([0, 1]))
    )
    settings = config.to_dict()
    assert settings["lr"] == {"grid_search": [1e-3, 3e-4]} and is_search_space(settings["num_epochs"])
    assert is_search_space(settings["evaluation_interval"]) and is_search_space(settings["num_learners"])
    # A trial's resolved dict builds the same config (what AlgorithmTrainable does per trial).
    resolved = {**settings, "lr": 3e-4, "num_epochs": 2, "evaluation_interval": 2, "num_learners": 0}
    rebuilt = config_from_dict(None, resolved)
    assert rebuilt.algo_class is PPO and rebuilt.to_dict() == resolved
    assert rebuilt.build_trainer_kwargs()["check_val_every_n_epoch"] == 2


def test_trainables_name_their_algorithm_and_ask_for_one_bundle_per_runner():
    assert trainable("ppo").algorithm == "ppo" and issubclass(trainable(PPOConfig()), AlgorithmTrainable)
    with pytest.raises(UnknownNameError, match="PPO"):
        trainable("PPOO")
    config = PPOConfig().env_runners(num_env_runners=2).evaluation(evaluation_num_env_runners=1).to_dict()
    request = trainable("PPO").default_resource_request(config)
    assert isinstance(request, PlacementGroupFactory)
    assert request.bundles == [{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    # The registered "PPO" reads the algorithm from the dict; runners at RLlib's default (2).
    assert AlgorithmTrainable.default_resource_request(PPOConfig().to_dict()).bundles == [{"CPU": 1.0}] * 3


def test_two_trial_tune_run_reports_rllib_keys_and_checkpoints_that_restore(ray_session, tmp_path):
    example = load_example()
    config = example.build_config([1e-3, 3e-4], [1], train_batch_size=BATCH).evaluation(
        evaluation_interval=2, evaluation_duration=2
    )
    results = example.main(
        max_iterations=2, storage_path=str(tmp_path), stop_return=1e9, config=config, checkpoint_frequency=1
    )
    assert len(results) == 2 and results.num_errors == 0, [r.error for r in results]
    assert sorted(r.config["lr"] for r in results) == [3e-4, 1e-3]
    for result in results:
        reports = [json.loads(line) for line in (Path(result.path) / "result.json").read_text().splitlines()]
        assert [r["training_iteration"] for r in reports] == [1, 2]
        assert [r["num_env_steps_sampled_lifetime"] for r in reports] == [BATCH, 2 * BATCH]
        for report in reports:
            assert "episode_return_mean" in report["env_runners"]
            bad = [(k, v) for k, v in numbers(report) if not math.isfinite(v)]
            assert not bad, f"non-finite values reach Tune's loggers: {bad}"
        # Nothing about evaluation before it ran; RLlib's nested key after (interval 2).
        assert "evaluation" not in reports[0]
        assert reports[1]["evaluation"]["env_runners"]["episode_return_mean"] > 0
        # One checkpoint per iteration, each a Lightning checkpoint of the trial's run.
        assert len(result.best_checkpoints) == 2
        assert (Path(result.checkpoint.path) / "algorithm.ckpt").is_file()

    # Restoring a trial from its checkpoint (what Tuner.restore and PBT do) continues its counters;
    # PBT's exploit step also mutates the config: the restored optimizer follows the new lr.
    result = results[0]
    restored = trainable("PPO")(config={**result.config, "lr": 2 * result.config["lr"]})
    try:
        restored.restore(result.checkpoint)
        saved = ckpt.load_checkpoint(Path(result.checkpoint.path) / "algorithm.ckpt")["state_dict"]
        for name, tensor in restored.run.algorithm.state_dict().items():
            assert torch.equal(tensor, saved[name]), name
        report = restored.train()
        assert report["training_iteration"] == 3
        assert report["num_env_steps_sampled_lifetime"] == 3 * BATCH
        (optimizer,) = restored.run.trainer.optimizers
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2 * result.config["lr"])
    finally:
        restored.stop()
        shutil.rmtree(restored.logdir, ignore_errors=True)
