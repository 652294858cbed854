"""The base class of every algorithm: a LightningModule that is also the whole config.

Like RLlib's ``AlgorithmConfig``, an algorithm's ``__init__`` arguments are its complete,
flat configuration (env, runners, evaluation, model, training), so ``save_hyperparameters``,
LightningCLI (``--model.lr 1e-3``) and the fluent config all see the same names. What a
subclass adds is small: ``build_policy_module`` (one :class:`PolicyModule` per policy id, holding
the networks, what the EnvRunners run and the learner connector: GAE, n-step, V-trace ...) and
``training_step`` (combining the modules' losses).

Experience comes from a DataModule of the kind named by ``datamodule_class``. Pass one to
``trainer.fit(algo, datamodule=...)`` or let the algorithm build its own: then it serves
``train_dataloader``/``val_dataloader`` itself and keeps that DataModule's state in its
checkpoints under the key Lightning would use, so both ways resume identically.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import os
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

import lightning.pytorch as pl
import torch
from gymnasium import spaces
from lightning.pytorch.core.saving import load_hparams_from_yaml
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from lightning_rl import checkpoint as ckpt
from lightning_rl import rng
from lightning_rl._imports import object_path
from lightning_rl.algorithms.multi_agent import (
    RANDOM_POLICY,
    RandomPolicyModule,
    normalize_policies,
    policy_spaces_from_env,
    resolve_mapping_fn,
)
from lightning_rl.algorithms.non_finite import NonFiniteGuard
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.connectors.base import (
    EnvToModulePipeline,
    ModuleToEnvPipeline,
    build_connector,
    env_connector_factory_args,
    learner_connector_factory_args,
    normalize_connector_specs,
)
from lightning_rl.connectors.module_to_env import default_module_to_env
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.data.experience import ExperienceDataModule
from lightning_rl.data.on_policy import OnPolicyDataModule
from lightning_rl.env_runners.env_runner import EnvRunnerSpec
from lightning_rl.env_runners.env_runner_group import EnvRunnerPlacement, FaultToleranceConfig
from lightning_rl.env_runners.multi_agent_env_runner import MultiAgentEnvRunnerSpec, MultiAgentPolicySetup
from lightning_rl.envs.external.config import resolve_external_config
from lightning_rl.envs.multi_agent import is_multi_agent
from lightning_rl.envs.registration import EnvContext, EnvLike, env_name, resolve_env
from lightning_rl.envs.vector import check_non_finite_mode
from lightning_rl.errors import CheckpointError, ConfigError, EnvError
from lightning_rl.modules.model_config import DefaultModelConfig, resolve_model_config
from lightning_rl.modules.recurrent import is_recurrent, memory_switches
from lightning_rl.offline.config import check_output_settings, flush_runner_group, recording_spec
from lightning_rl.policy import Policy, checkpoint_recipes
from lightning_rl.registry import algorithms_with

# Two warnings Lightning emits on every RL run that tell the user nothing actionable: our
# IterableDatasets define __len__ on purpose (minibatches per iteration, no loader workers),
# and Lightning 2.6 calls a torch pytree API that torch 2.13 deprecated.
warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined.*")
warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
# RL metrics are logged per iteration (epoch), so Lightning's per-step logging interval
# warning ("fewer training batches than log_every_n_steps") does not apply.
warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
# Under DDP, sampling and evaluation metrics are already identical on every rank (the
# DataModule shares them) and learner stats are averaged explicitly (sync_dist below).
warnings.filterwarnings("ignore", message=r".*It is recommended to use .self\.log\(.*sync_dist=True.*")


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run a block with ``count`` torch intra-op threads (None: unchanged), then restore."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _plain_custom_model(model_config: dict | None) -> dict | None:
    """A custom model class is stored by import path, so checkpoints and YAML stay plain data."""
    custom = (model_config or {}).get("custom_model")
    if custom is None or isinstance(custom, str):
        return model_config
    path = object_path(custom)
    if path is None:
        raise ConfigError(
            f"model_config custom_model {custom!r} must be importable (defined at module level) so that "
            "EnvRunners and checkpoints can rebuild it."
        )
    return {**model_config, "custom_model": path}


class Algorithm(pl.LightningModule, abc.ABC):
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
        evaluation_num_env_runners: Ray actors for evaluation (0: in-process).
        evaluation_duration: episodes per evaluation (spread evenly over env copies).
        evaluation_num_envs_per_env_runner: env copies per evaluation runner (None: auto).
        evaluation_explore: sample actions in evaluation (False: greedy/mean actions).
        evaluation_env_config: entries that replace ``env_config``'s in evaluation runners.
        model_config: :class:`~lightning_rl.modules.DefaultModelConfig` keys.
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
        evaluation_num_env_runners: int = 0,
        evaluation_duration: int = 10,
        evaluation_num_envs_per_env_runner: int | None = None,
        evaluation_explore: bool = False,
        evaluation_env_config: dict | None = None,
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.env_creator = resolve_env(env)
        self._probe_spaces(env_config)
        # Factories get what RLlib passes them: (env, spaces, device) or (obs_space, act_space).
        env_args = env_connector_factory_args(self._probe_env_for_connectors)
        e2m_specs = normalize_connector_specs(env_to_module_connector, factory_args=env_args)
        m2e_specs = normalize_connector_specs(module_to_env_connector, factory_args=env_args)
        learner_args = learner_connector_factory_args(
            e2m_specs, self.env_observation_space, self.env_action_space
        )
        learner_specs = normalize_connector_specs(learner_connector, factory_args=learner_args)
        e2m_specs = self._with_prev_action_reward(e2m_specs, model_config)
        if isinstance(model_config, DefaultModelConfig):
            model_config = model_config.to_dict()
        model_config = _plain_custom_model(model_config)
        hparams = dict(self.hparams)
        self._policy_settings = normalize_policies(policies)
        self.policy_mapping_fn, stored_mapping = resolve_mapping_fn(
            policy_mapping_fn, list(self._policy_settings)
        )
        hparams.update(
            env=env_name(env),
            env_config=dict(env_config or {}),
            env_to_module_connector=e2m_specs,
            module_to_env_connector=m2e_specs,
            learner_connector=learner_specs,
            model_config=dict(model_config or {}),
            policies=None
            if policies is None
            else {k: v if v in (None, RANDOM_POLICY) else None for k, v in self._policy_settings.items()},
            policy_mapping_fn=stored_mapping,
            policies_to_train=None if policies_to_train is None else list(policies_to_train),
        )
        self._external = resolve_external_config(external)
        hparams["external"] = None if self._external is None else self._external.to_dict()
        hparams.update(
            output=None if output is None else str(output), output_config=dict(output_config or {})
        )
        self.save_hyperparameters(hparams)
        self._validate_common()
        check_output_settings(output, output_config, self.is_multi_agent)
        if self._external is not None and self.is_multi_agent:
            raise ConfigError("external= serves single-agent policies; the env is a MultiAgentEnv.")
        self.validate_hparams()
        self.model_config = resolve_model_config(model_config)
        if is_recurrent(self.model_config) and not self.supports_memory_models:
            supported = ", ".join(algorithms_with("supports_memory_models"))
            raise ConfigError(
                f"model_config {memory_switches(self.model_config)[0]}=True: {type(self).__name__} has no "
                f"memory-model support; algorithms that do: {supported}."
            )
        if is_recurrent(self.model_config) and self.is_multi_agent:
            raise ConfigError(
                "Memory models (use_lstm/use_gru/use_attention) are single-agent for now: the multi-agent "
                "runner does not yet carry per-agent recurrent state."
            )
        self._setup_policy_spaces(e2m_specs, m2e_specs, normalize_actions, clip_actions)
        self._probe_env_for_connectors = None
        # Built with the learner's thread count: some initialisations (orthogonal, via QR) give
        # different numbers with 1 or 2 threads, which made seeded runs depend on what ran before.
        with torch_threads(self.hparams.num_cpus_per_learner):
            self.policies = nn.ModuleDict(
                {policy_id: self._build_module(policy_id) for policy_id in self.policy_ids}
            )
        self._added_policies: dict[str, dict[str, Any]] = {}
        self._check_policies_to_train()
        self.learner_connectors = {pid: self._build_learner_connectors(pid) for pid in self.policy_ids}
        self._default_datamodule: ExperienceDataModule | None = None
        self._pending_datamodule_state: dict[str, Any] | None = None
        self.minibatch_generator = torch.Generator()
        if seed is not None:
            self.minibatch_generator.manual_seed(int(seed))
        self._optimizer_cache: Any = None
        self._learner_metrics: dict[str, dict[str, list[torch.Tensor]]] = {}
        self._non_finite_guard = NonFiniteGuard(max_consecutive_non_finite_updates)
        self.last_evaluation_epoch: int | None = None

    def _setup_policy_spaces(
        self, e2m_specs: list[dict], m2e_specs: list[dict], normalize_actions: bool, clip_actions: bool
    ) -> None:
        """Connector pipelines and module-side spaces per policy id (one for single-agent envs)."""
        if self.is_multi_agent:
            env_spaces, self.agent_policies = policy_spaces_from_env(
                self._probe_env_for_connectors, self._policy_settings, self.policy_mapping_fn
            )
        else:
            if (
                list(self._policy_settings) != [DEFAULT_POLICY_ID]
                or self.hparams.policy_mapping_fn is not None
            ):
                raise ConfigError(
                    f"policies/policy_mapping_fn need a MultiAgentEnv, but env {self.env_creator.name!r} "
                    "is a "
                    "single-agent gymnasium env."
                )
            env_spaces = {DEFAULT_POLICY_ID: (self.env_observation_space, self.env_action_space)}
            self.agent_policies = {}
        self.policy_ids: list[str] = []
        self.env_policy_spaces: dict[str, tuple[spaces.Space, spaces.Space]] = {}
        self.env_to_module_pipelines: dict[str, EnvToModulePipeline] = {}
        self.module_to_env_specs: dict[str, list[dict]] = {}
        self.policy_spaces: dict[str, tuple[spaces.Space, spaces.Space]] = {}
        self.connector_state: dict[str, list[dict[str, Any]]] = {}
        for policy_id, (obs_space, action_space) in env_spaces.items():
            self._add_policy_spaces(policy_id, obs_space, action_space, e2m_specs, m2e_specs)
        self._normalize_actions, self._clip_actions = normalize_actions, clip_actions

    def _add_policy_spaces(
        self,
        policy_id: str,
        obs_space: spaces.Space,
        action_space: spaces.Space,
        e2m_specs: list[dict],
        m2e_specs: list[dict],
    ) -> None:
        pipeline = EnvToModulePipeline.from_specs(e2m_specs, obs_space, action_space)
        h = self.hparams
        module_to_env_specs = m2e_specs + default_module_to_env(
            action_space, h.normalize_actions, h.clip_actions
        )
        module_to_env = ModuleToEnvPipeline.from_specs(module_to_env_specs, action_space)
        self.policy_ids.append(policy_id)
        self.env_policy_spaces[policy_id] = (obs_space, action_space)
        self.env_to_module_pipelines[policy_id] = pipeline
        self.module_to_env_specs[policy_id] = module_to_env_specs
        self.policy_spaces[policy_id] = (pipeline.output_space, module_to_env.module_action_space)
        self.connector_state[policy_id] = pipeline.get_state()

    @staticmethod
    def _with_prev_action_reward(e2m_specs: list[dict], model_config: Any) -> list[dict]:
        """RLlib's ``lstm_use_prev_action/reward`` = the PrevActionsPrevRewards connector."""
        config = resolve_model_config(model_config)
        wanted = config.lstm_use_prev_action or config.lstm_use_prev_reward
        present = any(
            spec["name"].rsplit(".", 1)[-1].rsplit(":", 1)[-1].lower() == "prevactionsprevrewards"
            for spec in e2m_specs
        )
        if not wanted or present:
            return e2m_specs
        return [
            *e2m_specs,
            {
                "name": "PrevActionsPrevRewards",
                "config": {
                    "n_prev_actions": int(config.lstm_use_prev_action),
                    "n_prev_rewards": int(config.lstm_use_prev_reward),
                },
            },
        ]

    def _build_learner_connectors(self, policy_id: str) -> list[Any]:
        connectors = [build_connector(spec) for spec in self.hparams.learner_connector]
        for connector in connectors:
            if not hasattr(connector, "setup") or not callable(connector):
                raise ConfigError(f"{connector!r} is not a learner connector.")
            connector.setup(*self.policy_spaces[policy_id])
        return connectors

    def _apply_learner_connectors(self, policy_id: str, batch: Any) -> Any:
        connectors = self.learner_connectors.get(policy_id, [])
        for connector in connectors:
            batch = connector(batch)
        if connectors and ("next", "intrinsic_reward") in batch.keys(include_nested=True):
            self.accumulate_learner_metrics(
                {"intrinsic_reward_mean": batch["next", "intrinsic_reward"].mean()}, policy_id
            )
        return batch

    def _build_module(self, policy_id: str) -> PolicyModule:
        obs_space, action_space = self.policy_spaces[policy_id]
        if self._policy_settings.get(policy_id) == RANDOM_POLICY:
            return RandomPolicyModule(obs_space, action_space, self.model_config)
        return self.build_policy_module(policy_id, obs_space, action_space)

    def _check_policies_to_train(self) -> None:
        wanted = self.hparams.policies_to_train
        if wanted is None:
            return
        unknown = [p for p in wanted if p not in self.policies]
        if unknown:
            raise ConfigError(
                f"policies_to_train names unknown policies {unknown}; the policies are {self.policy_ids}."
            )

    def add_policy(self, policy_id: str, from_policy: str, trainable: bool = False) -> PolicyModule:
        """Add a policy with ``from_policy``'s spaces, connectors and current weights.

        Self-play and league training snapshot the learner this way: a frozen copy
        (``trainable=False``) that the mapping function can then pit against the learner.
        EnvRunners build it before their next sample.
        """
        if policy_id in self.policies:
            raise ConfigError(f"Policy {policy_id!r} exists already; the policies are {self.policy_ids}.")
        if from_policy not in self.policies:
            raise ConfigError(f"Unknown policy {from_policy!r} to copy; the policies are {self.policy_ids}.")
        obs_space, action_space = self.env_policy_spaces[from_policy]
        h = self.hparams
        self._add_policy_spaces(
            policy_id,
            obs_space,
            action_space,
            list(h.env_to_module_connector),
            list(h.module_to_env_connector),
        )
        self._policy_settings[policy_id] = self._policy_settings.get(from_policy)
        module = self._build_module(policy_id).to(self.device)
        module.load_state_dict(self.policies[from_policy].state_dict())
        if not trainable:
            module.requires_grad_(False)
            module.trainable = False
        self.policies[policy_id] = module
        self.connector_state[policy_id] = copy.deepcopy(self.connector_state[from_policy])
        self.env_to_module_pipelines[policy_id].set_state(self.connector_state[policy_id])
        self._added_policies[policy_id] = {"from_policy": from_policy, "trainable": trainable}
        if trainable and self._optimizer_cache is not None:
            optimizers = self.trainer.optimizers if self._trainer is not None else []
            if len(optimizers) != 1:
                raise ConfigError(
                    "A trainable policy can be added mid-training only to an algorithm with one optimizer; "
                    f"{type(self).__name__} has {len(optimizers)}."
                )
            optimizers[0].add_param_group({"params": [p for p in module.parameters() if p.requires_grad]})
        return module

    def set_policy_mapping_fn(self, fn: Any) -> None:
        """Change which agent uses which policy from the next sample on (self-play, leagues)."""
        self.policy_mapping_fn, _ = resolve_mapping_fn(fn, self.policy_ids)

    @property
    def observation_space(self) -> spaces.Space:
        """Module-side observation space of the single policy (after env-to-module connectors)."""
        return self.policy_spaces[self._single_policy_id()][0]

    @property
    def action_space(self) -> spaces.Space:
        """Module-side action space of the single policy (before module-to-env connectors)."""
        return self.policy_spaces[self._single_policy_id()][1]

    @property
    def module(self) -> PolicyModule:
        """The only policy's module (single-agent algorithms)."""
        return self.policies[self._single_policy_id()]

    def policy_env_spaces(self, policy_id: str) -> tuple[spaces.Space, spaces.Space]:
        """Env-side observation and action space of one policy (before its env-to-module and
        after its module-to-env connectors); what inference outside the runners starts from."""
        return self.env_policy_spaces[policy_id]

    def get_policy(self, policy_id: str | None = None) -> Policy:
        """A :class:`~lightning_rl.policy.Policy` snapshot of one policy, with its connectors."""
        return Policy.from_algorithm(self, policy_id)

    def _single_policy_id(self) -> str:
        if len(self.policy_ids) != 1:
            raise ConfigError(
                f"This algorithm has several policies ({self.policy_ids}); use policy_spaces[policy_id] "
                "and policies[policy_id]."
            )
        return self.policy_ids[0]

    # -- construction helpers ----------------------------------------------------------------
    def _probe_spaces(self, env_config: dict | None) -> None:
        env = self.env_creator(EnvContext(env_config, worker_index=0))
        self.is_multi_agent = is_multi_agent(env)
        if self.is_multi_agent:
            self._probe_env_for_connectors = env
            self.env_observation_space = self.env_action_space = None
            env.close()
            return
        try:
            observation_space = getattr(env, "observation_space", None)
            action_space = getattr(env, "action_space", None)
            if not isinstance(observation_space, spaces.Space) or not isinstance(action_space, spaces.Space):
                raise EnvError(
                    f"Env {self.env_creator.name!r} has no gymnasium observation_space/action_space "
                    f"(got {observation_space!r}, {action_space!r})."
                )
            self.env_observation_space = observation_space
            self.env_action_space = action_space
            # RLlib passes the env to connector lambdas; keep it only until they ran.
            self._probe_env_for_connectors = env
        finally:
            close = getattr(env, "close", None)
            if close is not None:
                close()

    def _validate_common(self) -> None:
        h = self.hparams
        positive_ints = ["num_envs_per_env_runner", "train_batch_size", "evaluation_duration"]
        for name in positive_ints:
            if not isinstance(h[name], int) or isinstance(h[name], bool) or h[name] <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {h[name]!r}.")
        for name in ["num_env_runners", "evaluation_num_env_runners"]:
            if not isinstance(h[name], int) or h[name] < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {h[name]!r}.")
        if not (isinstance(h.lr, int | float) and h.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {h.lr!r}.")
        if not 0.0 <= float(h.gamma) <= 1.0:
            raise ConfigError(f"gamma must be in [0, 1], got {h.gamma!r}.")
        fragment = h.rollout_fragment_length
        if fragment != "auto" and (not isinstance(fragment, int) or fragment <= 0):
            raise ConfigError(
                f"rollout_fragment_length must be a positive integer or 'auto', got {fragment!r}."
            )
        if h.num_cpus_per_env_runner <= 0:
            raise ConfigError(f"num_cpus_per_env_runner must be positive, got {h.num_cpus_per_env_runner!r}.")
        check_non_finite_mode(h.on_non_finite_env_output)
        limit = h.max_consecutive_non_finite_updates
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(f"max_consecutive_non_finite_updates must be an integer >= 1, got {limit!r}.")
        self._validate_cluster_settings()

    def _validate_cluster_settings(self) -> None:
        """Placement, Ray connection and runner-health settings (one clear error each)."""
        h = self.hparams
        for evaluation in (False, True):
            EnvRunnerPlacement(**self.env_runner_placement_kwargs(evaluation))  # checks itself
        minimum = h.min_healthy_env_runners
        if minimum is not None and (
            not isinstance(minimum, int)
            or isinstance(minimum, bool)
            or not 1 <= minimum <= max(1, h.num_env_runners)
        ):
            raise ConfigError(
                "min_healthy_env_runners must be None or an integer in [1, num_env_runners="
                f"{h.num_env_runners}], got {minimum!r}."
            )
        for name in (
            "env_runner_health_probe_timeout_s",
            "env_runner_hung_timeout_s",
            "ray_resources_timeout_s",
        ):
            value = h[name]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ConfigError(f"{name} must be a positive number of seconds or None, got {value!r}.")
        if h.address is not None and not isinstance(h.address, str):
            raise ConfigError(
                f"address must be a Ray address string (e.g. 'ray://head:10001', 'auto'), got {h.address!r}."
            )
        if h.ray_init_kwargs is not None and not isinstance(h.ray_init_kwargs, dict):
            raise ConfigError(
                f"ray_init_kwargs must be a dict of ray.init keyword arguments, got {h.ray_init_kwargs!r}."
            )

    def env_runner_placement_kwargs(self, evaluation: bool = False) -> dict[str, Any]:
        """:class:`~lightning_rl.env_runners.env_runner_group.EnvRunnerPlacement` kwargs of the
        training (or evaluation) runners from the settings."""
        h = self.hparams

        def pick(name: str) -> Any:
            own = h.get(f"evaluation_{name}") if evaluation else None
            return own if own is not None else h.get(name)

        return {
            "num_cpus": pick("num_cpus_per_env_runner"),
            "num_gpus": pick("num_gpus_per_env_runner") or 0.0,
            "custom_resources": dict(pick("custom_resources_per_env_runner") or {}),
            "scheduling_strategy": h.get("env_runner_scheduling_strategy"),
            "label_selector": h.get("env_runner_label_selector"),
            "placement_strategy": h.get("placement_strategy"),
        }

    @staticmethod
    def require_positive(**values: Any) -> None:
        """One clear error for the first non-positive value among ``values``."""
        for name, value in values.items():
            if value is None or isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}.")

    # -- what subclasses provide -------------------------------------------------------------
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

    @property
    def weights_version(self) -> int:
        """Monotonic version of the weights: the number of optimizer steps taken."""
        return int(self.global_step) if self._trainer is not None else 0

    def policy_state(self) -> dict[str, Any]:
        """What every EnvRunner loads before sampling: weights, extras and connector state per policy."""
        state = {
            "version": self.weights_version,
            "policies": {
                policy_id: {
                    "weights": {k: v.detach().to("cpu") for k, v in module.policy_weights().items()},
                    "extra": self.policy_extra(policy_id),
                }
                for policy_id, module in self.policies.items()
            },
            "connectors": self.connector_state,
        }
        if self.is_multi_agent:
            state["policy_mapping_fn"] = self.policy_mapping_fn
            state["new_policies"] = {pid: self._policy_setup(pid) for pid in self._added_policies}
        return state

    def env_runner_spec(self, num_envs: int, evaluation: bool = False, seed_offset: int = 0) -> Any:
        seed = self.hparams.seed
        if seed is not None:
            seed = int(seed) + seed_offset + (500_000 if evaluation else 0)
        if self.is_multi_agent:
            return MultiAgentEnvRunnerSpec(
                env_creator=self.env_creator,
                policies={pid: self._policy_setup(pid) for pid in self.policy_ids},
                policy_mapping_fn=self.policy_mapping_fn,
                env_config=self._runner_env_config(evaluation),
                num_envs=num_envs,
                seed=seed,
                update_connectors=not evaluation,
                **self._env_robustness_settings(),
            )
        if self._external is not None and not evaluation:
            from lightning_rl.envs.external.spec import external_runner_spec

            return external_runner_spec(self, self._external, num_envs, seed)
        policy_id = self._single_policy_id()
        return EnvRunnerSpec(
            env_creator=self.env_creator,
            policy_spec=self.policies[policy_id].policy_spec(),
            env_config=self._runner_env_config(evaluation),
            num_envs=num_envs,
            env_to_module=list(self.hparams.env_to_module_connector),
            module_to_env=list(self.module_to_env_specs[policy_id]),
            seed=seed,
            update_connectors=not evaluation,
            policy_id=policy_id,
            recorder=None if evaluation else self._recording_spec(),
            **self._env_robustness_settings(),
        )

    def _env_robustness_settings(self) -> dict[str, Any]:
        """What runners do with crashing, hanging or NaN-producing env copies."""
        h = self.hparams
        return {
            "restart_failed_sub_environments": bool(h.restart_failed_sub_environments),
            "max_consecutive_sub_environment_failures": int(h.max_consecutive_env_runner_failures),
            "on_non_finite_env_output": h.on_non_finite_env_output,
            "sample_timeout_s": h.sample_timeout_s,
        }

    def _recording_spec(self) -> Any:
        h = self.hparams
        return recording_spec(h.output, h.output_config, h.env if isinstance(h.env, str) else None)

    def _runner_env_config(self, evaluation: bool) -> dict[str, Any]:
        config = dict(self.hparams.env_config)
        if evaluation and self.hparams.evaluation_env_config:
            config.update(self.hparams.evaluation_env_config)
        return config

    def _policy_setup(self, policy_id: str) -> MultiAgentPolicySetup:
        obs_space, action_space = self.env_policy_spaces[policy_id]
        return MultiAgentPolicySetup(
            policy_spec=self.policies[policy_id].policy_spec(),
            observation_space=obs_space,
            action_space=action_space,
            env_to_module=list(self.hparams.env_to_module_connector),
            module_to_env=list(self.module_to_env_specs[policy_id]),
        )

    def merge_connector_deltas(self, deltas: Sequence[dict[str, Sequence[dict[str, Any] | None]]]) -> None:
        """Fold what the runners' filters saw (``{policy_id: deltas}`` per runner) into the global state."""
        for policy_id, pipeline in self.env_to_module_pipelines.items():
            per_runner = [d[policy_id] for d in deltas if policy_id in d]
            if per_runner:
                self.connector_state[policy_id] = pipeline.merge_deltas(
                    self.connector_state[policy_id], per_runner
                )
                pipeline.set_state(self.connector_state[policy_id])

    def fault_tolerance_config(self) -> FaultToleranceConfig:
        h = self.hparams
        return FaultToleranceConfig(
            restart_failed_env_runners=h.restart_failed_env_runners,
            max_num_env_runner_restarts=h.max_num_env_runner_restarts,
            sample_timeout_s=h.sample_timeout_s,
            ignore_env_runner_failures=h.ignore_env_runner_failures,
            max_consecutive_env_runner_failures=h.max_consecutive_env_runner_failures,
            min_healthy_env_runners=h.get("min_healthy_env_runners"),
            env_runner_health_probe_timeout_s=h.get("env_runner_health_probe_timeout_s", 30.0),
            env_runner_hung_timeout_s=h.get("env_runner_hung_timeout_s"),
        )

    # -- learner connector -------------------------------------------------------------------
    def process_rollout(self, batch: Any) -> Any:
        """Run each policy's learner connectors, then its module's own (GAE ...), on its batch."""
        if isinstance(batch, dict):
            return {
                pid: self.policies[pid].process_rollout(self._apply_learner_connectors(pid, b))
                for pid, b in batch.items()
            }
        policy_id = self._single_policy_id()
        return self.module.process_rollout(self._apply_learner_connectors(policy_id, batch))

    def policy_batches(self, batch: Any) -> list[tuple[str, Any]]:
        """``(policy_id, batch)`` pairs of the policies being trained, for ``training_step``."""
        if isinstance(batch, dict):
            trained = self.policies_to_train
            return [(pid, b) for pid, b in batch.items() if pid in trained]
        return [(self._single_policy_id(), batch)]

    def sequence_length(self) -> int | None:
        """Length of the sequences a recurrent model learns from (``max_seq_len``), else None."""
        return int(self.model_config.max_seq_len) if is_recurrent(self.model_config) else None

    def zero_loss(self) -> torch.Tensor:
        """A loss of 0 connected to the parameters, for a minibatch without trainable data (so
        every DDP rank still takes part in the gradient all-reduce)."""
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    @property
    def policies_to_train(self) -> list[str]:
        wanted = self.hparams.policies_to_train
        if wanted is not None:
            return list(wanted)
        return [pid for pid in self.policy_ids if getattr(self.policies[pid], "trainable", True)]

    # -- experience (DataModule) -------------------------------------------------------------
    def configure_datamodule(self) -> ExperienceDataModule:
        """The DataModule this algorithm uses when ``trainer.fit`` gets none."""
        return self.datamodule_class()

    @property
    def experience(self) -> ExperienceDataModule:
        """The DataModule serving this algorithm (the Trainer's, or the algorithm's own)."""
        trainer = self._trainer
        if trainer is not None and isinstance(trainer.datamodule, ExperienceDataModule):
            return trainer.datamodule
        if self._default_datamodule is None:
            self._default_datamodule = self.configure_datamodule()
            self._default_datamodule.attach(self)
            if self._pending_datamodule_state is not None:
                self._default_datamodule.load_state_dict(self._pending_datamodule_state)
                self._pending_datamodule_state = None
        return self._default_datamodule

    def _owns_datamodule(self) -> bool:
        trainer = self._trainer
        return trainer is None or not isinstance(trainer.datamodule, ExperienceDataModule)

    def setup(self, stage: str) -> None:
        # The learner's thread count holds for this fit only; teardown gives the caller's back.
        self._threads_before_setup = torch.get_num_threads()
        if self.hparams.num_cpus_per_learner:
            torch.set_num_threads(int(self.hparams.num_cpus_per_learner))
        if self._owns_datamodule():
            self.experience.trainer = self.trainer
            self.experience.setup(stage)

    def on_fit_end(self) -> None:
        # Publish the runners' recordings now: a TrainingRun keeps its actors between fits.
        if self.hparams.output is not None:
            flush_runner_group(getattr(self.experience, "train_group", None))

    def load_policy_weights_from(
        self,
        source: Any,
        *,
        policy_id: str | None = None,
        source_policy_id: str | None = None,
        include_value_function: bool = True,
    ) -> None:
        """Start from another algorithm's policy (e.g. BC, then PPO): its policy weights, connector
        state and (if both have one of the same shape) value network. ``source``: an algorithm, a
        TrainingRun or a checkpoint path; see :mod:`lightning_rl.algorithms.policy_transfer`."""
        from lightning_rl.algorithms.policy_transfer import load_policy_weights

        load_policy_weights(
            self,
            source,
            policy_id=policy_id,
            source_policy_id=source_policy_id,
            include_value_function=include_value_function,
        )

    def teardown(self, stage: str) -> None:
        if self._owns_datamodule() and self._default_datamodule is not None:
            self._default_datamodule.teardown(stage)
        threads = getattr(self, "_threads_before_setup", None)
        if threads is not None:
            torch.set_num_threads(threads)
            self._threads_before_setup = None

    def train_dataloader(self):
        return self.experience.train_dataloader()

    def val_dataloader(self):
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
            self.log(name, float(value), on_step=False, on_epoch=True, batch_size=1)

    def log_sampling_metrics(self) -> None:
        self.log_env_step_axis()
        for key, value in self.experience.last_metrics.items():
            self.log(
                key,
                float(value),
                on_step=False,
                on_epoch=True,
                prog_bar=key in self.PROGRESS_BAR_METRICS,
                batch_size=1,
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.last_evaluation_epoch = self.current_epoch
        returns = batch["episode_return"]
        if returns.numel() == 0:
            return
        n = int(returns.numel())
        self.log_env_step_axis()
        self.log("evaluation/episode_return_mean", returns.mean(), prog_bar=True, batch_size=n)
        self.log(
            "evaluation/episode_return_std", returns.std() if n > 1 else returns.new_zeros(()), batch_size=n
        )
        self.log("evaluation/episode_return_min", returns.min(), batch_size=n)
        self.log("evaluation/episode_return_max", returns.max(), batch_size=n)
        self.log("evaluation/episode_len_mean", batch["episode_len"].mean(), batch_size=n)
        self.log("evaluation/num_episodes", float(n), batch_size=n)
        self.log("evaluation/num_env_steps", float(batch["num_env_steps"]), batch_size=n)
        for policy_id, policy_returns in batch.get("policy_returns", {}).items():
            if policy_returns.numel():
                self.log(
                    f"evaluation/module_episode_returns_mean/{policy_id}", policy_returns.mean(), batch_size=n
                )

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """``trainer.test`` (``lightning-rl test``) runs the evaluation episodes of ``validate``."""
        self.validation_step(batch, batch_idx)

    def test_dataloader(self):
        return self.experience.val_dataloader()

    def accumulate_learner_metrics(self, metrics: dict[str, Any], policy_id: str = DEFAULT_POLICY_ID) -> None:
        """Collect per-minibatch learner stats; they are logged once per iteration, averaged.

        Calling ``self.log`` for every stat of every minibatch costs more than a PPO update
        on CartPole; one ``log`` per stat per iteration keeps logging off the critical path.
        """
        bucket = self._learner_metrics.setdefault(policy_id, {})
        for name, value in metrics.items():
            value = (
                value.detach().float().mean()
                if isinstance(value, torch.Tensor)
                else torch.tensor(float(value))
            )
            bucket.setdefault(name, []).append(value)

    def flush_learner_metrics(self) -> None:
        """Log the accumulated learner stats as ``learners/<policy>/<name>`` iteration means."""
        # This iteration's count so far (flushed at its last batch and again at its end).
        skipped = self._non_finite_guard.skipped_in(self.current_epoch, self.policies_to_train)
        for policy_id, count in skipped.items():
            self.log(
                f"learners/{policy_id}/num_non_finite_updates_skipped",
                float(count),
                on_step=False,
                on_epoch=True,
                reduce_fx="max",
                batch_size=1,
            )
        for policy_id, bucket in self._learner_metrics.items():
            for name, values in bucket.items():
                self.log(
                    f"learners/{policy_id}/{name}",
                    torch.stack(values).mean(),
                    on_step=False,
                    on_epoch=True,
                    batch_size=1,
                    sync_dist=True,  # the mean over DDP ranks; a no-op in one process
                )
        self._learner_metrics = {}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Flush at the last batch so that callbacks at epoch end (checkpointing, early
        # stopping) already see this iteration's losses.
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self.flush_learner_metrics()

    def on_train_epoch_end(self) -> None:
        self.flush_learner_metrics()

    # -- non-finite guard (see algorithms/non_finite.py) ---------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._trainer is not None and self.trainer.training:
            self._non_finite_guard.start_batch(batch)
        return batch

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._non_finite_guard.before_backward(loss)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        trainer = self.trainer
        strategy = trainer.strategy
        any_rank = (
            (lambda bad: strategy.reduce_boolean_decision(bad, all=False)) if trainer.world_size > 1 else None
        )
        # fp16 mixed precision: the loss scaler handles inf gradients (skips, lowers the scale).
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._non_finite_guard.before_optimizer_step(
            optimizer,
            self.policies,
            check_gradients=scaler is None,
            any_rank=any_rank,
            epoch=self.current_epoch,
        )

    # -- optimisation ------------------------------------------------------------------------
    def build_optimizers(self) -> Any:
        """Build optimizers (and schedulers) in the form ``configure_optimizers`` returns."""
        return self.adam(self.parameters(), lr=self.hparams.lr)

    def adam(self, params: Any, **kwargs: Any) -> torch.optim.Adam:
        """Adam with the fused kernel where the parameters allow it: one kernel for all
        parameters instead of a Python loop over them (~0.2 ms per PPO update on CartPole).

        Under a mixed-precision Trainer (``precision="bf16-mixed"`` or ``"16-mixed"``) it is the
        multi-tensor ``foreach`` kernel instead: Lightning refuses to clip the gradients of an
        optimizer that unscales them itself, as the fused one does, and most algorithms clip.
        """
        params = list(params)
        trainer = self._trainer
        if trainer is not None and isinstance(trainer.precision_plugin, MixedPrecision):
            return torch.optim.Adam(params, foreach=True, **kwargs)
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            return torch.optim.Adam(params, **kwargs)

    def configure_optimizers(self) -> Any:
        # Cached: TrainingRun calls fit() once per iteration and Adam's moments must survive.
        if self._optimizer_cache is None:
            self._optimizer_cache = self.build_optimizers()
        return self._optimizer_cache

    @property
    def num_env_steps_sampled_lifetime(self) -> int:
        return self.experience.num_env_steps_sampled_lifetime

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        ckpt.stamp(
            checkpoint,
            algorithm=type(self).__name__,
            policy_ids=list(self.policy_ids),
            added_policies=copy.deepcopy(self._added_policies),
            learner_connector_state={
                pid: [c.get_state() for c in connectors]
                for pid, connectors in self.learner_connectors.items()
            },
            connector_state=copy.deepcopy(self.connector_state),
            inference=checkpoint_recipes(self, checkpoint.get("state_dict", {})),
            rng_states=rng.capture({"minibatch": self.minibatch_generator}),
        )
        if self._owns_datamodule() and self._default_datamodule is not None:
            checkpoint[type(self._default_datamodule).__qualname__] = self._default_datamodule.state_dict()
        ckpt.add_checksum(checkpoint)  # last: Lightning calls this hook after writing everything else

    def _check_weight_shapes(self, state_dict: dict[str, torch.Tensor]) -> None:
        """One clear error when the checkpoint's networks do not fit this algorithm's."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = [
            f"{k}: checkpoint {tuple(v.shape)} vs here {tuple(own[k].shape)}"
            for k, v in state_dict.items()
            if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
        ]
        if missing or unexpected or mismatched:
            raise CheckpointError(
                "The checkpoint's networks do not fit this algorithm (another env, model_config or "
                f"policies?): shape mismatches {mismatched[:3]}, missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}."
            )

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        *,
        trusted_classes: ckpt.TrustedClasses = (),
        **kwargs: Any,
    ) -> Self:
        """Lightning's ``load_from_checkpoint`` through lightning-rl's reader.

        The file is read once with ``weights_only=True`` (plain data only; ``weights_only`` is
        accepted for Lightning's signature and cannot be turned off), a checkpoint of another
        algorithm is refused naming it before anything is built, and the keys LightningCLI adds
        to the hyperparameters (``_class_path``, ``_instantiator``) are dropped instead of being
        resolved to a class. ``kwargs`` replace hyperparameters, as in Lightning. Names in the
        file resolve only by the checkpoint rules (``docs/security.md``); ``trusted_classes``
        allows more.
        """
        checkpoint = ckpt.load_checkpoint(
            checkpoint_path, map_location=map_location or "cpu", trusted_classes=trusted_classes
        )
        ckpt.check_algorithm(checkpoint, cls, source=f"Checkpoint {str(checkpoint_path)!r}")
        init_kwargs = ckpt.algorithm_init_kwargs(checkpoint)
        if hparams_file is not None:
            from_file = load_hparams_from_yaml(hparams_file)
            init_kwargs = ckpt.algorithm_init_kwargs({"hyper_parameters": from_file})
        with ckpt.name_guard(f"Checkpoint {str(checkpoint_path)!r}", trusted_classes):
            algorithm = cls(**{**init_kwargs, **kwargs})
            algorithm.on_load_checkpoint(checkpoint)
        algorithm.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        tensors = (t for t in checkpoint["state_dict"].values() if isinstance(t, torch.Tensor))
        device = next((t.device for t in tensors), None)
        return algorithm if device is None else algorithm.to(device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        section = ckpt.check_and_migrate(checkpoint)
        ckpt.check_algorithm(checkpoint, type(self))
        for policy_id, added in section.get("added_policies", {}).items():
            if policy_id not in self.policies:  # snapshots made during training (self-play)
                self.add_policy(policy_id, added["from_policy"], trainable=added["trainable"])
        self._check_weight_shapes(checkpoint.get("state_dict", {}))
        for policy_id, states in section.get("learner_connector_state", {}).items():
            for connector, state in zip(self.learner_connectors.get(policy_id, []), states, strict=False):
                connector.set_state(state)
        rng.restore(section.get("rng_states", {}), {"minibatch": self.minibatch_generator})
        state = section.get("connector_state")
        if state:
            unknown = set(state) - set(self.env_to_module_pipelines)
            if unknown:
                raise CheckpointError(
                    f"The checkpoint has connector state for policies {sorted(unknown)}, but this algorithm "
                    f"has policies {self.policy_ids}."
                )
            for policy_id, policy_state in state.items():
                self.env_to_module_pipelines[policy_id].set_state(policy_state)
                self.connector_state[policy_id] = policy_state
        key = self.datamodule_class.__qualname__
        if self._owns_datamodule() and key in checkpoint:
            if self._default_datamodule is not None:
                self._default_datamodule.load_state_dict(checkpoint[key])
            else:
                self._pending_datamodule_state = checkpoint[key]
