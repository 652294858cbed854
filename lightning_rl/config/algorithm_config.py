"""RLlib-style fluent configuration: ``PPOConfig().environment(...).env_runners(...).build_algo()``.

Every setting lands either in the algorithm's ``__init__`` kwargs (checked against its
signature, so a typo is one clear error listing the valid names) or in the Lightning
``Trainer``'s kwargs (evaluation cadence, learners/devices, loggers, callbacks). Nothing here
trains: :meth:`AlgorithmConfig.build_algo` hands both to a :class:`~lightning_rl.TrainingRun`.
"""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl

from lightning_rl.config.framework_options import apply_log_level, check_framework_options, resolve_log_level
from lightning_rl.config.rllib_defaults import DEFAULTS_CHOICES, rllib_defaults
from lightning_rl.data.evaluation import resolve_evaluation_function
from lightning_rl.env_runners.evaluation_request import EVALUATION_DURATION_UNITS
from lightning_rl.env_runners.rllib_callbacks import resolve_callbacks
from lightning_rl.errors import ConfigError, UnknownNameError, unknown_name_message
from lightning_rl.ray_learners import LEARNER_PLACEMENTS, RayTrainRun
from lightning_rl.training_run import TrainingRun

if TYPE_CHECKING:  # type hints only: the builder is generic over algorithm classes
    from lightning_rl.algorithms.base import Algorithm


class _NotProvided:
    """Marks an argument the caller did not pass (``None`` can be a meaningful value)."""

    def __repr__(self) -> str:
        return "NotProvided"


NotProvided: Any = _NotProvided()

# RLlib spellings that map onto our argument names.
ALIASES = {
    "train_batch_size_per_learner": "train_batch_size",
    "lambda": "lambda_",
    "num_sgd_iter": "num_epochs",
    "sgd_minibatch_size": "minibatch_size",
    "num_rollout_workers": "num_env_runners",
    "num_envs_per_worker": "num_envs_per_env_runner",
    "num_workers": "num_env_runners",
    "evaluation_num_workers": "evaluation_num_env_runners",
}


def is_search_space(value: Any) -> bool:
    """A Ray Tune search space (``tune.grid_search``, ``tune.uniform`` ...) in place of a value.

    A config used as a Tuner's ``param_space`` holds these until Tune resolves them per trial,
    so the checks made while configuring let them through; the algorithm checks the resolved
    value when the trial builds it.
    """
    if isinstance(value, dict):
        return set(value) == {"grid_search"}
    return type(value).__module__.startswith("ray.tune.search")


def algorithm_parameters(algo_class: type) -> dict[str, inspect.Parameter]:
    """All keyword parameters an algorithm accepts, following ``**kwargs`` up the MRO."""
    params: dict[str, inspect.Parameter] = {}
    for cls in algo_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        has_var_kw = False
        for name, param in inspect.signature(init).parameters.items():
            if name == "self" or param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                has_var_kw = True
                continue
            params.setdefault(name, param)
        if not has_var_kw:
            break
    return params


class AlgorithmConfig:
    """Fluent builder for one algorithm class; subclasses fix ``algo_class`` (``PPOConfig``).

    Each algorithm package makes its public builder with :meth:`for_algorithm` (``PPOConfig =
    AlgorithmConfig.for_algorithm(PPO)``), since every setting comes from the algorithm's
    ``__init__`` signature: a hand-written subclass is only needed to add behaviour.
    """

    algo_class: type[Algorithm] | None = None

    @classmethod
    def for_algorithm(cls, algo_class: type[Algorithm], name: str | None = None) -> type[AlgorithmConfig]:
        """The fluent config class of ``algo_class``: ``<Algo>Config``, defined (for pickling and
        documentation) in the algorithm's package, e.g. ``lightning_rl.algorithms.ppo.PPOConfig``."""
        name = name or f"{algo_class.__name__}Config"
        package = algo_class.__module__.rpartition(".")[0] or algo_class.__module__
        doc = (
            f"Fluent builder for :class:`{package}.{algo_class.__name__}`: "
            f"``{name}().environment(...).training(...).build_algo()``."
        )
        return type(name, (cls,), {"algo_class": algo_class, "__module__": package, "__doc__": doc})

    def __init__(self, algo_class: type[Algorithm] | None = None, *, defaults: str = "rllib") -> None:
        """``defaults="rllib"`` (the default): start from RLlib's values where the algorithm's own
        differ (:mod:`lightning_rl.config.rllib_defaults`), so ported RLlib code learns as it did;
        ``"native"``: start from the algorithm's own tuned defaults, as ``PPO(...)`` and the CLI."""
        if algo_class is not None:
            self.algo_class = algo_class
        if self.algo_class is None:
            raise ConfigError(
                "AlgorithmConfig needs an algorithm class, e.g. AlgorithmConfig(PPO) or PPOConfig()."
            )
        if defaults not in DEFAULTS_CHOICES:
            raise ConfigError(f"defaults must be one of {list(DEFAULTS_CHOICES)}, got {defaults!r}.")
        self.defaults = defaults
        self.algo_kwargs: dict[str, Any] = {}
        if defaults == "rllib":
            accepted = set(algorithm_parameters(self.algo_class))
            self.algo_kwargs.update(rllib_defaults(self.algo_class, accepted))
        self.trainer_kwargs: dict[str, Any] = {}
        self.evaluation_interval: int | None = None
        self.num_learners: int = 0
        self.num_gpus_per_learner: float = 0
        # "ray": learners are Ray Train workers on the cluster (lightning_rl.ray_learners).
        self.learner_placement: str = "local"
        self.ray_learner_settings: dict[str, Any] = {}
        self.log_level: int | None = None

    # -- plumbing ----------------------------------------------------------------------------
    def _set(self, section: str, **settings: Any) -> AlgorithmConfig:
        params = algorithm_parameters(self.algo_class)
        for key, value in settings.items():
            if value is NotProvided:
                continue
            key = ALIASES.get(key, key)
            if key not in params:
                raise UnknownNameError(
                    unknown_name_message(f"{section}() setting for {self.algo_class.__name__}", key, params)
                )
            if key == "model_config":
                value = self._model_config(value)
            self.algo_kwargs[key] = value
        return self

    def _model_config(self, value: Any) -> Any:
        """A dict goes on top of RLlib's model defaults, as RLlib fills a partial model config
        from its ``DefaultModelConfig``; a :class:`~lightning_rl.DefaultModelConfig` object is
        complete already (its unset fields hold lightning-rl's defaults) and is taken as is."""
        if self.defaults != "rllib" or not (value is None or isinstance(value, dict)):
            return value
        base = rllib_defaults(self.algo_class, {"model_config"}).get("model_config", {})
        return {**base, **(value or {})}

    def __getattr__(self, name: str) -> Any:
        # config.lr, config.num_env_runners ...: the set value, else the algorithm's default.
        if name.startswith("_") or name in {"algo_class", "algo_kwargs", "trainer_kwargs", "defaults"}:
            raise AttributeError(name)
        name = ALIASES.get(name, name)
        if name in self.algo_kwargs:
            return self.algo_kwargs[name]
        params = algorithm_parameters(self.algo_class)
        if name in params and params[name].default is not inspect.Parameter.empty:
            return params[name].default
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def copy(self) -> AlgorithmConfig:
        return copy.deepcopy(self)

    @staticmethod
    def overrides(**kwargs: Any) -> dict[str, Any]:
        """RLlib's ``AlgorithmConfig.overrides(...)``: the keyword settings as a dict, e.g. for
        ``evaluation(evaluation_config=AlgorithmConfig.overrides(explore=False))``."""
        return dict(kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The algorithm kwargs and trainer kwargs this config will build with."""
        return {
            "algorithm": self.algo_class.__name__,
            **copy.copy(self.algo_kwargs),
            "evaluation_interval": self.evaluation_interval,
            "num_learners": self.num_learners,
            "num_gpus_per_learner": self.num_gpus_per_learner,
            **self._ray_learner_dict(),
            "trainer": dict(self.trainer_kwargs),
        }

    def _ray_learner_dict(self) -> dict[str, Any]:
        if self.learner_placement == "local" and not self.ray_learner_settings:
            return {}  # unchanged for configs that never mention Ray learners
        return {"learner_placement": self.learner_placement, **copy.deepcopy(self.ray_learner_settings)}

    def update_from_dict(self, settings: dict[str, Any]) -> AlgorithmConfig:
        for key, value in settings.items():
            if key == "evaluation_interval":
                self.evaluation_interval = value
            elif key == "trainer":
                self.trainer_kwargs.update(value)
            elif key == "num_learners":
                self.num_learners = value
            elif key == "num_gpus_per_learner":
                self.num_gpus_per_learner = value
            elif key in ("learner_placement", "custom_resources_per_learner", "storage_path"):
                self.learners(**{key: value})
            elif key != "algorithm":
                self._set("update_from_dict", **{key: value})
        return self

    # -- RLlib's sections --------------------------------------------------------------------
    def environment(
        self,
        env: Any = NotProvided,
        *,
        env_config: dict | None = NotProvided,
        normalize_actions: bool = NotProvided,
        clip_actions: bool = NotProvided,
        **kwargs: Any,
    ) -> AlgorithmConfig:
        return self._set(
            "environment",
            env=env,
            env_config=env_config,
            normalize_actions=normalize_actions,
            clip_actions=clip_actions,
            **kwargs,
        )

    def env_runners(
        self,
        *,
        num_env_runners: int = NotProvided,
        num_envs_per_env_runner: int = NotProvided,
        num_cpus_per_env_runner: float = NotProvided,
        num_gpus_per_env_runner: float = NotProvided,
        custom_resources_per_env_runner: dict | None = NotProvided,
        rollout_fragment_length: int | str = NotProvided,
        env_to_module_connector: Any = NotProvided,
        module_to_env_connector: Any = NotProvided,
        sample_timeout_s: float | None = NotProvided,
        **kwargs: Any,
    ) -> AlgorithmConfig:
        """Runners and where they run (RLlib's names; also ``env_runner_scheduling_strategy``,
        ``env_runner_label_selector``, ``min_healthy_env_runners``, ``address``,
        ``ray_init_kwargs``, ``ray_resources_timeout_s``: see the algorithm's docstring)."""
        return self._set(
            "env_runners",
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            num_cpus_per_env_runner=num_cpus_per_env_runner,
            num_gpus_per_env_runner=num_gpus_per_env_runner,
            custom_resources_per_env_runner=custom_resources_per_env_runner,
            rollout_fragment_length=rollout_fragment_length,
            env_to_module_connector=env_to_module_connector,
            module_to_env_connector=module_to_env_connector,
            sample_timeout_s=sample_timeout_s,
            **kwargs,
        )

    def multi_agent(
        self,
        *,
        policies: Any = NotProvided,
        policy_mapping_fn: Any = NotProvided,
        policies_to_train: list[str] | None = NotProvided,
        **kwargs: Any,
    ) -> AlgorithmConfig:
        """Policies, the agent -> policy mapping, and which policies learn (RLlib's names)."""
        return self._set(
            "multi_agent",
            policies=policies,
            policy_mapping_fn=policy_mapping_fn,
            policies_to_train=policies_to_train,
            **kwargs,
        )

    def training(self, **kwargs: Any) -> AlgorithmConfig:
        """Algorithm hyperparameters (``lr``, ``gamma``, ``train_batch_size``, ...)."""
        return self._set("training", **kwargs)

    def evaluation(
        self,
        *,
        evaluation_interval: int | None = NotProvided,
        evaluation_duration: int = NotProvided,
        evaluation_duration_unit: str = NotProvided,
        evaluation_sample_timeout_s: float | None = NotProvided,
        evaluation_parallel_to_training: bool = NotProvided,
        evaluation_num_env_runners: int = NotProvided,
        evaluation_config: dict | None = NotProvided,
        custom_evaluation_function: Any = NotProvided,
        **kwargs: Any,
    ) -> AlgorithmConfig:
        """RLlib's evaluation settings. As in RLlib, periodic evaluation runs only with an
        ``evaluation_interval``; ``algo.evaluate()`` works without one. ``evaluation_config``
        takes ``explore`` (default: RLlib's, evaluation explores as training does),
        ``env_config``, ``num_envs_per_env_runner`` and ``metrics_num_episodes_for_smoothing``
        (accepted: evaluation metrics are always over one evaluation's episodes)."""
        if evaluation_interval is not NotProvided:
            if (
                evaluation_interval is not None
                and not is_search_space(evaluation_interval)
                and (not isinstance(evaluation_interval, int) or evaluation_interval < 0)
            ):
                raise ConfigError(
                    f"evaluation_interval must be a non-negative integer or None, got {evaluation_interval!r}"
                )
            self.evaluation_interval = evaluation_interval or None
        if evaluation_duration_unit not in (NotProvided, *EVALUATION_DURATION_UNITS):
            raise ConfigError(
                f"evaluation_duration_unit must be one of {list(EVALUATION_DURATION_UNITS)}, "
                f"got {evaluation_duration_unit!r}."
            )
        if evaluation_duration == "auto":
            raise ConfigError(
                "evaluation_duration='auto' is not supported: give a number of episodes or, with "
                "evaluation_duration_unit='timesteps', of env steps."
            )
        explore = envs = NotProvided
        if evaluation_config not in (NotProvided, None):
            # metrics_num_episodes_for_smoothing: evaluation metrics here are over each
            # evaluation's own episodes (no window across evaluations): nothing to change.
            known = {"explore", "env_config", "num_envs_per_env_runner", "metrics_num_episodes_for_smoothing"}
            unknown = set(evaluation_config) - known
            if unknown:
                raise ConfigError(f"evaluation_config supports {sorted(known)}, got {sorted(unknown)}")
            explore = evaluation_config.get("explore", NotProvided)
            envs = evaluation_config.get("num_envs_per_env_runner", NotProvided)
            if "env_config" in evaluation_config:
                self._set("evaluation", evaluation_env_config=evaluation_config["env_config"])
        if custom_evaluation_function is not NotProvided:
            resolve_evaluation_function(custom_evaluation_function, " in config.evaluation()")
        return self._set(
            "evaluation",
            evaluation_duration=evaluation_duration,
            evaluation_duration_unit=evaluation_duration_unit,
            evaluation_sample_timeout_s=evaluation_sample_timeout_s,
            evaluation_parallel_to_training=evaluation_parallel_to_training,
            evaluation_num_env_runners=evaluation_num_env_runners,
            evaluation_explore=explore,
            evaluation_num_envs_per_env_runner=envs,
            custom_evaluation_function=custom_evaluation_function,
            **kwargs,
        )

    def offline_data(
        self,
        *,
        input_: Any = NotProvided,
        input_read_method: str = NotProvided,
        output: str | None = NotProvided,
        output_config: dict | None = NotProvided,
        output_max_rows_per_file: int = NotProvided,
        output_max_file_size: int = NotProvided,
        dataset_num_iters_per_learner: int = NotProvided,
        **kwargs: Any,
    ) -> AlgorithmConfig:
        """Offline data (RLlib's names): ``input_`` for BC/MARWIL/CQL, ``output`` to record episodes.

        ``output_max_rows_per_file``/``output_max_file_size`` are RLlib's spellings of the
        ``output_config`` keys ``max_rows_per_file``/``max_file_size``.
        """
        limits = {
            key: value
            for key, value in (
                ("max_rows_per_file", output_max_rows_per_file),
                ("max_file_size", output_max_file_size),
            )
            if value is not NotProvided
        }
        if limits:
            if output_config is NotProvided:
                output_config = self.algo_kwargs.get("output_config")
            output_config = {**(output_config or {}), **limits}
        return self._set(
            "offline_data",
            input_=input_,
            input_read_method=input_read_method,
            output=output,
            output_config=output_config,
            dataset_num_iters_per_learner=dataset_num_iters_per_learner,
            **kwargs,
        )

    def rl_module(self, *, model_config: dict | Any = NotProvided, **kwargs: Any) -> AlgorithmConfig:
        return self._set("rl_module", model_config=model_config, **kwargs)

    def debugging(
        self, *, seed: int | None = NotProvided, log_level: str = NotProvided, **kwargs: Any
    ) -> AlgorithmConfig:
        """``log_level`` ("DEBUG", "INFO", "WARN", ...) sets the ``lightning_rl`` logger when the
        algorithm is built (:mod:`lightning_rl.config.framework_options`)."""
        if log_level is not NotProvided:
            self.log_level = resolve_log_level(log_level)
        return self._set("debugging", seed=seed, **kwargs)

    def reporting(
        self, *, metrics_num_episodes_for_smoothing: int = NotProvided, **kwargs: Any
    ) -> AlgorithmConfig:
        return self._set(
            "reporting", metrics_num_episodes_for_smoothing=metrics_num_episodes_for_smoothing, **kwargs
        )

    def fault_tolerance(
        self,
        *,
        restart_failed_env_runners: bool = NotProvided,
        max_num_env_runner_restarts: int = NotProvided,
        sample_timeout_s: float | None = NotProvided,
        ignore_env_runner_failures: bool = NotProvided,
        max_consecutive_env_runner_failures: int = NotProvided,
        **kwargs: Any,
    ) -> AlgorithmConfig:
        return self._set(
            "fault_tolerance",
            restart_failed_env_runners=restart_failed_env_runners,
            max_num_env_runner_restarts=max_num_env_runner_restarts,
            sample_timeout_s=sample_timeout_s,
            ignore_env_runner_failures=ignore_env_runner_failures,
            max_consecutive_env_runner_failures=max_consecutive_env_runner_failures,
            **kwargs,
        )

    def resources(self, *, placement_strategy: str | None = NotProvided, **kwargs: Any) -> AlgorithmConfig:
        """RLlib's ``resources(placement_strategy=...)``: the runners' Ray placement group."""
        return self._set("resources", placement_strategy=placement_strategy, **kwargs)

    def learners(
        self,
        *,
        num_learners: int = NotProvided,
        num_gpus_per_learner: float = NotProvided,
        num_cpus_per_learner: int | None = NotProvided,
        custom_resources_per_learner: dict[str, float] | None = NotProvided,
        learner_placement: str = NotProvided,
        storage_path: str | None = NotProvided,
    ) -> AlgorithmConfig:
        """Learners map onto Lightning: N > 1 learners is ``Trainer(strategy="ddp", devices=N)``.

        ``learner_placement="ray"`` makes each learner a Ray Train worker placed on the cluster
        by its resources (``num_cpus_per_learner``, ``num_gpus_per_learner``,
        ``custom_resources_per_learner``), checkpointing to ``storage_path`` (a directory every
        node reaches, or a URI); ``build_algo()`` then returns a
        :class:`~lightning_rl.ray_learners.RayTrainRun` (docs/cluster.md).
        """
        self._set("learners", num_cpus_per_learner=num_cpus_per_learner)
        if learner_placement is not NotProvided:
            if learner_placement not in LEARNER_PLACEMENTS:
                raise ConfigError(
                    f"learner_placement {learner_placement!r} is not one of {list(LEARNER_PLACEMENTS)}."
                )
            self.learner_placement = learner_placement
        for key, value in (
            ("custom_resources_per_learner", custom_resources_per_learner),
            ("storage_path", storage_path),
        ):
            if value is not NotProvided:
                self.ray_learner_settings[key] = value
        if num_learners is not NotProvided:
            if not is_search_space(num_learners) and (not isinstance(num_learners, int) or num_learners < 0):
                raise ConfigError(f"num_learners must be an integer >= 0, got {num_learners!r}")
            self.num_learners = num_learners
        if num_gpus_per_learner is not NotProvided:
            self.num_gpus_per_learner = num_gpus_per_learner
        return self

    def framework(self, framework: str = "torch", **options: Any) -> AlgorithmConfig:
        """PyTorch only; RLlib's other keywords are checked, never dropped without a word
        (:func:`~lightning_rl.config.framework_options.check_framework_options`)."""
        if framework != "torch":
            raise ConfigError(f"lightning-rl runs on PyTorch only; framework={framework!r} is not available.")
        check_framework_options(options)
        return self

    def api_stack(self, **_: Any) -> AlgorithmConfig:
        """Accepted for RLlib compatibility; there is only one stack here."""
        return self

    def callbacks(
        self,
        callbacks_class: Any = NotProvided,
        *,
        on_episode_start: Any = NotProvided,
        on_episode_step: Any = NotProvided,
        on_episode_end: Any = NotProvided,
        on_sample_end: Any = NotProvided,
        on_train_result: Any = NotProvided,
        on_evaluate_start: Any = NotProvided,
        on_evaluate_end: Any = NotProvided,
        on_checkpoint_loaded: Any = NotProvided,
    ) -> AlgorithmConfig:
        """RLlib's callbacks: an :class:`~lightning_rl.RLlibCallback` subclass (or its import path)
        and/or per-hook callables (RLlib 2.4x+), each a callable, an import path or a list.

        Checked here (one :class:`ConfigError` naming a bad class or hook); stored as the
        algorithm's ``callbacks`` setting, so YAML and checkpoints carry their import paths.
        Lightning ``Callback`` objects still go to ``.trainer(callbacks=[...])``.
        """
        given = {
            "callbacks_class": callbacks_class,
            "on_episode_start": on_episode_start,
            "on_episode_step": on_episode_step,
            "on_episode_end": on_episode_end,
            "on_sample_end": on_sample_end,
            "on_train_result": on_train_result,
            "on_evaluate_start": on_evaluate_start,
            "on_evaluate_end": on_evaluate_end,
            "on_checkpoint_loaded": on_checkpoint_loaded,
        }
        current = self.algo_kwargs.get("callbacks")
        if current is None:
            settings: dict[str, Any] = {}
        elif isinstance(current, dict):
            settings = dict(current)
        else:
            settings = {"callbacks_class": current}
        settings.update({k: v for k, v in given.items() if v is not NotProvided})
        resolve_callbacks(settings, " in config.callbacks()")  # check now, not at build time
        return self._set("callbacks", callbacks=settings)

    def trainer(self, **trainer_kwargs: Any) -> AlgorithmConfig:
        """Extra ``lightning.Trainer`` kwargs (logger, callbacks, default_root_dir, precision ...)."""
        self.trainer_kwargs.update(trainer_kwargs)
        return self

    # -- building ----------------------------------------------------------------------------
    def build_trainer_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.num_learners > 1:
            kwargs.update(strategy="ddp", devices=self.num_learners)
            kwargs["accelerator"] = "gpu" if self.num_gpus_per_learner else "cpu"
        elif self.num_gpus_per_learner:
            kwargs.update(accelerator="gpu", devices=1)
        if self.evaluation_interval:
            kwargs["check_val_every_n_epoch"] = self.evaluation_interval
        else:
            kwargs["limit_val_batches"] = 0
        kwargs.update(self.trainer_kwargs)
        return kwargs

    def build_algorithm(self) -> Algorithm:
        """Just the LightningModule, for a plain ``Trainer`` of your own.

        With ``debugging(seed=...)`` the global RNGs are seeded first (RLlib seeds everything),
        so network initialisation is reproducible too, not only the env copies.
        """
        apply_log_level(self.log_level)
        seed = self.algo_kwargs.get("seed")
        if seed is not None:
            pl.seed_everything(int(seed), verbose=False)
        return self.algo_class(**self.algo_kwargs)

    def build_algo(self) -> TrainingRun | RayTrainRun:
        """The algorithm, its DataModule and a Trainer behind RLlib's ``train()`` API."""
        if self.learner_placement == "ray":
            apply_log_level(self.log_level)
            return RayTrainRun.from_config(self)
        return TrainingRun(self.build_algorithm(), self.build_trainer_kwargs())

    build = build_algo
