"""Ray Tune over lightning-rl, driven the way RLlib users drive it.

RLlib's algorithms are Tune class trainables, so a sweep is
``Tuner("PPO", param_space=PPOConfig()...training(lr=tune.grid_search([...])))``. Ours are
LightningModules, so this module supplies the trainable side:

- :class:`AlgorithmTrainable`: a ``tune.Trainable`` that builds a
  :class:`~lightning_rl.TrainingRun` from the trial's config dict (what
  :meth:`AlgorithmConfig.to_dict` returns, search spaces resolved by Tune), runs one training
  iteration per ``step()``, and saves/restores Lightning checkpoints, so Tune's
  ``CheckpointConfig``, ``Tuner.restore`` and PBT's exploit step work per trial.
- :func:`trainable` makes one for an algorithm (registry name, class or fluent config);
  :func:`register_trainables` (run on import) registers every registry algorithm under its name,
  so ``Tuner("PPO", ...)`` works; and a fluent config is accepted as ``param_space`` itself.

Results use RLlib's keys: ``env_runners/episode_return_mean``,
``evaluation/env_runners/episode_return_mean``, ``num_env_steps_sampled_lifetime``,
``training_iteration``. The ``evaluation`` results appear from the first evaluation on and are
carried forward between evaluations (a stop criterion on them stays defined); before the first
evaluation there is no placeholder value at all, so Tune's loggers never see a NaN or inf.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from ray import tune
from ray.tune import PlacementGroupFactory

from lightning_rl import checkpoint_format as ckpt
from lightning_rl.algorithms.base import Algorithm
from lightning_rl.config.algorithm_config import AlgorithmConfig, algorithm_parameters
from lightning_rl.errors import ConfigError
from lightning_rl.registry import algorithms, get_algorithm_class
from lightning_rl.training_run import TrainingRun

CHECKPOINT_FILE = "algorithm.ckpt"


class _ApplyTrialLearningRate(pl.Callback):
    """PBT restores a trial from another trial's checkpoint and mutates its config: Lightning
    then restores the optimizer (and lr scheduler) state saved under the old ``lr``, which would
    silently undo the mutation. Rescale it to the trial's ``lr`` once, after that restore.

    Only the ``lr`` hyperparameter is followed (algorithms with several, e.g. SAC's per-network
    rates, keep the checkpoint's)."""

    def __init__(self) -> None:
        self.scale: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        scale, self.scale = self.scale, None
        if scale is None or scale == 1.0:
            return
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for key in ("lr", "initial_lr"):
                    if key in group:
                        group[key] = group[key] * scale
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * scale for lr in config.scheduler.base_lrs]


def config_from_dict(algorithm: str | type[Algorithm] | None, settings: dict[str, Any]) -> AlgorithmConfig:
    """The fluent config a trial dict describes (the inverse of :meth:`AlgorithmConfig.to_dict`).

    ``algorithm`` wins over the dict's own ``"algorithm"`` entry; one of them must name it.
    """
    algorithm = algorithm or settings.get("algorithm")
    if algorithm is None:
        raise ConfigError(
            "The Tune config names no algorithm: pass param_space=PPOConfig()... (or its to_dict()), "
            "or use a trainable made for one algorithm, e.g. lightning_rl.tune.trainable('PPO')."
        )
    algo_class = get_algorithm_class(algorithm) if isinstance(algorithm, str) else algorithm
    return AlgorithmConfig(algo_class).update_from_dict(dict(settings))


class AlgorithmTrainable(tune.Trainable):
    """One trial: a :class:`TrainingRun` built from the trial's config, one iteration per step.

    Subclasses made by :func:`trainable` fix :attr:`algorithm` (and may fix
    :attr:`make_config`, a ``trial config -> AlgorithmConfig`` factory); otherwise the trial
    config's ``"algorithm"`` entry names it.
    """

    algorithm: str | type[Algorithm] | None = None
    make_config: Callable[[dict[str, Any]], AlgorithmConfig] | None = None

    def setup(self, config: dict[str, Any]) -> None:
        factory = type(self).make_config
        algo_config = factory(config) if factory is not None else config_from_dict(self.algorithm, config)
        # Lightning's logs go into the trial's own folder, next to Tune's.
        algo_config.trainer_kwargs.setdefault("default_root_dir", self.logdir)
        callbacks = algo_config.trainer_kwargs.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
        self._trial_lr = _ApplyTrialLearningRate()
        algo_config.trainer_kwargs["callbacks"] = [*callbacks, self._trial_lr]
        self.run: TrainingRun = algo_config.build_algo()
        self._last_evaluation: dict[str, Any] | None = None

    def step(self) -> dict[str, Any]:
        result = self.run.train()
        if "evaluation" in result:
            self._last_evaluation = result["evaluation"]
        elif self._last_evaluation is not None:
            result["evaluation"] = self._last_evaluation
        # Tune keeps its own clocks (they survive restores); ours restart with the process.
        result.pop("time_total_s", None)
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.run.save(Path(checkpoint_dir) / CHECKPOINT_FILE)

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        if not isinstance(checkpoint, str):
            raise ConfigError(f"{type(self).__name__} restores from a checkpoint folder, got {checkpoint!r}.")
        path = Path(checkpoint) / CHECKPOINT_FILE
        self.run.restore(path)
        saved_lr = ckpt.algorithm_init_kwargs(ckpt.load_checkpoint(path)).get("lr")
        lr = getattr(self.run.algorithm.hparams, "lr", None)
        if isinstance(saved_lr, int | float) and isinstance(lr, int | float) and saved_lr > 0:
            self._trial_lr.scale = float(lr) / float(saved_lr)
        # The restored run continues from the checkpoint's iteration; evaluations after it
        # are not in it.
        self._last_evaluation = None

    def cleanup(self) -> None:
        run = getattr(self, "run", None)
        if run is not None:
            run.stop()

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> PlacementGroupFactory:
        """One bundle for the learner, one per EnvRunner actor (training and evaluation).

        The trial's actors are created inside its placement group, so a sweep never starts
        more trials than the cluster can give runners to (RLlib's Algorithm asks the same way).
        """
        factory = cls.make_config
        if factory is not None:
            settings = factory(config).to_dict()
        else:
            settings = dict(config)
        algorithm = cls.algorithm or settings.get("algorithm")
        params: dict[str, Any] = {}
        if algorithm is not None:
            algo_class = get_algorithm_class(algorithm) if isinstance(algorithm, str) else algorithm
            params = {name: p.default for name, p in algorithm_parameters(algo_class).items()}

        def setting(name: str, default: float) -> float:
            value = settings.get(name, params.get(name, default))
            return default if value is None else float(value)

        learners = max(1, int(setting("num_learners", 0)))
        learner = {"CPU": setting("num_cpus_per_learner", 1) * learners}
        gpus = setting("num_gpus_per_learner", 0) * learners
        if gpus:
            learner["GPU"] = gpus
        runner: dict[str, float] = {"CPU": setting("num_cpus_per_env_runner", 1)}
        if setting("num_gpus_per_env_runner", 0):
            runner["GPU"] = setting("num_gpus_per_env_runner", 0)
        custom = settings.get("custom_resources_per_env_runner") or {}
        runner.update({name: float(amount) for name, amount in custom.items()})
        runners = int(setting("num_env_runners", 0)) + int(setting("evaluation_num_env_runners", 0))
        return PlacementGroupFactory([learner] + [dict(runner) for _ in range(runners)], strategy="PACK")


def trainable(
    algorithm: str | type[Algorithm] | AlgorithmConfig,
    make_config: Callable[[dict[str, Any]], AlgorithmConfig] | None = None,
) -> type[AlgorithmTrainable]:
    """A Tune trainable class for one algorithm: ``Tuner(trainable("PPO"), param_space=config)``.

    ``algorithm`` is a registry name, an :class:`Algorithm` subclass or a fluent config (its
    algorithm). ``make_config`` optionally builds the fluent config from the trial's dict
    instead of reading the dict as :meth:`AlgorithmConfig.to_dict` output.
    """
    if isinstance(algorithm, AlgorithmConfig):
        algorithm = algorithm.algo_class
    if isinstance(algorithm, str):
        name = get_algorithm_class(algorithm).__name__  # unknown names fail here, listing choices
    elif isinstance(algorithm, type) and issubclass(algorithm, Algorithm):
        name = algorithm.__name__
    else:
        raise ConfigError(
            f"trainable() needs an algorithm name, Algorithm subclass or AlgorithmConfig, got {algorithm!r}."
        )
    attributes: dict[str, Any] = {"algorithm": algorithm, "__module__": __name__}
    if make_config is not None:
        attributes["make_config"] = staticmethod(make_config)
    return type(f"{name}Trainable", (AlgorithmTrainable,), attributes)


def register_trainables() -> list[str]:
    """Register every registry algorithm with Tune under its name, RLlib-style (``Tuner("PPO")``).

    Returns the names registered. Names only: no algorithm module is imported until a trial runs.
    """
    names = algorithms.names()
    for name in names:
        attributes = {"algorithm": name, "__module__": __name__}
        tune.register_trainable(name, type(f"{name}Trainable", (AlgorithmTrainable,), attributes))
    return names


def _accept_configs_as_param_space() -> None:
    """``Tuner(param_space=config)`` calls ``to_dict()`` on configs of Tune's private ``_Config``
    ABC (that is how RLlib's AlgorithmConfig gets in); registering ours as a virtual subclass
    lets a fluent config in the same way. Where Ray moved that class, pass ``config.to_dict()``."""
    try:
        from ray.tune.tune import _Config
    except ImportError:
        return
    _Config.register(AlgorithmConfig)


_accept_configs_as_param_space()
register_trainables()
