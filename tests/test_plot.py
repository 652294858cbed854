"""``lightning-rl plot``: learning curves of CSV-logged runs, overlaid, to a PNG."""

from __future__ import annotations

import csv

import matplotlib.image
import numpy as np
import pytest

from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.cli import main
from lightning_rl.errors import ConfigError
from lightning_rl.plotting import plot_learning_curves, read_run

# matplotlib's first two colours: run 1 and run 2
BLUE, ORANGE = np.array([0x1F, 0x77, 0xB4]) / 255, np.array([0xFF, 0x7F, 0x0E]) / 255


@pytest.fixture(scope="module")
def log_root(tmp_path_factory):
    """Two short PPO runs (different seeds) logged by the fluent config's default CSVLogger."""
    root = tmp_path_factory.mktemp("logs")
    for seed in (1, 2):
        run = (
            PPOConfig(defaults="native")
            .environment("CartPole-v1")
            .env_runners(num_envs_per_env_runner=4)
            .training(train_batch_size=256, minibatch_size=128, num_epochs=4, lr=1e-3)
            .evaluation(evaluation_interval=2, evaluation_duration=4)
            .debugging(seed=seed)
            .trainer(default_root_dir=str(root / f"seed{seed}"))
            .build_algo()
        )
        for _ in range(6):
            run.train()
        run.stop()
    return root


def colour_pixels(image: np.ndarray, colour: np.ndarray) -> int:
    return int((np.abs(image[..., :3] - colour).max(axis=-1) < 0.08).sum())


def test_csv_logs_carry_env_steps_and_wall_time_per_iteration(log_root):
    metrics = next(log_root.glob("seed1/**/metrics.csv"))
    rows = list(csv.DictReader(metrics.open()))
    times = [float(r["time_total_s"]) for r in rows if r.get("time_total_s")]
    assert len(times) == 6 and times == sorted(times) and times[0] > 0
    run = read_run(metrics, "seed1")
    assert sorted(run.x_by_epoch["num_env_steps_sampled_lifetime"].values()) == [
        256.0 * i for i in range(1, 7)
    ]
    xs, ys = run.points("evaluation/episode_return_mean", "num_env_steps_sampled_lifetime")
    assert xs == [512.0, 1024.0, 1536.0] and len(ys) == 3, "evaluation rows map to their iteration's steps"


def test_plot_command_draws_both_runs_against_steps_and_time(log_root, tmp_path, capsys):
    output = tmp_path / "curves.png"
    assert main(["plot", str(log_root), "--output", str(output), "--title", "PPO CartPole"]) == 0
    assert str(output) in capsys.readouterr().out
    image = matplotlib.image.imread(output)
    height, width = image.shape[:2]
    assert (height, width) == (760, 1200), "two metric rows, two x axes"
    for top, bottom in ((0, height // 2), (height // 2, height)):  # training return, evaluation return
        for left, right in ((0, width // 2), (width // 2, width)):  # env steps, wall time
            panel = image[top:bottom, left:right]
            assert colour_pixels(panel, BLUE) > 150 and colour_pixels(panel, ORANGE) > 150


def test_plot_errors_name_the_problem(log_root, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        plot_learning_curves([tmp_path / "missing"], tmp_path / "x.png")
    with pytest.raises(ConfigError, match=r"No metrics\.csv"):
        plot_learning_curves([tmp_path], tmp_path / "x.png")
    with pytest.raises(ConfigError, match=r"Logged metrics: .*env_runners/episode_return_mean"):
        plot_learning_curves([log_root], tmp_path / "x.png", metrics=["no/such_metric"])
