"""The Ray Tune example: several trials to completion, per-iteration reports, early stopping."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tune_ppo.py"


def load_example():
    spec = importlib.util.spec_from_file_location("tune_ppo_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tune_runs_four_trials_reporting_every_iteration_and_stopping_on_return(ray_session, tmp_path):
    results = load_example().main(max_iterations=10, storage_path=str(tmp_path), stop_return=40.0)
    assert len(results) == 4 and results.num_errors == 0
    for result in results:
        history = result.metrics_dataframe
        assert list(history["training_iteration"]) == list(range(1, len(history) + 1)), (
            "one report per iteration"
        )
        assert "env_runners/episode_return_mean" in history.columns
        stopped_early = result.metrics["evaluation_return"] >= 40.0
        assert stopped_early or result.metrics["training_iteration"] == 10
    assert any(
        r.metrics["evaluation_return"] >= 40.0 and r.metrics["training_iteration"] < 10 for r in results
    ), "at least one trial reached the return threshold and was stopped early"
