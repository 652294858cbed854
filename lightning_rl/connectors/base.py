"""Connector base classes and the pipeline that chains them.

Connectors are small torch-op pieces on the seams between env and module:

* env-to-module: raw env observations -> what the network eats (flattening, filters, stacking),
* module-to-env: what the network emits -> what the env accepts (unsquashing, clipping).

The same pipeline runs in every EnvRunner, in evaluation and in :class:`~lightning_rl.Policy`
inference, so a trained policy sees exactly what it saw in training. Connectors are rebuilt
from plain data (``{"name": ..., "config": {...}}``), which is what travels to Ray actors and
what checkpoints store; their running state (filter statistics) travels separately and is
merged across runners by :meth:`Connector.merge_deltas`.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import torch

from lightning_rl import registry
from lightning_rl._imports import import_object, object_path, subclass_of
from lightning_rl.errors import ConfigError, SpaceError

SEAM_SETTINGS = {
    "env_to_module": "env_to_module_connector",
    "module_to_env": "module_to_env_connector",
    "learner": "learner_connector",
}
_SEAM_NAMES = {
    "env_to_module": "an env-to-module",
    "module_to_env": "a module-to-env",
    "learner": "a learner",
}


class Connector:
    """Base class: remembers its constructor arguments so it can be rebuilt anywhere.

    ``seam`` says where a connector works (``"env_to_module"``, ``"module_to_env"`` or
    ``"learner"``; None: the subclass did not say), so a connector given to the wrong setting is
    one clear error naming the right one instead of a failure inside its ``setup``.
    """

    seam: ClassVar[str | None] = None

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"{cls.__name__}: {exc}") from exc
        bound.apply_defaults()
        config = dict(bound.arguments)
        config.pop(next(iter(config)))  # self
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                config.update(config.pop(name, {}))
            elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                config.pop(name, None)
        obj._config = config
        return obj

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments: ``type(self)(**get_config())`` rebuilds an equal connector."""
        return dict(self._config)

    # -- state that changes while sampling (filters) -------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Load the state produced by :meth:`get_state` (or :meth:`merge_deltas`)."""

    def pop_delta(self) -> dict[str, Any] | None:
        """What this copy learned since the last pop, for merging across runners."""
        return None

    @classmethod
    def merge_deltas(cls, state: dict[str, Any], deltas: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return state

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"


class EnvToModule(Connector, abc.ABC):
    """Turns a batch of raw env observations (one row per env copy) into module input.

    Subclasses implement :meth:`setup` (check the input space, return the output space) and
    :meth:`__call__`. Stateful-per-episode pieces (frame stacks, previous actions) also use
    :meth:`reset`, :meth:`episode_start` and :meth:`record_step`, which the runner calls in
    that order of life: reset once, episode_start at every episode start, record_step after
    every env step.
    """

    seam: ClassVar[str | None] = "env_to_module"

    def setup(self, observation_space: gym.Space) -> gym.Space:
        return observation_space

    @abc.abstractmethod
    def __call__(self, obs: Any, *, env_ids: torch.Tensor | None = None, update: bool = True) -> Any: ...

    def reset(self, num_envs: int) -> None:
        """Allocate per-env state for ``num_envs`` env copies."""

    def episode_start(self, env_ids: torch.Tensor) -> None:
        """Forget per-episode state of the given env copies."""

    def record_step(self, actions: torch.Tensor, rewards: torch.Tensor) -> None:
        """See the actions taken and rewards received in the step that just happened."""

    def as_module(self) -> torch.nn.Module | None:
        """A frozen, pure-tensor version for export (ONNX/TorchScript), or None if impossible."""
        return None


class ModuleToEnv(Connector, abc.ABC):
    """Turns module actions into env actions (after sampling; the sampled action is stored)."""

    seam: ClassVar[str | None] = "module_to_env"

    def setup(self, action_space: gym.Space) -> gym.Space:
        """Check the env's action space; return the space the module must emit."""
        return action_space

    @abc.abstractmethod
    def __call__(self, actions: torch.Tensor) -> torch.Tensor: ...

    def as_module(self) -> torch.nn.Module | None:
        return None


ConnectorSpec = dict[str, Any]  # {"name": registry name or import path, "config": {...}}
ConnectorLike = Connector | str | dict | type | Callable[..., Any]


def connector_spec(connector: Connector) -> ConnectorSpec:
    """The plain-data description of a connector instance."""
    cls = type(connector)
    name = object_path(cls)
    for registered in registry.connectors.entries():
        if registered.target and name and registered.target == name:
            name = registered.name
            break
        if registered.loaded and registered.obj is cls:
            name = registered.name
            break
    if name is None:
        raise ConfigError(f"Connector class {cls!r} is not importable; define it at module level.")
    return {"name": name, "config": connector.get_config()}


def check_seam(connectors: Sequence[Any], seam: str) -> None:
    """One clear error for a connector given to the wrong setting (e.g. a learner connector
    as ``env_to_module_connector``), naming the setting it belongs to."""
    for connector in connectors:
        own = getattr(connector, "seam", None)
        if own in SEAM_SETTINGS and own != seam:
            raise ConfigError(
                f"{type(connector).__name__} is {_SEAM_NAMES[own]} connector: pass it as "
                f"{SEAM_SETTINGS[own]}, not {SEAM_SETTINGS[seam]}."
            )


def build_connector(spec: ConnectorSpec) -> Connector:
    name = spec["name"]
    if name in registry.connectors:
        cls = registry.connectors.get(name)
    else:
        try:
            cls = import_object(name, kind="connector", accept=subclass_of(Connector))
        except (ImportError, AttributeError):
            cls = registry.connectors.get(name)  # raises with the list of choices
    return cls(**spec.get("config", {}))


def call_connector_factory(factory: Callable[..., Any], args: Sequence[Any]) -> Any:
    """Call a connector factory with as many of ``args`` as its signature asks for.

    RLlib's factories come in several shapes: ``lambda env: ...`` (older), ``lambda env,
    spaces, device: ...`` (2.4x env-to-module), ``lambda obs_space, act_space: ...`` (learner),
    ``lambda *args, **kwargs: ...``. The signature decides, so a ``TypeError`` raised inside
    the factory is reported as itself, not mistaken for a signature mismatch.
    """
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: give it the first argument
        return factory(*args[:1])
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return factory(*args)
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(required) > len(args):
        raise ConfigError(
            f"Connector factory {factory!r} needs {len(required)} arguments "
            f"({', '.join(p.name for p in required)}); connector factories are called with at most "
            f"{len(args)}: {_FACTORY_ARGUMENT_NAMES.get(len(args), 'env')}."
        )
    return factory(*args[: len(positional)])


_FACTORY_ARGUMENT_NAMES = {
    1: "(env)",
    2: "(input_observation_space, input_action_space)",
    3: "(env, spaces, device)",
}


def env_connector_factory_args(env: Any) -> tuple[Any, dict[str, tuple[Any, Any]], torch.device]:
    """What RLlib passes to env-to-module/module-to-env factories: ``(env, spaces, device)``.

    ``spaces`` holds ``"__env__"`` and ``"__env_single__"`` (the env's observation and action
    spaces; one env here, so both are the same), as in RLlib's EnvRunners.
    """
    pair = (getattr(env, "observation_space", None), getattr(env, "action_space", None))
    return env, {"__env__": pair, "__env_single__": pair}, torch.device("cpu")


def learner_connector_factory_args(
    env_to_module_specs: Sequence[ConnectorSpec], observation_space: Any, action_space: Any
) -> tuple[Any, Any]:
    """What RLlib passes to learner-connector factories: ``(input_observation_space,
    input_action_space)``, the module-side spaces (after the env-to-module connectors); both
    None for multi-agent envs, whose spaces are per policy."""
    if not isinstance(observation_space, gym.Space):
        return None, None
    pipeline = EnvToModulePipeline.from_specs(env_to_module_specs, observation_space, action_space)
    return pipeline.output_space, action_space


def normalize_connector_specs(
    value: Any, env: Any = None, *, factory_args: Sequence[Any] | None = None
) -> list[ConnectorSpec]:
    """Accept what users write (instance, name, dict, class, factory, list) -> specs.

    A factory (any other callable) is called once, with as many of ``factory_args`` (default
    ``(env,)``) as its signature takes (see :func:`call_connector_factory`); everything ends
    up as plain data so it can be saved in hyperparameters and sent to actors.
    """
    args = tuple(factory_args) if factory_args is not None else (env,)
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [spec for item in value for spec in normalize_connector_specs(item, factory_args=args)]
    if isinstance(value, Connector):
        return [connector_spec(value)]
    if isinstance(value, str):
        return [{"name": value, "config": {}}]
    if isinstance(value, dict):
        if "class_path" in value:  # LightningCLI / jsonargparse style
            return [{"name": value["class_path"], "config": dict(value.get("init_args", {}))}]
        if "name" not in value:
            raise ConfigError(f"A connector spec needs a 'name': {value!r}")
        return [{"name": value["name"], "config": dict(value.get("config", {}))}]
    if isinstance(value, type) and issubclass(value, Connector):
        return [connector_spec(value())]
    if callable(value):
        return normalize_connector_specs(call_connector_factory(value, args), factory_args=args)
    raise ConfigError(f"Cannot use {value!r} as a connector; pass a Connector, a name, or a list of them.")


class ConnectorPipeline:
    """An ordered list of connectors of one seam with their spaces worked out."""

    def __init__(
        self, connectors: Sequence[Connector], input_space: gym.Space, action_space: gym.Space | None = None
    ) -> None:
        self.connectors = list(connectors)
        check_seam(self.connectors, "env_to_module")
        self.input_space = input_space
        space = input_space
        for connector in self.connectors:
            if hasattr(connector, "set_action_space"):
                # Connectors that encode actions (previous actions) need the env's action space.
                if action_space is None:
                    raise SpaceError(f"{connector!r} needs the env's action space, but none was given.")
                connector.set_action_space(action_space)
            try:
                space = connector.setup(space)
            except SpaceError:
                raise
            except Exception as exc:
                raise SpaceError(f"{connector!r} does not fit the space {space}: {exc}") from exc
        self.output_space = space

    @classmethod
    def from_specs(
        cls, specs: Sequence[ConnectorSpec], input_space: gym.Space, action_space: gym.Space | None = None
    ) -> ConnectorPipeline:
        if cls is ModuleToEnvPipeline:
            return cls([build_connector(spec) for spec in specs], input_space)
        return cls([build_connector(spec) for spec in specs], input_space, action_space)

    def __len__(self) -> int:
        return len(self.connectors)

    def __iter__(self):
        return iter(self.connectors)

    def get_state(self) -> list[dict[str, Any]]:
        return [c.get_state() for c in self.connectors]

    def set_state(self, state: Sequence[dict[str, Any]] | None) -> None:
        if not state:
            return
        if len(state) != len(self.connectors):
            raise ConfigError(
                f"Connector state has {len(state)} entries but the pipeline has {len(self.connectors)} "
                f"connectors ({self.connectors!r})."
            )
        for connector, s in zip(self.connectors, state, strict=True):
            connector.set_state(s)

    def pop_deltas(self) -> list[dict[str, Any] | None]:
        return [c.pop_delta() for c in self.connectors]

    def merge_deltas(
        self, state: Sequence[dict[str, Any]], deltas_per_runner: Sequence[Sequence[dict[str, Any] | None]]
    ) -> list[dict[str, Any]]:
        merged = []
        for i, connector in enumerate(self.connectors):
            deltas = [d[i] for d in deltas_per_runner if d and d[i] is not None]
            merged.append(type(connector).merge_deltas(state[i], deltas) if deltas else state[i])
        return merged


class EnvToModulePipeline(ConnectorPipeline):
    connectors: list[EnvToModule]

    def __call__(self, obs: Any, *, env_ids: torch.Tensor | None = None, update: bool = True) -> Any:
        for connector in self.connectors:
            obs = connector(obs, env_ids=env_ids, update=update)
        return obs

    def reset(self, num_envs: int) -> None:
        for connector in self.connectors:
            connector.reset(num_envs)

    def episode_start(self, env_ids: torch.Tensor) -> None:
        for connector in self.connectors:
            connector.episode_start(env_ids)

    def record_step(self, actions: torch.Tensor, rewards: torch.Tensor) -> None:
        for connector in self.connectors:
            connector.record_step(actions, rewards)


class ModuleToEnvPipeline(ConnectorPipeline):
    """Chained module-to-env connectors; built from the env's action space backwards."""

    connectors: list[ModuleToEnv]

    def __init__(self, connectors: Sequence[Connector], env_action_space: gym.Space) -> None:
        self.connectors = list(connectors)
        check_seam(self.connectors, "module_to_env")
        self.input_space = env_action_space
        space = env_action_space
        for connector in reversed(self.connectors):
            try:
                space = connector.setup(space)
            except SpaceError:
                raise
            except Exception as exc:
                raise SpaceError(f"{connector!r} does not fit the action space {space}: {exc}") from exc
        self.module_action_space = space
        self.output_space = env_action_space

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        for connector in self.connectors:
            actions = connector(actions)
        return actions
