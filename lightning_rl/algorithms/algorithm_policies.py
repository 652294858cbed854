"""The algorithm's public policy API: ``algo.policy_ids``, ``add_policy``, ``get_policy`` ...

The data lives in the algorithm's :class:`~lightning_rl.algorithms.policy_set.PolicySet`
(spaces, pipelines, connector state, mapping) and its ``policies`` ``nn.ModuleDict`` (the
networks). :class:`AlgorithmPolicies` keeps the names users, runners, checkpoints and
subclasses have always used. It is a mixin rather than an object because these methods need
the ModuleDict, which must stay a LightningModule attribute for its state-dict keys
(``policies.<id>.*``), and because they are the algorithm's own public methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from lightning_rl.algorithms.multi_agent import RANDOM_POLICY, RandomPolicyModule
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.algorithms.policy_set import PolicySet
from lightning_rl.algorithms.policy_transfer import load_policy_weights
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.errors import ConfigError, UnknownNameError
from lightning_rl.modules.rl_module import RLModule, RLModuleSpec, resolve_module_class
from lightning_rl.policy import Policy


class _PolicySetAttribute:
    """``algorithm.<name>`` reads (and writes) ``algorithm.policy_set.<name>``: the names
    callers have always used stay, and the data stays in one place."""

    def __init__(self, name: str | None = None) -> None:
        self.target = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.target = self.target or name

    def __get__(self, algorithm: Any, owner: type | None = None) -> Any:
        return self if algorithm is None else getattr(algorithm.policy_set, self.target)

    def __set__(self, algorithm: Any, value: Any) -> None:
        setattr(algorithm.policy_set, self.target, value)


class AlgorithmPolicies:
    """The policy API of :class:`~lightning_rl.algorithms.Algorithm` over its :class:`PolicySet`
    (``policy_set``) and its per-policy network modules (``policies``, an ``nn.ModuleDict``)."""

    policy_set: PolicySet
    policies: nn.ModuleDict
    policy_ids = _PolicySetAttribute()
    env_policy_spaces = _PolicySetAttribute()
    env_to_module_pipelines = _PolicySetAttribute()
    module_to_env_specs = _PolicySetAttribute()
    policy_spaces = _PolicySetAttribute()
    connector_state = _PolicySetAttribute()
    agent_policies = _PolicySetAttribute()
    policy_mapping_fn = _PolicySetAttribute("mapping_fn")

    def _build_module(self, policy_id: str) -> PolicyModule:
        obs_space, action_space = self.policy_spaces[policy_id]
        if self.policy_set.settings.get(policy_id) == RANDOM_POLICY:
            return RandomPolicyModule(obs_space, action_space, self.model_config)
        return self.build_policy_module(policy_id, obs_space, action_space)

    def add_policy(self, policy_id: str, from_policy: str, trainable: bool = False) -> PolicyModule:
        """Add a policy with ``from_policy``'s spaces, connectors and current weights.

        Self-play and league training snapshot the learner this way: a frozen copy
        (``trainable=False``) that the mapping function can then pit against the learner.
        EnvRunners build it before their next sample.
        """
        self.policy_set.add_copy(policy_id, from_policy, trainable)
        module = self._build_module(policy_id).to(self.device)
        module.load_state_dict(self.policies[from_policy].state_dict())
        self._register_module(policy_id, module, trainable)
        return module

    # -- RLlib's module API (algorithm.get_module / add_module / remove_module) ---------------
    def get_module(self, module_id: str = DEFAULT_POLICY_ID) -> nn.Module:
        """The learner's module of one policy (RLlib's ``get_module``): a user's RLModule, else the
        default networks (a :class:`PolicyModule`); both have ``get_state``/``set_state``."""
        module = self.policies[self._known_module(module_id)]
        rl_module = getattr(module, "rl_module", None)
        return rl_module if isinstance(rl_module, RLModule) else module

    def add_module(
        self,
        module_id: str,
        module_spec: RLModuleSpec,
        *,
        new_agent_to_module_mapping_fn: Callable[..., str] | None = None,
        new_should_module_be_updated: Any = None,
    ) -> nn.Module:
        """RLlib's ``add_module``: a new policy built from ``module_spec``, freshly initialised.

        The new module is built like the existing policy whose module matches the spec (same
        class, spaces and model config; RLlib's self-play callback passes
        ``RLModuleSpec.from_module(main_module)``) and gets that policy's connectors; copy
        weights in with ``set_state``. It trains only if ``new_should_module_be_updated`` (a
        list of module ids, or a predicate on a module id) says so, or, left None, if no
        ``policies_to_train`` was configured (RLlib's "every module"). EnvRunners build it, and
        switch to ``new_agent_to_module_mapping_fn``, before their next sample.
        """
        if module_id in self.policies:
            raise ConfigError(f"Module {module_id!r} exists already; the modules are {self.policy_ids}.")
        template = self._template_for(module_spec)
        trainable = self._should_train(module_id, new_should_module_be_updated)
        self.policy_set.add_copy(module_id, template, trainable)
        module = self._build_module(module_id).to(self.device)
        self._register_module(module_id, module, trainable)
        if new_agent_to_module_mapping_fn is not None:
            self.set_policy_mapping_fn(new_agent_to_module_mapping_fn)
        return self.get_module(module_id)

    def remove_module(
        self, module_id: str, *, new_agent_to_module_mapping_fn: Callable[..., str] | None = None
    ) -> None:
        """RLlib's ``remove_module`` for modules added during the run (the configured ones stay:
        hyperparameters and checkpoints name them). A trained module cannot leave mid-training."""
        self._known_module(module_id)
        if module_id in self.policies_to_train and self._optimizer_cache is not None:
            raise ConfigError(
                f"Module {module_id!r} is being trained (policies_to_train {self.policies_to_train}); "
                "only frozen modules can be removed mid-training."
            )
        self.policy_set.remove_added(module_id)
        del self.policies[module_id]
        if new_agent_to_module_mapping_fn is not None:
            self.set_policy_mapping_fn(new_agent_to_module_mapping_fn)

    def set_module_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """``{module_id: module.get_state()}`` into the learner's modules (tensors only); the
        runners load them with the next sample's weights."""
        if not isinstance(states, Mapping):
            raise ConfigError(f"Module states must be {{module_id: state}}, got {type(states).__name__}.")
        for module_id in states:
            self._known_module(module_id)
        for module_id, state in states.items():
            if not isinstance(state, Mapping):
                raise ConfigError(
                    f"The state of module {module_id!r} must be a dict of tensors (module.get_state()), "
                    f"got {type(state).__name__}."
                )
            bad = {k: type(v).__name__ for k, v in state.items() if not isinstance(v, torch.Tensor)}
            if bad:
                raise ConfigError(
                    f"The state of module {module_id!r} holds non-tensors {bad}; states are tensors only."
                )
            module = self.get_module(module_id)
            own = module.state_dict()
            missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            if missing or unexpected:
                raise ConfigError(
                    f"The state given for module {module_id!r} does not fit it: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]} (its keys: {sorted(own)[:8]}...)."
                )
            with torch.no_grad():
                module.set_state({k: v.to(own[k].device) for k, v in state.items()})

    def _known_module(self, module_id: str) -> str:
        if module_id not in self.policies:
            raise UnknownNameError(f"Unknown module id {module_id!r}; the modules are {self.policy_ids}.")
        return module_id

    def _template_for(self, spec: RLModuleSpec) -> str:
        """The existing policy a new module is built like: the spec's class, spaces and model config."""
        if not isinstance(spec, RLModuleSpec):
            raise ConfigError(f"add_module needs an RLModuleSpec, got {type(spec).__name__}.")
        candidates = []
        for policy_id in self.policy_ids:
            module = self.get_module(policy_id)
            if isinstance(module, RandomPolicyModule):  # policies={"x": "random"}: not a network
                continue
            mine = RLModuleSpec.from_module(module)
            wanted_class = resolve_module_class(spec.module_class) if spec.module_class is not None else None
            if wanted_class is not mine.module_class:
                continue
            if spec.observation_space is not None and spec.observation_space != mine.observation_space:
                continue
            if spec.action_space is not None and spec.action_space != mine.action_space:
                continue
            if spec.model_config and dict(spec.model_config) != dict(mine.model_config or {}):
                continue
            candidates.append(policy_id)
        if not candidates:
            name = getattr(spec.module_class, "__name__", spec.module_class) or "the default networks"
            raise ConfigError(
                f"add_module builds a module like an existing one, and none of {self.policy_ids} is a "
                f"{name} with the spec's spaces and model_config; pass "
                "RLModuleSpec.from_module(algorithm.get_module(id))."
            )
        trained = [pid for pid in candidates if pid in self.policies_to_train]
        return (trained or candidates)[0]

    def _should_train(self, module_id: str, should_update: Any) -> bool:
        if should_update is None:
            return self.hparams.policies_to_train is None
        if callable(should_update):
            wanted = {pid for pid in [*self.policy_ids, module_id] if should_update(pid)}
        elif isinstance(should_update, list | tuple | set | frozenset):
            wanted = set(should_update)
        else:
            raise ConfigError(
                "new_should_module_be_updated must be None, a list of module ids or a callable(module_id), "
                f"got {should_update!r}."
            )
        if wanted - {module_id} != set(self.policies_to_train):
            raise ConfigError(
                f"new_should_module_be_updated {sorted(wanted)} changes which existing modules train "
                f"({self.policies_to_train}); it may only say whether {module_id!r} trains."
            )
        if self.hparams.policies_to_train is not None:
            added = [module_id] if module_id in wanted else []
            self.hparams.policies_to_train = [*self.policies_to_train, *added]
        return module_id in wanted

    def _register_module(self, policy_id: str, module: PolicyModule, trainable: bool) -> None:
        """Put a new policy's module in place: frozen, or with its parameters in the optimizer."""
        if not trainable:
            module.requires_grad_(False)
            module.trainable = False
        self.policies[policy_id] = module
        if trainable and self._optimizer_cache is not None:
            optimizers = self.trainer.optimizers if self._trainer is not None else []
            if len(optimizers) != 1:
                raise ConfigError(
                    "A trainable policy can be added mid-training only to an algorithm with one optimizer; "
                    f"{type(self).__name__} has {len(optimizers)}."
                )
            optimizers[0].add_param_group({"params": [p for p in module.parameters() if p.requires_grad]})

    def set_policy_mapping_fn(self, fn: Any) -> None:
        """Change which agent uses which policy from the next sample on (self-play, leagues)."""
        self.policy_set.set_mapping_fn(fn)

    @property
    def observation_space(self) -> spaces.Space:
        """Module-side observation space of the single policy (after env-to-module connectors)."""
        return self.policy_spaces[self.policy_set.single_policy_id()][0]

    @property
    def action_space(self) -> spaces.Space:
        """Module-side action space of the single policy (before module-to-env connectors)."""
        return self.policy_spaces[self.policy_set.single_policy_id()][1]

    @property
    def module(self) -> PolicyModule:
        """The only policy's module (single-agent algorithms)."""
        return self.policies[self.policy_set.single_policy_id()]

    def policy_env_spaces(self, policy_id: str) -> tuple[spaces.Space, spaces.Space]:
        """Env-side observation and action space of one policy (before its env-to-module and
        after its module-to-env connectors); what inference outside the runners starts from."""
        return self.env_policy_spaces[policy_id]

    def get_policy(self, policy_id: str | None = None) -> Policy:
        """A :class:`~lightning_rl.policy.Policy` snapshot of one policy, with its connectors."""
        return Policy.from_algorithm(self, policy_id)

    @property
    def policies_to_train(self) -> list[str]:
        wanted = self.hparams.policies_to_train
        if wanted is not None:
            return list(wanted)
        return [pid for pid in self.policy_ids if getattr(self.policies[pid], "trainable", True)]

    def policy_batches(self, batch: Any) -> list[tuple[str, Any]]:
        """``(policy_id, batch)`` pairs of the policies being trained, for ``training_step``."""
        if isinstance(batch, dict):
            trained = self.policies_to_train
            return [(pid, b) for pid, b in batch.items() if pid in trained]
        return [(self.policy_set.single_policy_id(), batch)]

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
        load_policy_weights(
            self,
            source,
            policy_id=policy_id,
            source_policy_id=source_policy_id,
            include_value_function=include_value_function,
        )
