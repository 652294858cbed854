"""RLlib's ``Algorithm`` API (train/evaluate/save/restore/stop) on top of a Lightning Trainer.

``config.build_algo()`` returns a :class:`TrainingRun`. Each :meth:`TrainingRun.train` call is
one more Lightning epoch of the same Trainer (``fit`` re-entered with ``max_epochs + 1``, which
continues its counters; optimizers are cached by the algorithm), so a loop of ``train()``
calls trains exactly like one ``trainer.fit`` with ``max_epochs`` iterations.

The run drives *any* algorithm through what a LightningModule and the registry offer
(``configure_datamodule``, ``get_policy``, the checkpoint's algorithm name): it never names an
algorithm class, so it sits below the algorithm packages and their fluent configs can build
one (``PPOConfig().build_algo()``) without an import cycle (docs/architecture.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger

from lightning_rl import checkpoint_format as ckpt
from lightning_rl.checkpoint_components import restore_modules
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.data.evaluation import validates_this_epoch
from lightning_rl.env_runners.metrics_logger import MetricsLogger
from lightning_rl.errors import CheckpointError, ConfigError
from lightning_rl.policy import MissingRecipeError, Policy
from lightning_rl.progress import RLProgressBar
from lightning_rl.ray_cluster import shutdown_ray_if_started_here
from lightning_rl.registry import get_algorithm_class
from lightning_rl.trainer_defaults import add_resilience_defaults

if TYPE_CHECKING:  # type hints only: the run is generic over algorithms
    from lightning_rl.algorithms.base import Algorithm

_MODULE_STATE_PATH = "learner_group/learner/rl_module"
_ADD_MODULE_FLAGS = {"add_to_learners", "add_to_env_runners", "add_to_eval_env_runners"}
_REMOVE_MODULE_FLAGS = {"remove_from_learners", "remove_from_env_runners", "remove_from_eval_env_runners"}
_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def nest_metrics(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a/b/c": 1}`` -> ``{"a": {"b": {"c": 1}}}`` with tensors turned into floats."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        value = float(value.item()) if hasattr(value, "item") else value
        node = nested
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def completed_iterations(checkpoint: dict[str, Any]) -> int:
    """The training iterations a checkpoint holds the results of.

    A checkpoint written at an iteration's end by ``ModelCheckpoint(save_on_train_epoch_end=True)``
    (the shipped configs' callback) is saved before Lightning counts that epoch as completed:
    its ``epoch`` is one lower than the iterations trained, while the fit loop's ``processed``
    count already includes it, and Lightning resumes after it. Counting ``epoch`` alone made a
    restored run report one iteration fewer, and its first ``train()`` ended at once without
    training (the loop's limit was already reached).
    """
    epoch = checkpoint.get("epoch", 0)
    try:
        processed = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    except (KeyError, TypeError):
        processed = 0
    counts = [c for c in (epoch, processed) if isinstance(c, int) and not isinstance(c, bool) and c >= 0]
    return max(counts, default=0)


class TrainingRun:
    """An algorithm + its DataModule + a Trainer, driven one iteration at a time."""

    def __init__(self, algorithm: Algorithm, trainer_kwargs: dict[str, Any] | None = None) -> None:
        self.algorithm = algorithm
        self.datamodule = algorithm.configure_datamodule()
        self.datamodule.persistent = True  # actors live across train() calls until stop()
        # A custom_evaluation_function gets this run as its algorithm, as RLlib passes its Algorithm.
        self.datamodule.evaluation_algorithm = self
        kwargs = {
            "max_epochs": 0,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "log_every_n_steps": 1,
            # evaluate() may run before or between train() calls: tensors made under
            # inference mode could not be updated by the next train() (no_grad suffices).
            "inference_mode": False,
        }
        kwargs.update(trainer_kwargs or {})
        if "logger" not in kwargs:
            kwargs["logger"] = CSVLogger(
                save_dir=kwargs.get("default_root_dir") or "lightning_logs", name="training_run"
            )
        if kwargs.get("enable_progress_bar"):
            _add_rl_progress_bar(kwargs)
        callbacks = kwargs.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
        callbacks.append(EvaluationHooks(self))  # RLlib's on_evaluate_start/end, every evaluation
        kwargs["callbacks"], kwargs["plugins"] = add_resilience_defaults(
            callbacks, callbacks, kwargs.get("plugins")
        )
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.trainer = pl.Trainer(**kwargs)
        self._resume_from: str | None = None
        self._resume_iteration: int | None = None
        self._stopped = False
        self._start_time = time.perf_counter()
        # RLlib callbacks' driver hooks (the runners build their own copy for episode hooks).
        settings = getattr(algorithm, "rllib_callbacks", None)
        self.callbacks = settings.build() if settings is not None else None
        # RLlib's ``algorithm.metrics``: what driver hooks and a custom_evaluation_function log;
        # reported into each train() result and Lightning's loggers under the user's keys.
        self.metrics = MetricsLogger()
        self._last_evaluation: dict[str, Any] | None = None

    # -- RLlib API ---------------------------------------------------------------------------
    @property
    def metrics_logger(self) -> MetricsLogger:
        """``metrics``, the name RLlib's hooks give it (``metrics_logger=algorithm.metrics``)."""
        return self.metrics

    @property
    def iteration(self) -> int:
        """Completed training iterations (Lightning epochs), including restored ones."""
        if self._resume_iteration is not None:
            return self._resume_iteration
        return int(self.trainer.current_epoch)

    def train(self) -> dict[str, Any]:
        """Run one training iteration (sample, learn, maybe evaluate) and return its results."""
        return self.fit(num_iterations=1)

    def fit(self, num_iterations: int) -> dict[str, Any]:
        """Run ``num_iterations`` iterations in one Lightning ``fit`` and return the last results."""
        self._check_running()
        start = time.perf_counter()
        first = self.iteration
        self.trainer.fit_loop.max_epochs = first + num_iterations
        self.trainer.should_stop = False
        self.trainer.fit(
            self.algorithm, datamodule=self.datamodule, ckpt_path=self._resume_from, weights_only=True
        )
        self._resume_from = None
        self._resume_iteration = None
        result = self._results(time.perf_counter() - start, evaluated_since=first)
        self._publish(result)  # what hooks and a custom evaluation logged during the iteration
        self._driver_hook("on_train_result", result=result)
        self._publish(result)
        return result

    def evaluate(self) -> dict[str, Any]:
        """Evaluate now; RLlib's ``algo.evaluate()``: ``evaluation_duration`` episodes (or env
        steps), cut at ``evaluation_sample_timeout_s``, or the ``custom_evaluation_function``.

        As in RLlib, this evaluates even when no ``evaluation_interval`` is configured (the
        evaluation settings' defaults apply), and training may continue afterwards.
        """
        self._check_running()
        limit = self.trainer.limit_val_batches
        self.trainer.limit_val_batches = 1.0  # evaluation_interval=None turns periodic runs off only
        self._last_evaluation = None
        try:  # on_evaluate_start/end: called by EvaluationHooks around the validation
            results = self.trainer.validate(self.algorithm, datamodule=self.datamodule, verbose=False)
        finally:
            self.trainer.limit_val_batches = limit
        evaluation = self._last_evaluation
        if evaluation is None:
            evaluation = evaluation_results(results[0] if results else {})
        self._publish(evaluation)  # what the hooks logged, into the returned results
        return evaluation

    def save(self, path: str | Path | None = None) -> str:
        """Write a checkpoint (a file; a directory gets ``algorithm.ckpt`` inside) and return its path."""
        self._check_running()
        if path is None:
            root = Path(self.trainer.default_root_dir)
            path = root / "checkpoints" / f"iteration_{self.iteration:06d}.ckpt"
        path = Path(path)
        if path.suffix != ".ckpt":
            path = path / "algorithm.ckpt"
        if self.trainer.strategy.lightning_module is None:
            raise ConfigError(
                "Call train() at least once before save(): there is nothing trained to save yet."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.trainer.save_checkpoint(str(path), weights_only=False)  # all of it, said out loud
        return str(path)

    save_to_path = save

    def restore(self, path: str | Path) -> None:
        """Load weights now; the next ``train()`` also restores optimizers, counters and loops."""
        path = ckpt.resolve_checkpoint_path(path)
        checkpoint = ckpt.load_checkpoint(path)
        _load_into(self.algorithm, checkpoint)
        key = type(self.datamodule).__qualname__
        if key in checkpoint:
            self.datamodule.load_state_dict(checkpoint[key])
        self._resume_from = str(path)
        self._resume_iteration = completed_iterations(checkpoint)
        self._driver_hook("on_checkpoint_loaded")  # its metrics go into the next train() result

    def restore_from_path(self, path: str | Path, *, component: str | None = None) -> None:
        """RLlib's ``restore_from_path``: the whole run (:meth:`restore`), or with ``component``
        (``"learner_group/learner/rl_module[/<module_id>]"``) only those module weights, the rest
        left as it is (:mod:`lightning_rl.checkpoint_components`); runners get them at the next
        ``train()``/``evaluate()``, which broadcast the current weights."""
        if component is None:
            self.restore(path)
        else:
            restore_modules(self.algorithm, path, component)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        trainer_kwargs: dict[str, Any] | None = None,
        *,
        trusted_classes: ckpt.TrustedClasses = (),
        **overrides: Any,
    ) -> TrainingRun:
        """Rebuild the algorithm from a checkpoint's hyperparameters and restore it.

        ``overrides`` replace hyperparameters, e.g. ``env=MyEnv`` or a ``policy_mapping_fn``
        lambda, which checkpoints cannot hold. Names in the file resolve only by the checkpoint
        rules (``docs/security.md``); ``trusted_classes`` allows more, and names given in
        ``overrides`` are the caller's own and allowed.
        """
        path = ckpt.resolve_checkpoint_path(path)
        trusted = [*ckpt.trusted_paths(trusted_classes), *_strings_in(overrides)]
        with ckpt.name_guard(f"Checkpoint {str(path)!r}", trusted):
            checkpoint = ckpt.load_checkpoint(path)
            name = checkpoint[ckpt.KEY].get("algorithm")
            algo_class = get_algorithm_class(name)
            algorithm = algo_class(**{**ckpt.algorithm_init_kwargs(checkpoint), **overrides})
            run = cls(algorithm, trainer_kwargs)
            run.restore(path)
        return run

    def stop(self) -> None:
        """Release every EnvRunner actor (and Ray, if this process started it)."""
        if self._stopped:
            return
        self.datamodule.close()
        shutdown_ray_if_started_here()
        self._stopped = True

    # -- access ------------------------------------------------------------------------------
    def get_module(self, module_id: str = DEFAULT_POLICY_ID) -> Any:
        """RLlib's ``algo.get_module(module_id)``: the learner's module of that policy (a user's
        RLModule, else the default networks), with ``get_state()``/``set_state()``."""
        return self.algorithm.get_module(module_id)

    def add_module(
        self,
        module_id: str,
        module_spec: Any,
        *,
        new_agent_to_module_mapping_fn: Any = None,
        new_should_module_be_updated: Any = None,
        **kwargs: Any,
    ) -> Any:
        """RLlib's ``algo.add_module``: a new league member built like ``module_spec`` (e.g.
        ``RLModuleSpec.from_module(algo.get_module("main"))``), freshly initialised, frozen unless
        ``new_should_module_be_updated`` says otherwise; the runners (in-process or Ray) get it
        and the new mapping before their next sample. See ``Algorithm.add_module``."""
        unknown = set(kwargs) - _ADD_MODULE_FLAGS
        if unknown or not all(kwargs.values()):
            raise ConfigError(
                f"add_module settings {sorted(kwargs)} are not supported here: the module always goes to "
                "the learner, the runners and the evaluation runners "
                f"(accepted: {sorted(_ADD_MODULE_FLAGS)}=True)."
            )
        return self.algorithm.add_module(
            module_id,
            module_spec,
            new_agent_to_module_mapping_fn=new_agent_to_module_mapping_fn,
            new_should_module_be_updated=new_should_module_be_updated,
        )

    def remove_module(
        self, module_id: str, *, new_agent_to_module_mapping_fn: Any = None, **kwargs: Any
    ) -> None:
        """RLlib's ``algo.remove_module`` (modules added during the run; see ``Algorithm.remove_module``)."""
        unknown = set(kwargs) - _REMOVE_MODULE_FLAGS
        if unknown or not all(kwargs.values()):
            raise ConfigError(
                f"remove_module settings {sorted(kwargs)} are not supported here (accepted: "
                f"{sorted(_REMOVE_MODULE_FLAGS)}=True)."
            )
        self.algorithm.remove_module(module_id, new_agent_to_module_mapping_fn=new_agent_to_module_mapping_fn)

    def get_state(self, components: Any = None) -> dict[str, Any]:
        """RLlib's ``algo.get_state()``, the part with module weights:
        ``{"learner_group": {"learner": {"rl_module": {module_id: state}}}}`` (tensors only)."""
        if components is not None and components not in (_MODULE_STATE_PATH, [_MODULE_STATE_PATH]):
            raise ConfigError(f"get_state components {components!r}: only {_MODULE_STATE_PATH!r} is offered.")
        states = {pid: self.algorithm.get_module(pid).get_state() for pid in self.algorithm.policy_ids}
        return {"learner_group": {"learner": {"rl_module": states}}}

    def set_state(self, state: dict[str, Any]) -> None:
        """RLlib's ``algo.set_state`` for module weights:
        ``{"learner_group": {"learner": {"rl_module": {module_id: module.get_state()}}}}`` loads
        each given module's tensors into the learner; the runners get them with the next sample.
        Any other key is an error naming the path that is offered."""
        node: Any = state
        for depth, key in enumerate(_MODULE_STATE_PATH.split("/")):
            if not isinstance(node, dict) or set(node) != {key}:
                where = "/".join(_MODULE_STATE_PATH.split("/")[:depth]) or "the top level"
                found = sorted(node) if isinstance(node, dict) else type(node).__name__
                raise ConfigError(
                    f"set_state: at {where} expected only {key!r}, got {found}; this run's state offers "
                    f"{_MODULE_STATE_PATH!r} -> {{module_id: state}} "
                    f"(module ids {self.algorithm.policy_ids})."
                )
            node = node[key]
        self.algorithm.set_module_states(node)

    def get_policy(self, policy_id: str | None = None) -> Any:
        """RLlib's ``algo.get_policy()``: a :class:`~lightning_rl.Policy` snapshot with its connectors."""
        return self.algorithm.get_policy(policy_id)

    def _driver_hook(self, name: str, **kwargs: Any) -> None:
        """Call an RLlib driver hook (what it logs into ``metrics`` is reported by :meth:`_publish`)."""
        if self.callbacks is None or not self.callbacks.has(name):
            return
        self.callbacks.call(name, algorithm=self, metrics_logger=self.metrics, **kwargs)

    def _publish(self, into: dict[str, Any]) -> None:
        """Report what was logged into ``metrics`` since the last report: into ``into`` (a
        result dict) under the user's keys, and to Lightning's loggers as ``a/b`` keys at this
        run's env-step axis (the ``step`` of its other rows)."""
        logged = self.metrics.report()
        if not logged:
            return
        _merge_nested(into, logged)
        flat = _flatten(logged)
        step = int(self.datamodule.num_env_steps_sampled_lifetime)
        if self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.log_metrics(flat, step=step)
                logger.save()

    def _check_running(self) -> None:
        if self._stopped:
            raise ConfigError("This TrainingRun was stopped; build a new one with config.build_algo().")

    def _on_evaluate_start(self) -> None:
        self._driver_hook("on_evaluate_start")

    def _on_evaluate_end(self, metrics: dict[str, Any]) -> None:
        """RLlib's ``on_evaluate_end(evaluation_metrics=...)`` with this evaluation's results."""
        self._last_evaluation = evaluation_results(metrics)
        self._driver_hook("on_evaluate_end", evaluation_metrics=self._last_evaluation)

    def _results(self, seconds: float, evaluated_since: int) -> dict[str, Any]:
        metrics = dict(self.trainer.callback_metrics)
        evaluated = (
            self.algorithm.last_evaluation_epoch is not None
            and self.algorithm.last_evaluation_epoch >= evaluated_since
        )
        if not evaluated:
            metrics = {k: v for k, v in metrics.items() if not k.startswith("evaluation/")}
        result = nest_metrics(metrics)
        env_runners = result.setdefault("env_runners", {})
        lifetime = self.datamodule.num_env_steps_sampled_lifetime
        env_runners["num_env_steps_sampled_lifetime"] = lifetime
        result["num_env_steps_sampled_lifetime"] = lifetime
        learners = result.setdefault("learners", {})
        for policy_id in self.algorithm.policies_to_train:  # RLlib: one entry per trained module
            learners.setdefault(policy_id, {})
        if "evaluation" in result:
            result["evaluation"] = {"env_runners": dict(result["evaluation"]), **result["evaluation"]}
        result["training_iteration"] = self.iteration
        result["time_this_iter_s"] = seconds
        result["time_total_s"] = time.perf_counter() - self._start_time
        return result

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def evaluation_results(metrics: dict[str, Any]) -> dict[str, Any]:
    """``evaluation/...`` logged metrics -> RLlib's evaluation dict (the built-in metrics also
    under ``env_runners``, as RLlib nests them)."""
    evaluation = nest_metrics({k: v for k, v in metrics.items() if k.startswith("evaluation/")})
    evaluation = evaluation.get("evaluation", {})
    return {"env_runners": dict(evaluation), **evaluation}


class EvaluationHooks(pl.Callback):
    """RLlib's ``on_evaluate_start``/``on_evaluate_end`` around every evaluation of a
    :class:`TrainingRun`: the periodic ones inside ``train()`` (``evaluation_interval``) and
    ``evaluate()``, in-process or on Ray evaluation runners, on the global-zero rank only. With
    ``evaluation_parallel_to_training`` the start hook runs when the iteration starts, before
    the evaluation it starts (this callback runs before the algorithm's own)."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self._started = False

    def _active(self, trainer: pl.Trainer) -> bool:
        return trainer.is_global_zero and not trainer.sanity_checking

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        settings = self.run.datamodule.settings
        if (
            self._active(trainer)
            and settings.evaluation_parallel_to_training
            and settings.evaluation_num_env_runners > 0
            and validates_this_epoch(trainer)
        ):
            self._started = True
            self.run._on_evaluate_start()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active(trainer) and not self._started:
            self.run._on_evaluate_start()
        self._started = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active(trainer):
            self.run._on_evaluate_end(dict(trainer.callback_metrics))


def _merge_nested(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_nested(into[key], value)
        else:
            into[key] = value


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = float(value)
    return flat


def _add_rl_progress_bar(kwargs: dict[str, Any]) -> None:
    """With the bar on, it is the RL bar (iteration, env steps, return), unless one is given."""
    callbacks = kwargs.get("callbacks") or []
    callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    if not any(isinstance(c, ProgressBar) for c in callbacks):
        kwargs["callbacks"] = [*callbacks, RLProgressBar()]


def _strings_in(value: Any) -> list[str]:
    """Every string in nested ``value`` (the caller's own names, which a guard may resolve)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings_in(item)]
    return []


def _load_into(algorithm: Algorithm, checkpoint: dict[str, Any]) -> None:
    algorithm.on_load_checkpoint(checkpoint)
    missing, unexpected = algorithm.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"The checkpoint's weights do not fit this {type(algorithm).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (was it trained with another model_config or env?)."
        )


def _rebuild_algorithm(checkpoint: dict[str, Any]) -> Algorithm:
    """The algorithm of a checkpoint, rebuilt from its hyperparameters with its weights loaded."""
    name = checkpoint[ckpt.KEY].get("algorithm")
    if not name:
        raise CheckpointError("The checkpoint names no algorithm, so its policy cannot be rebuilt.")
    algorithm = get_algorithm_class(name)(**ckpt.algorithm_init_kwargs(checkpoint))
    _load_into(algorithm, checkpoint)
    return algorithm


def policy_from_checkpoint(
    path: str | Path,
    policy_id: str | None = None,
    *,
    seed: int | None = None,
    trusted_classes: ckpt.TrustedClasses = (),
) -> Policy:
    """:meth:`Policy.from_checkpoint`, and for checkpoints without a stored recipe (format 1, or a
    recipe with no plain-data form) the policy of the algorithm rebuilt from the hyperparameters
    (which creates the training env once)."""
    try:
        return Policy.from_checkpoint(path, policy_id, seed=seed, trusted_classes=trusted_classes)
    except MissingRecipeError:
        pass
    path = ckpt.resolve_checkpoint_path(path)
    with ckpt.name_guard(f"Checkpoint {str(path)!r}", trusted_classes):
        checkpoint = ckpt.load_checkpoint(path, trusted_classes=trusted_classes)  # checks every name
        return Policy.from_algorithm(_rebuild_algorithm(checkpoint), policy_id, seed=seed)
