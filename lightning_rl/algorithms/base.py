"""The base class of every algorithm: a LightningModule that is also the whole config.

Like RLlib's ``AlgorithmConfig``, an algorithm's ``__init__`` arguments are its complete,
flat configuration (env, runners, evaluation, model, training), so ``save_hyperparameters``,
LightningCLI (``--model.lr 1e-3``) and the fluent config all see the same names. What a
subclass adds is small: ``build_policy_module`` (one :class:`PolicyModule` per policy id, holding
the networks, what the EnvRunners run and the learner connector: GAE, n-step, V-trace ...) and
``training_step`` (combining the modules' losses).

This module is the Lightning glue only: construction, hooks, logging, optimizers. Each other
job has a module of its own here: ``policy_set`` (spaces, pipelines, mapping),
``algorithm_policies`` (the policy API), ``experience_source`` (what DataModules call),
``runner_specs``, ``settings_validation``, ``declared_settings`` (object-valued settings
resolved and stored as plain data), ``checkpoint_stamp``, ``non_finite``, ``logged_metrics``,
``optimizers``, ``process_settings`` (warning filters, torch threads), ``policy_transfer``.

Experience comes from a DataModule of the kind named by ``datamodule_class``, which sees the
algorithm only as an :class:`~lightning_rl.data.source.ExperienceSource`. Pass one to
``trainer.fit(algo, datamodule=...)`` or let the algorithm build its own: then it serves
``train_dataloader``/``val_dataloader`` itself and keeps that DataModule's state in its
checkpoints under the key Lightning would use, so both ways resume identically.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
from gymnasium import spaces
from torch import nn

from lightning_rl.algorithms import settings_validation as validation
from lightning_rl.algorithms.algorithm_policies import AlgorithmPolicies
from lightning_rl.algorithms.checkpoint_stamp import AlgorithmCheckpointHooks
from lightning_rl.algorithms.declared_settings import DeclaredSettings
from lightning_rl.algorithms.experience_source import ExperienceSourceMethods
from lightning_rl.algorithms.iteration_logging import log_iteration_metric
from lightning_rl.algorithms.logged_metrics import LearnerMetrics, evaluation_metrics
from lightning_rl.algorithms.non_finite import NonFiniteGuard, NonFiniteHooks
from lightning_rl.algorithms.optimizers import fast_adam
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.algorithms.policy_set import (
    PolicySet,
    build_learner_connectors,
    probe_env,
)
from lightning_rl.algorithms.process_settings import (
    LearnerThreads,
    silence_inapplicable_lightning_warnings,
    torch_threads,
)
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.data.evaluation import (
    ParallelEvaluation,
)
from lightning_rl.data.experience import ExperienceDataModule
from lightning_rl.data.on_policy import OnPolicyDataModule
from lightning_rl.envs.registration import EnvLike, env_name, resolve_env
from lightning_rl.modules.model_config import resolve_model_config
from lightning_rl.modules.rl_module import (
    check_rl_module_specs,
)
from lightning_rl.offline.config import flush_runner_group

silence_inapplicable_lightning_warnings()

__all__ = ["DEFAULT_POLICY_ID", "Algorithm"]


class Algorithm(
    AlgorithmPolicies,
    ExperienceSourceMethods,
    AlgorithmCheckpointHooks,
    NonFiniteHooks,
    pl.LightningModule,
    abc.ABC,
):
    """Base LightningModule of all algorithms; see the module docstring for the contract.

    Args:
        env: gymnasium id, registered name (``register_env``, plugin, ``ray.tune``), env class
            or creator ``fn(env_config) -> env``.
        env_config: passed to the creator (as ``gym.make`` kwargs for gymnasium ids).
        num_env_runners: Ray actors that sample; 0 samples in this process without Ray.
        num_envs_per_env_runner: vectorized env copies in each runner.
        num_cpus_per_env_runner: Ray CPUs reserved per runner (also its torch threads).
        rollout_fragment_length: steps per env copy per sample call; ``"auto"`` derives it
            from ``train_batch_size``.
        env_to_module_connector: connectors between env and network (instances, registry
            names, specs, or ``lambda env: ...`` returning them).
        module_to_env_connector: connectors between network and env, before the defaults.
        learner_connector: connectors rewriting each sampled batch on the learner before the
            algorithm's own processing (e.g. ``CountBasedCuriosity``, ``RND``).
        normalize_actions: the network acts in [-1, 1] for bounded Box actions, unsquashed
            to the env's bounds by a connector.
        clip_actions: clip Box actions to the bounds instead (when not normalizing).
        clip_rewards: rewards learned from: None/False as sampled, True ``sign(r)``, a number c
            ``clip(r, -c, c)``; reported returns stay unclipped (:mod:`.reward_clipping`).
        evaluation_num_env_runners: Ray actors for evaluation (0: in-process).
        evaluation_duration: episodes per evaluation (spread evenly over env copies).
        evaluation_num_envs_per_env_runner: env copies per evaluation runner (None: auto).
        evaluation_explore: sample actions in evaluation (False: greedy/mean actions). The
            fluent configs default to True, RLlib's (evaluation follows ``explore``).
        evaluation_duration_unit: ``"episodes"`` or ``"timesteps"`` (env steps) for
            ``evaluation_duration``.
        evaluation_sample_timeout_s: an evaluation stops after this long with the episodes
            finished so far; running ones are cut and counted in
            ``evaluation/num_episodes_cut`` (None: no limit).
        evaluation_parallel_to_training: evaluate on the evaluation actors while the
            iteration trains (with ``evaluation_num_env_runners=0`` it runs after it).
        custom_evaluation_function: RLlib's ``fn(algorithm, eval_env_runner_group)`` returning
            a metrics dict (or ``(metrics, env_steps, agent_steps)``), run instead of the
            built-in evaluation; or its import path (checkpoints keep the path).
        evaluation_env_config: entries that replace ``env_config``'s in evaluation runners.
        model_config: :class:`~lightning_rl.modules.DefaultModelConfig` keys.
        rl_module_spec: RLlib's custom-model surface: an ``RLModuleSpec`` (every policy) or a
            ``MultiRLModuleSpec`` (per policy id) naming an ``RLModule`` class, run by algorithms
            with ``supports_rl_modules`` (PPO, IMPALA, APPO, BC); see :mod:`lightning_rl.modules.rl_module`.
        policies: multi-agent envs only: policy ids (set/list), or ``{policy_id: None | "random" |
            {"observation_space": ..., "action_space": ...}}``; default one shared policy.
        policy_mapping_fn: ``fn(agent_id, episode, **kwargs) -> policy_id`` (called once per agent
            per episode), a dict ``{agent_id: policy_id}`` or an import path.
        policies_to_train: policies whose losses are optimised (default: every trainable one).
        gamma: discount factor.
        lr: learning rate.
        train_batch_size: env steps sampled per iteration per learner (DDP rank).
        seed: seeds env copies (runner i, copy j: ``seed + 1000 i + j``) and action sampling.
        metrics_num_episodes_for_smoothing: window of ``env_runners/episode_return_mean``.
        num_cpus_per_learner: torch intra-op threads of the learner process (None: torch's
            default). One thread is the default because RL networks are small: on 2 cores a
            second thread gave no speed-up and, with runner processes competing for the cores,
            made PPO iterations up to 1.7x slower (thread synchronisation spinning).
        restart_failed_env_runners, max_num_env_runner_restarts, sample_timeout_s,
        ignore_env_runner_failures, max_consecutive_env_runner_failures: fault tolerance of the
            runner group (see :class:`~lightning_rl.env_runners.FaultToleranceConfig`).
            ``sample_timeout_s`` also bounds the in-process runner (``num_env_runners=0``).
        restart_failed_sub_environments: an env copy that raises or hangs is rebuilt alone and
            only its episode is dropped (RLlib's name); False: the runner fails as a whole.
        on_non_finite_env_output: an env's NaN/inf reward or observation: ``"error"`` (stop,
            naming the env) or ``"drop_episode"`` (drop that episode, keep training).
        callbacks: RLlib callbacks (``config.callbacks(...)``): an
            :class:`~lightning_rl.RLlibCallback` subclass or its import path, or
            ``{"callbacks_class": ..., "on_episode_end": fn, ...}``; checkpoints keep import paths.
        max_consecutive_non_finite_updates: updates skipped in a row for a non-finite loss or
            gradient before training stops with a :class:`~lightning_rl.errors.NonFiniteError`.
        min_healthy_env_runners: start sampling once this many runners answer (None: all); the
            rest join as they start.
        env_runner_health_probe_timeout_s: how long a runner Ray reports unavailable may take to
            answer a probe before it is replaced.
        env_runner_hung_timeout_s: a call still running this long marks a hung runner, which is
            replaced (None: 3 x ``sample_timeout_s``); a slower-than-``sample_timeout_s`` call
            short of it only has its late result dropped.
        num_gpus_per_env_runner, custom_resources_per_env_runner: Ray GPUs and custom resources
            (``{"sim_node": 1}``) per runner: where runners may run (RLlib's names).
        evaluation_num_cpus_per_env_runner, evaluation_num_gpus_per_env_runner,
        evaluation_custom_resources_per_env_runner: the same for evaluation runners (None: as
            training runners).
        env_runner_scheduling_strategy: ``"DEFAULT"``, ``"SPREAD"`` or node affinity
            ``{"node_id": hex, "soft": bool}``; env_runner_label_selector: ``{label: value}``
            node labels the runners need.
        placement_strategy: reserve the runners' resources together in a Ray placement group
            (``"PACK"``, ``"SPREAD"``, ``"STRICT_PACK"``, ``"STRICT_SPREAD"``; None: none).
        address: the Ray cluster to join (None: ``RAY_ADDRESS``, else an initialised Ray, else a
            local start); ray_init_kwargs: more ``ray.init`` kwargs (``namespace``,
            ``runtime_env``, ``logging_level`` ...).
        ray_resources_timeout_s: how long to wait for an autoscaler to add the resources the
            runners need before one error names what is missing (None: forever).
        external: train from external simulators over TCP instead of local env copies: a dict
            of :class:`~lightning_rl.envs.external.ExternalEnvConfig` settings (``host``,
            ``port``, ``token``, ``batch_mode``, ...) or True for the defaults. ``env`` still
            gives the spaces and the evaluation env. The token never enters the hyperparameters.
        output: directory the training EnvRunners record every sampled episode to, as Parquet
            files (schema: ``docs/offline_data_schema.md``); None records nothing.
        output_config: how recordings are written: ``max_rows_per_file``, ``max_file_size``
            (bytes), ``row_group_bytes`` (what a runner buffers before writing), ``compression``.
    """

    datamodule_class: ClassVar[type[ExperienceDataModule]] = OnPolicyDataModule
    # Whether the algorithm's modules honour model_config's use_lstm/use_gru/use_attention; any
    # other algorithm rejects them at construction instead of silently training without memory.
    supports_memory_models: ClassVar[bool] = False
    # Whether build_policy_module turns an rl_module_spec's module_class into the policy's networks.
    supports_rl_modules: ClassVar[bool] = False

    def __init__(
        self,
        env: EnvLike | None = None,
        env_config: dict | None = None,
        *,
        num_env_runners: int = 0,
        num_envs_per_env_runner: int = 1,
        num_cpus_per_env_runner: float = 1.0,
        rollout_fragment_length: int | Literal["auto"] = "auto",
        env_to_module_connector: Any = None,
        module_to_env_connector: Any = None,
        learner_connector: Any = None,
        normalize_actions: bool = True,
        clip_actions: bool = False,
        clip_rewards: bool | float | None = None,
        evaluation_num_env_runners: int = 0,
        evaluation_duration: int = 10,
        evaluation_num_envs_per_env_runner: int | None = None,
        evaluation_explore: bool = False,
        evaluation_env_config: dict | None = None,
        evaluation_duration_unit: str = "episodes",
        evaluation_sample_timeout_s: float | None = 120.0,
        evaluation_parallel_to_training: bool = False,
        custom_evaluation_function: Any = None,
        model_config: dict | None = None,
        policies: Any = None,
        policy_mapping_fn: Any = None,
        policies_to_train: list[str] | None = None,
        gamma: float = 0.99,
        lr: float = 3e-4,
        train_batch_size: int = 2048,
        seed: int | None = None,
        metrics_num_episodes_for_smoothing: int = 100,
        num_cpus_per_learner: int | None = 1,
        restart_failed_env_runners: bool = True,
        max_num_env_runner_restarts: int = 1000,
        sample_timeout_s: float | None = 60.0,
        ignore_env_runner_failures: bool = False,
        max_consecutive_env_runner_failures: int = 10,
        min_healthy_env_runners: int | None = None,
        env_runner_health_probe_timeout_s: float = 30.0,
        env_runner_hung_timeout_s: float | None = None,
        num_gpus_per_env_runner: float = 0.0,
        custom_resources_per_env_runner: dict[str, float] | None = None,
        evaluation_num_cpus_per_env_runner: float | None = None,
        evaluation_num_gpus_per_env_runner: float | None = None,
        evaluation_custom_resources_per_env_runner: dict[str, float] | None = None,
        env_runner_scheduling_strategy: str | dict[str, Any] | None = None,
        env_runner_label_selector: dict[str, str] | None = None,
        placement_strategy: str | None = None,
        address: str | None = None,
        ray_init_kwargs: dict[str, Any] | None = None,
        ray_resources_timeout_s: float | None = 600.0,
        restart_failed_sub_environments: bool = True,
        on_non_finite_env_output: str = "error",
        max_consecutive_non_finite_updates: int = 10,
        external: Any = None,
        output: str | None = None,
        output_config: dict | None = None,
        callbacks: Any = None,
        rl_module_spec: Any = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.env_creator = resolve_env(env)
        probe = probe_env(self.env_creator, env_config)
        self.is_multi_agent = probe.is_multi_agent
        self.env_observation_space, self.env_action_space = probe.observation_space, probe.action_space
        declared = DeclaredSettings.resolve(self.hparams, probe)
        self.rl_module_specs = declared.rl_module_specs
        self._external = declared.external
        self.rllib_callbacks = declared.rllib_callbacks
        self.custom_evaluation_function = declared.custom_evaluation_function
        self.save_hyperparameters(
            {
                **self.hparams,
                "env": env_name(env),
                "env_config": dict(env_config or {}),
                **declared.plain(self.hparams),
            }
        )
        declared.validate(self.hparams, self.is_multi_agent)
        self.validate_hparams()
        self.model_config = resolve_model_config(declared.model_config)
        validation.check_model_support(
            type(self).__name__, self.model_config, self.supports_memory_models, self.is_multi_agent
        )
        self.policy_set = PolicySet(
            probe,
            declared.policy_settings,
            declared.mapping_fn,
            declared.stored_mapping,
            declared.env_to_module,
            declared.module_to_env,
            normalize_actions=normalize_actions,
            clip_actions=clip_actions,
            env_name=self.env_creator.name,
        )
        check_rl_module_specs(
            self.rl_module_specs, self.policy_ids, type(self).__name__, self.supports_rl_modules
        )
        # Built with the learner's thread count: some initialisations (orthogonal, via QR) give
        # different numbers with 1 or 2 threads, which made seeded runs depend on what ran before.
        with torch_threads(self.hparams.num_cpus_per_learner):
            self.policies = nn.ModuleDict({pid: self._build_module(pid) for pid in self.policy_ids})
        validation.check_policies_to_train(self.hparams.policies_to_train, self.policy_ids)
        self.learner_connectors = {
            pid: build_learner_connectors(self.hparams.learner_connector, self.policy_spaces[pid])
            for pid in self.policy_ids
        }
        self._default_datamodule: ExperienceDataModule | None = None
        self._pending_datamodule_state: dict[str, Any] | None = None
        self.minibatch_generator = torch.Generator()
        if seed is not None:
            self.minibatch_generator.manual_seed(int(seed))
        self._optimizer_cache: Any = None
        self._learner_metrics = LearnerMetrics()
        self._learner_threads = LearnerThreads()
        self._non_finite_guard = NonFiniteGuard(max_consecutive_non_finite_updates)
        self.last_evaluation_epoch: int | None = None

    # -- what subclasses provide -------------------------------------------------------------
    require_positive = staticmethod(validation.require_positive)

    def validate_hparams(self) -> None:
        """Check algorithm-specific hyperparameters (``self.hparams``) before anything is built."""

    @abc.abstractmethod
    def build_policy_module(
        self, policy_id: str, observation_space: spaces.Space, action_space: spaces.Space
    ) -> PolicyModule:
        """Build the networks and learner pieces of one policy from its module-side spaces."""

    def policy_extra(self, policy_id: str) -> dict[str, Any]:
        """Non-weight runner state of one policy; override to add schedules that depend on the
        algorithm's counters (e.g. DQN's epsilon over env steps sampled)."""
        return self.policies[policy_id].policy_extra()

    def zero_loss(self) -> torch.Tensor:
        """A loss of 0 connected to the parameters, for a minibatch without trainable data (so
        every DDP rank still takes part in the gradient all-reduce)."""
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    # -- experience (DataModule) -------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # The learner's thread count holds for this fit only; teardown gives the caller's back.
        self._learner_threads.enter(self.hparams.num_cpus_per_learner)
        if self._owns_datamodule():
            self.experience.trainer = self.trainer
            self.experience.setup(stage)

    def on_fit_end(self) -> None:
        # Publish the runners' recordings now: a TrainingRun keeps its actors between fits.
        if self.hparams.output is not None:
            flush_runner_group(getattr(self.experience, "train_group", None))

    def teardown(self, stage: str) -> None:
        if self._owns_datamodule() and self._default_datamodule is not None:
            self._default_datamodule.teardown(stage)
        self._learner_threads.restore()

    def configure_callbacks(self) -> list[pl.Callback]:
        # evaluation_parallel_to_training: the evaluation starts with its iteration.
        return [ParallelEvaluation()] if self.hparams.get("evaluation_parallel_to_training") else []

    def train_dataloader(self):
        return self.experience.train_dataloader()

    def val_dataloader(self):
        return self.experience.val_dataloader()

    def test_dataloader(self):
        return self.experience.val_dataloader()

    # -- logging -----------------------------------------------------------------------------
    PROGRESS_BAR_METRICS: ClassVar[set[str]] = {
        "env_runners/episode_return_mean",
        "num_env_steps_sampled_lifetime",
        "env_runners/env_steps_per_s",
    }

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.log_sampling_metrics()

    def log_env_step_axis(self) -> None:
        """Log ``step`` (env steps sampled so far) and ``epoch`` (the iteration) with the metrics.

        Lightning hands a logged ``step`` to every logger as the x value of the row, so
        TensorBoard (``global_step``), wandb (``trainer/global_step``, its x axis) and the CSV
        ``step`` column count env steps sampled (what RL runs are compared by) instead of
        optimizer steps, for training and evaluation rows alike; ``epoch`` keeps the iteration,
        which Lightning adds only when no ``step`` is logged. (Logged values are float32: exact
        up to 16.7M env steps, within a few steps beyond.)
        """
        axis = {"step": self.num_env_steps_sampled_lifetime}
        if self.trainer.state.fn == "fit":  # a standalone validate/test has no iteration of its own
            axis["epoch"] = self.current_epoch
        for name, value in axis.items():
            self.log_iteration_metric(name, float(value))

    # self.log(name, value, on_step=False, on_epoch=True, batch_size=1, ...) for a metric logged
    # once per iteration: after its first call in a hook, ~8x cheaper with the same result.
    log_iteration_metric = log_iteration_metric

    def log_sampling_metrics(self) -> None:
        self.log_env_step_axis()
        for key, value in self.experience.last_metrics.items():
            self.log_iteration_metric(key, float(value), prog_bar=key in self.PROGRESS_BAR_METRICS)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.last_evaluation_epoch = self.current_epoch
        metrics = evaluation_metrics(batch)
        # Cut episodes, a custom_evaluation_function's metrics: logged even when no episode ended.
        metrics.update({f"evaluation/{k}": float(v) for k, v in batch.get("extra_metrics", {}).items()})
        if not metrics:
            return
        self.log_env_step_axis()
        n = max(1, int(batch["episode_return"].numel()))
        for name, value in metrics.items():
            self.log(name, value, prog_bar=name == "evaluation/episode_return_mean", batch_size=n)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """``trainer.test`` (``lightning-rl test``) runs the evaluation episodes of ``validate``."""
        self.validation_step(batch, batch_idx)

    def accumulate_learner_metrics(self, metrics: dict[str, Any], policy_id: str = DEFAULT_POLICY_ID) -> None:
        """Collect per-minibatch learner stats; they are logged once per iteration, averaged
        (see :mod:`.logged_metrics`)."""
        self._learner_metrics.add(metrics, policy_id)

    def flush_learner_metrics(self) -> None:
        """Log the accumulated learner stats as ``learners/<policy>/<name>`` iteration means."""
        # This iteration's count so far (flushed at its last batch and again at its end).
        skipped = self._non_finite_guard.skipped_in(self.current_epoch, self.policies_to_train)
        for policy_id, count in skipped.items():
            name = f"learners/{policy_id}/num_non_finite_updates_skipped"
            self.log_iteration_metric(name, float(count), reduce_fx="max")
        for name, value in self._learner_metrics.pop_means().items():
            # sync_dist: the mean over DDP ranks; a no-op in one process.
            self.log_iteration_metric(name, value, sync_dist=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Flush at the last batch so that callbacks at epoch end (checkpointing, early
        # stopping) already see this iteration's losses.
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self.flush_learner_metrics()

    def on_train_epoch_end(self) -> None:
        self.flush_learner_metrics()

    # -- optimisation ------------------------------------------------------------------------
    def build_optimizers(self) -> Any:
        """Build optimizers (and schedulers) in the form ``configure_optimizers`` returns."""
        return self.adam(self.parameters(), lr=self.hparams.lr)

    def adam(self, params: Any, **kwargs: Any) -> torch.optim.Adam:
        """Adam with the fastest kernel this Trainer's precision allows (:func:`.optimizers.fast_adam`)."""
        return fast_adam(params, self._trainer, **kwargs)

    def configure_optimizers(self) -> Any:
        # Cached: TrainingRun calls fit() once per iteration and Adam's moments must survive.
        if self._optimizer_cache is None:
            self._optimizer_cache = self.build_optimizers()
        return self._optimizer_cache
