"""RLlib's callbacks API (issue 19, item 2): ``config.callbacks(...)``, episode hooks in the
runners, custom metrics through ``metrics_logger`` into ``train()``'s result and Lightning's
loggers, driver hooks, and the checks on a class named by import path."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
from lightning.pytorch.loggers import Logger

from lightning_rl import RLlibCallback, TrainingRun
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.env_runners.rllib_callbacks import CallbackSettings, MetricsLogger, resolve_callbacks
from lightning_rl.errors import ConfigError

DRIVER_CALLS: list[str] = []


class PoleAngleCallback(RLlibCallback):
    """RLlib's custom_metrics_and_callbacks example: track the pole angle through each episode."""

    def on_episode_start(self, *, episode, env_runner, metrics_logger, env, env_index, rl_module, **kwargs):
        assert env_index == episode.env_index and episode.get_length() == 0
        episode.custom_data["pole_angles"] = []

    def on_episode_step(self, *, episode, env_runner, metrics_logger, env, env_index, rl_module, **kwargs):
        angle = abs(float(episode.get_observations(-1)[2]))
        episode.custom_data["pole_angles"].append(angle)

    def on_episode_end(self, *, episode, env_runner, metrics_logger, env, env_index, rl_module, **kwargs):
        angles = episode.custom_data["pole_angles"]
        assert len(angles) == episode.get_length() == len(episode.get_observations()) - 1
        assert episode.is_done and isinstance(episode.id_, int)
        metrics_logger.log_value("pole_angle_max", max(angles), reduce="max")
        metrics_logger.log_value("my_return_mean", episode.get_return(), reduce="mean")
        metrics_logger.log_value("my_num_episodes", 1, reduce="sum")

    def on_sample_end(self, *, env_runner, metrics_logger, samples, **kwargs):
        metrics_logger.log_value("samples_ended", 1, reduce="sum", clear_on_reduce=True)


class DriverHooks(RLlibCallback):
    def on_train_result(self, *, algorithm, metrics_logger, result, **kwargs):
        DRIVER_CALLS.append("on_train_result")
        metrics_logger.log_value("driver_iterations", 1, reduce="sum")

    def on_evaluate_start(self, *, algorithm, metrics_logger, **kwargs):
        DRIVER_CALLS.append("on_evaluate_start")

    def on_evaluate_end(self, *, algorithm, metrics_logger, evaluation_metrics, **kwargs):
        DRIVER_CALLS.append(f"on_evaluate_end:{int(evaluation_metrics['num_episodes'])}")

    def on_checkpoint_loaded(self, *, algorithm, metrics_logger, **kwargs):
        DRIVER_CALLS.append("on_checkpoint_loaded")


class MetricsRecorder(Logger):
    """A real Lightning logger that keeps what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append(dict(metrics))


class EpochEndSeen(pl.Callback):
    """A Lightning callback beside the RLlib ones: it still runs and sees the custom metric."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.values.append(float(trainer.callback_metrics["env_runners/pole_angle_max"]))


def small_config(tmp_path, runners: int = 0) -> PPOConfig:
    return (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=2)
        .training(train_batch_size=256, minibatch_size=128, num_epochs=1)
        .debugging(seed=0)
    )


def check_custom_metrics(results: list[dict]) -> None:
    last = results[-1]
    env_runners = last["env_runners"]
    assert 0.0 < env_runners["pole_angle_max"] < 0.25  # CartPole ends at 0.2095 rad
    # The callback's own episode count (a lifetime sum) matches the runner's episode count.
    assert env_runners["my_num_episodes"] == last["num_episodes_lifetime"]
    assert env_runners["samples_ended"] >= 1  # cleared each iteration
    assert math.isfinite(env_runners["my_return_mean"]) and env_runners["my_return_mean"] > 5


def test_custom_metrics_from_episode_hooks_in_process(tmp_path):
    recorder, seen = MetricsRecorder(), EpochEndSeen()
    algo = (
        small_config(tmp_path)
        .callbacks(PoleAngleCallback)
        .trainer(default_root_dir=str(tmp_path), logger=recorder, callbacks=[seen])
        .build_algo()
    )
    try:
        results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    check_custom_metrics(results)
    # Lightning's loggers get the metric under the user's key, and Lightning callbacks still run.
    logged = [
        row["env_runners/pole_angle_max"] for row in recorder.rows if "env_runners/pole_angle_max" in row
    ]
    assert len(logged) == 2 and logged[-1] == pytest.approx(results[-1]["env_runners"]["pole_angle_max"])
    assert len(seen.values) == 2


def test_custom_metrics_from_per_hook_callables_on_a_ray_runner(tmp_path, ray_session):
    """RLlib 2.4x+ per-hook callables, built inside a Ray EnvRunner actor."""

    def on_episode_end(*, episode, metrics_logger, **kwargs):
        metrics_logger.log_value("episode_len_seen", episode.get_length(), reduce="max", window=50)
        metrics_logger.log_value("my_num_episodes", 1, reduce="sum")

    algo = (
        small_config(tmp_path, runners=1)
        .callbacks(on_episode_end=on_episode_end)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    env_runners = results[-1]["env_runners"]
    assert env_runners["my_num_episodes"] == results[-1]["num_episodes_lifetime"] > 0
    assert 5 <= env_runners["episode_len_seen"] <= 500


def test_driver_hooks_are_called_in_order_and_log_into_the_result(tmp_path):
    DRIVER_CALLS.clear()
    algo = (
        small_config(tmp_path)
        .callbacks(DriverHooks)
        .evaluation(evaluation_num_env_runners=0, evaluation_duration=2)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        first = algo.train()
        path = algo.save(tmp_path / "ckpt")
        algo.restore(path)
        algo.evaluate()
        second = algo.train()
    finally:
        algo.stop()
    assert DRIVER_CALLS == [
        "on_train_result",
        "on_checkpoint_loaded",
        "on_evaluate_start",
        "on_evaluate_end:2",
        "on_train_result",
    ]
    assert first["driver_iterations"] == 1 and second["driver_iterations"] == 2
    # A checkpoint carries the class's import path: the rebuilt run calls it again.
    DRIVER_CALLS.clear()
    TrainingRun.from_checkpoint(path, {"default_root_dir": str(tmp_path), "logger": False}).stop()
    assert DRIVER_CALLS == ["on_checkpoint_loaded"]


def test_runners_without_callbacks_track_no_episodes():
    """No callback configured: no episode objects, no hook calls in the runner's loop."""
    settings = resolve_callbacks({"on_train_result": lambda **kwargs: None})
    callbacks = settings.build()
    assert not callbacks.has("on_episode_start", "on_episode_step", "on_episode_end")
    assert resolve_callbacks(None) is None


def test_callbacks_class_is_checked_and_stored_as_an_import_path(tmp_path):
    with pytest.raises(ConfigError, match=r"RLlibCallback.*collections:OrderedDict"):
        PPOConfig().callbacks("collections:OrderedDict")
    with pytest.raises(ConfigError, match="no_such_module_xyz:Callbacks"):
        PPOConfig().callbacks("no_such_module_xyz:Callbacks")
    with pytest.raises(ConfigError, match="on_episode_end"):
        PPOConfig().callbacks(on_episode_end=3)
    with pytest.raises(ConfigError, match="on_episode_finished"):
        resolve_callbacks({"on_episode_finished": print})
    # The algorithm setting (YAML / CLI): the same check, and a storable import path.
    algo = PPO(env="CartPole-v1", callbacks=f"{__name__}:PoleAngleCallback")
    assert isinstance(algo.rllib_callbacks, CallbackSettings)
    assert algo.hparams["callbacks"] == {"callbacks_class": f"{__name__}:PoleAngleCallback"}
    with pytest.raises(ConfigError, match="os:getcwd"):
        PPO(env="CartPole-v1", callbacks="os:getcwd")


def test_metrics_logger_reductions_and_bounds():
    logger = MetricsLogger()
    for value in (1.0, 3.0, 2.0):
        logger.log_value("m", value)
        logger.log_value("x", value, reduce="max")
        logger.log_value("w", value, reduce="min", window=2)
    assert logger.peek("m") == 2.0 and logger.peek("x") == 3.0 and logger.peek("w") == 2.0
    with pytest.raises(ConfigError, match="reduce"):
        logger.log_value("bad", 1.0, reduce="median")
    with pytest.raises(ConfigError, match="window"):
        logger.log_value("bad", 1.0, window=0)
