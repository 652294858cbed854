"""The RL progress bar: iteration, env steps, return, env steps/s; default in the CLI and TrainingRun."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.lightning_cli import _cli_class
from lightning_rl.progress import RLProgressBar


def progress_bars(trainer: pl.Trainer) -> list[ProgressBar]:
    return [c for c in trainer.callbacks if isinstance(c, ProgressBar)]


def test_the_bar_shows_iteration_env_steps_return_and_throughput(tmp_path):
    bar = RLProgressBar()
    algo = PPO(
        "CartPole-v1", train_batch_size=128, minibatch_size=64, num_epochs=1, seed=0, evaluation_duration=2
    )
    trainer = pl.Trainer(
        max_epochs=3, callbacks=[bar], logger=False, default_root_dir=tmp_path, enable_model_summary=False
    )
    trainer.fit(algo)
    line = bar.train_progress_bar.desc + " " + bar.train_progress_bar.postfix
    assert line.startswith("Iteration 3")
    assert "env_steps=384" in line, line
    assert f"return={algo.experience.last_metrics['env_runners/episode_return_mean']:.2f}" in line, line
    assert "eval_return=" in line and "steps/s=" in line, line


def test_plain_trainers_keep_lightnings_bar_unless_they_opt_in(tmp_path):
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False)
    # Lightning's own default: TQDM, or Rich where rich is installed (import-linter brings it).
    bars = progress_bars(trainer)
    assert len(bars) == 1 and not isinstance(bars[0], RLProgressBar), bars


def cli_trainer(tmp_path, *args):
    cli = _cli_class()(
        args=["--model", "lightning_rl.algorithms.ppo.PPO", "--model.env", "CartPole-v1", *args],
        run=False,
        trainer_defaults={"default_root_dir": str(tmp_path), "logger": False},
    )
    return cli.trainer


def test_the_cli_uses_the_rl_bar_by_default_and_respects_user_choices(tmp_path):
    assert [type(b) for b in progress_bars(cli_trainer(tmp_path))] == [RLProgressBar]
    assert progress_bars(cli_trainer(tmp_path, "--trainer.enable_progress_bar", "false")) == []
    own = cli_trainer(tmp_path, "--trainer.callbacks", "lightning.pytorch.callbacks.TQDMProgressBar")
    assert [type(b) for b in progress_bars(own)] == [TQDMProgressBar]


def test_training_run_uses_the_rl_bar_when_the_bar_is_on(tmp_path):
    config = (
        PPOConfig(defaults="native")
        .environment("CartPole-v1")
        .trainer(default_root_dir=str(tmp_path), logger=False)
    )
    quiet = config.build_algo()
    assert progress_bars(quiet.trainer) == []
    quiet.stop()
    shown = config.trainer(enable_progress_bar=True).build_algo()
    assert [type(b) for b in progress_bars(shown.trainer)] == [RLProgressBar]
    shown.stop()
