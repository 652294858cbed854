"""The algorithm's public policy API: ``algo.policy_ids``, ``add_policy``, ``get_policy`` ...

The data lives in the algorithm's :class:`~lightning_rl.algorithms.policy_set.PolicySet`
(spaces, pipelines, connector state, mapping) and its ``policies`` ``nn.ModuleDict`` (the
networks). :class:`AlgorithmPolicies` keeps the names users, runners, checkpoints and
subclasses have always used. It is a mixin rather than an object because these methods need
the ModuleDict, which must stay a LightningModule attribute for its state-dict keys
(``policies.<id>.*``), and because they are the algorithm's own public methods.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from torch import nn

from lightning_rl.algorithms.multi_agent import RANDOM_POLICY, RandomPolicyModule
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.algorithms.policy_set import PolicySet
from lightning_rl.algorithms.policy_transfer import load_policy_weights
from lightning_rl.errors import ConfigError
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
        return module

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
