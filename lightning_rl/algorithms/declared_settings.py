"""The constructor's object-valued settings: resolved once to run, stored as plain data.

Some settings are objects or names of objects: connectors (instances, factories, specs), the
model config, the RLlib callbacks, the policy-mapping function, an RLModule spec, a custom
evaluation function, the external-env config. The algorithm needs
the objects to run and plain data to store, because hyperparameters go into checkpoints and
YAML files and are read back under the name rules of :mod:`lightning_rl._imports`. Both
directions live here, with the checks that need the resolved objects, so ``Algorithm.__init__``
reads as a list of steps and a new object-valued setting has one place to go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning_rl.algorithms import settings_validation as validation
from lightning_rl.algorithms.multi_agent import normalize_policies, resolve_mapping_fn
from lightning_rl.algorithms.policy_set import EnvProbe, connector_specs, storable_policies
from lightning_rl.data.evaluation import (
    check_evaluation_settings,
    resolve_evaluation_function,
    storable_evaluation_function,
)
from lightning_rl.env_runners.rllib_callbacks import resolve_callbacks
from lightning_rl.envs.external.config import resolve_external_config
from lightning_rl.errors import ConfigError
from lightning_rl.modules.rl_module import plain_rl_module_spec, policies_with_specs, resolve_rl_module_specs
from lightning_rl.offline.config import check_output_settings


@dataclass
class DeclaredSettings:
    """The resolved objects behind the object-valued settings of one algorithm."""

    env_to_module: list[dict]  # connector specs (plain), memory models' extra connector included
    module_to_env: list[dict]
    learner: list[dict]
    model_config: dict | None  # plain (a DefaultModelConfig becomes its dict)
    rl_module_specs: Any
    policies: Any  # as given, with the RLModule specs' policy ids added
    policy_settings: dict[str, Any]  # policy id -> its settings (spaces, "random", None)
    mapping_fn: Any
    stored_mapping: Any  # the mapping as plain data (an import path, a dict or None)
    external: Any  # ExternalEnvConfig or None
    rllib_callbacks: Any
    custom_evaluation_function: Any

    @classmethod
    def resolve(cls, given: Mapping[str, Any], probe: EnvProbe) -> DeclaredSettings:
        """Resolve the settings from the constructor's arguments as given (``self.hparams``
        right after the first ``save_hyperparameters``); connector factories get the probed env."""
        e2m, m2e, learner = connector_specs(
            probe,
            given.get("env_to_module_connector"),
            given.get("module_to_env_connector"),
            given.get("learner_connector"),
            given.get("model_config"),
        )
        rl_module_specs = resolve_rl_module_specs(given.get("rl_module_spec"))
        policies = policies_with_specs(given.get("policies"), rl_module_specs)
        policy_settings = normalize_policies(policies)
        mapping_fn, stored_mapping = resolve_mapping_fn(given.get("policy_mapping_fn"), list(policy_settings))
        return cls(
            env_to_module=e2m,
            module_to_env=m2e,
            learner=learner,
            model_config=validation.plain_model_config(given.get("model_config")),
            rl_module_specs=rl_module_specs,
            policies=policies,
            policy_settings=policy_settings,
            mapping_fn=mapping_fn,
            stored_mapping=stored_mapping,
            external=resolve_external_config(given.get("external")),
            rllib_callbacks=resolve_callbacks(given.get("callbacks")),
            custom_evaluation_function=resolve_evaluation_function(given.get("custom_evaluation_function")),
        )

    def plain(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The hyperparameters to store for these settings (plain data: what checkpoints and
        LightningCLI YAML files hold), from the constructor's arguments as given."""
        output, to_train = given.get("output"), given.get("policies_to_train")
        return {
            "env_to_module_connector": self.env_to_module,
            "module_to_env_connector": self.module_to_env,
            "learner_connector": self.learner,
            "model_config": dict(self.model_config or {}),
            "policies": storable_policies(self.policies, self.policy_settings),
            "policy_mapping_fn": self.stored_mapping,
            "policies_to_train": None if to_train is None else list(to_train),
            "external": None if self.external is None else self.external.to_dict(),
            "output": None if output is None else str(output),
            "output_config": dict(given.get("output_config") or {}),
            "callbacks": None if self.rllib_callbacks is None else self.rllib_callbacks.to_plain(),
            "rl_module_spec": plain_rl_module_spec(given.get("rl_module_spec")),
            "custom_evaluation_function": storable_evaluation_function(self.custom_evaluation_function),
        }

    def validate(self, hparams: Mapping[str, Any], is_multi_agent: bool) -> None:
        """The checks every algorithm shares, on the stored hyperparameters, before anything is
        built (one clear error each)."""
        validation.validate_common(hparams)
        check_evaluation_settings(hparams)
        check_output_settings(hparams.get("output"), hparams.get("output_config"), is_multi_agent)
        if self.external is not None and is_multi_agent:
            raise ConfigError("external= serves single-agent policies; the env is a MultiAgentEnv.")
