"""RLlib's RLModule surface: a user's whole model (policy and value networks) as one module.

RLlib users write custom models as ``RLModule`` subclasses: ``setup()`` builds the layers, and
``_forward_inference`` / ``_forward_exploration`` / ``_forward_train`` (or one ``_forward``)
map a batch dict keyed by :class:`Columns` (``batch[Columns.OBS]``) to outputs such as
``Columns.ACTION_DIST_INPUTS`` (logits; mean and log-std for Box actions), ``Columns.ACTIONS``
(a module that picks actions itself, e.g. :class:`RandomRLModule`) and, for PPO, values through
:class:`ValueFunctionAPI` ``compute_values`` (or ``Columns.VF_PREDS`` from ``forward_train``).
An :class:`RLModuleSpec` (or a :class:`MultiRLModuleSpec` of them, one per policy id) names the
class, given to ``config.rl_module(rl_module_spec=...)``; the code ports from RLlib by imports.

This module holds the user-facing base classes and the runner side: the EnvRunners run
:class:`RLModuleInferencePolicy`, an :class:`InferencePolicy` that builds the module from its
spec and turns its forward outputs into actions. The learner side is each algorithm's: the module
as PPO's policy and value networks (``lightning_rl.algorithms.rl_module_adapter``), as IMPALA's
and APPO's (``lightning_rl.algorithms.impala.rl_module``), as BC's policy
(``lightning_rl.algorithms.marwil.rl_module``); the helpers below turn their batches into a
module's input.

A class named by a string (a checkpoint, a YAML config) resolves through the checked import
rules (:mod:`lightning_rl._imports`): without an allow-list only lightning-rl's own RLModule
classes; a user's class must be allowed (``trusted_classes=[MyModule]``), as custom models are.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDictBase
from torch import nn

from lightning_rl._imports import import_object, object_path
from lightning_rl.constants import DEFAULT_POLICY_ID
from lightning_rl.errors import ConfigError, SpaceError
from lightning_rl.modules.distributions import ActionDistribution, DiagGaussianDistribution, distribution_for
from lightning_rl.modules.initializers import canonical_initializer_settings
from lightning_rl.modules.model_config import DefaultModelConfig
from lightning_rl.modules.policy_networks import MASK_KEY, InferencePolicy, PolicySpec
from lightning_rl.serialization import from_plain, to_plain

#: The most negative float32 (RLlib's ``FLOAT_MIN``): added to logits it removes an action.
FLOAT_MIN = float(torch.finfo(torch.float32).min)
FLOAT_MAX = float(torch.finfo(torch.float32).max)

#: The keys of the encoder output dict of RLlib's default modules.
ENCODER_OUT = "encoder_out"
ACTOR = "actor"
CRITIC = "critic"

_F = TypeVar("_F", bound=Callable[..., Any])


class Columns:
    """RLlib's column names of the batch dicts RLModules read and write (same strings)."""

    OBS = "obs"
    INFOS = "infos"
    ACTIONS = "actions"
    ACTIONS_FOR_ENV = "actions_for_env"
    REWARDS = "rewards"
    TERMINATEDS = "terminateds"
    TRUNCATEDS = "truncateds"
    NEXT_OBS = "new_obs"
    EPS_ID = "eps_id"
    AGENT_ID = "agent_id"
    MODULE_ID = "module_id"
    SEQ_LENS = "seq_lens"
    T = "t"
    STATE_IN = "state_in"
    STATE_OUT = "state_out"
    EMBEDDINGS = "embeddings"
    ACTION_DIST_INPUTS = "action_dist_inputs"
    ACTION_PROB = "action_prob"
    ACTION_LOGP = "action_logp"
    VF_PREDS = "vf_preds"
    VALUES_BOOTSTRAPPED = "values_bootstrapped"
    ADVANTAGES = "advantages"
    VALUE_TARGETS = "value_targets"
    INTRINSIC_REWARDS = "intrinsic_rewards"
    LOSS_MASK = "loss_mask"


def override(parent: type) -> Callable[[_F], _F]:
    """RLlib's ``@override(Parent)``: documents (and checks) that ``Parent`` has the method."""

    def decorate(method: _F) -> _F:
        name = getattr(method, "__name__", None)
        if name is not None and not hasattr(parent, name):
            raise NameError(f"{name} does not override any method of {parent.__name__}.")
        return method

    return decorate


class RLModule(nn.Module):
    """Base class of a user's model (RLlib's ``RLModule``/``TorchRLModule``).

    Subclasses build their layers in :meth:`setup` (called once by ``__init__``) and override
    ``_forward`` (all phases) or ``_forward_inference`` (greedy acting), ``_forward_exploration``
    (acting while training) and ``_forward_train`` (before the loss). Callers use the public
    ``forward_*`` methods. ``model_config`` is the plain dict of the spec (RLlib's keys, plus
    any of the user's own).
    """

    framework = "torch"

    def __init__(
        self,
        config: Any = None,
        *,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
        inference_only: bool | None = None,
        learner_only: bool = False,
        model_config: dict[str, Any] | DefaultModelConfig | None = None,
        catalog_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if config is not None:
            raise ConfigError(
                "RLModule(config=RLModuleConfig) is RLlib's old signature; pass observation_space=, "
                "action_space=, model_config= (RLlib 2.10+ and lightning-rl)."
            )
        nn.Module.__init__(self)
        self.observation_space = observation_space
        self.action_space = action_space
        self.inference_only = bool(inference_only)
        self.learner_only = learner_only
        if isinstance(model_config, DefaultModelConfig):
            model_config = model_config.to_dict()
        self.model_config = dict(model_config or {})
        self.catalog = None
        if getattr(self, "_is_setup", False):
            raise RuntimeError(
                f"{type(self).__name__}.setup() would run twice: override setup(), not __init__."
            )
        self.setup()
        self._is_setup = True

    def setup(self) -> None:
        """Build the module's layers (called once from ``__init__``)."""

    # -- forward passes ----------------------------------------------------------------------
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The generic forward pass behind all three phases unless one is overridden."""
        return {}

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward(batch, **kwargs)

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward(batch, **kwargs)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward(batch, **kwargs)

    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Greedy acting (evaluation, ``explore=False``). Override ``_forward_inference``."""
        return self._forward_inference(batch, **kwargs)

    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Acting while training (``explore=True``). Override ``_forward_exploration``."""
        return self._forward_exploration(batch, **kwargs)

    def forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The pass before the loss. Override ``_forward_train``."""
        if self.inference_only:
            raise RuntimeError(f"forward_train on the inference-only module {type(self).__name__}.")
        return self._forward_train(batch, **kwargs)

    def forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self.forward_train(batch, **kwargs)

    # -- RLlib's other module API ------------------------------------------------------------
    def get_initial_state(self) -> dict[str, Any]:
        return {}

    def is_stateful(self) -> bool:
        return bool(self.get_initial_state())

    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.load_state_dict(dict(state))

    def get_inference_action_dist_cls(self) -> Any:
        """None: the action space's default distribution (categorical; Gaussian over
        ``[mean, log_std]`` for Box actions), greedy (its mode) for inference."""
        return None

    get_exploration_action_dist_cls = get_inference_action_dist_cls
    get_train_action_dist_cls = get_inference_action_dist_cls

    def unwrapped(self) -> RLModule:
        return self

    def as_multi_rl_module(self) -> MultiRLModule:
        from_default = {"default_policy": self}
        return MultiRLModule(from_default)


#: RLlib's torch base class has the same name; here every RLModule is a torch module.
TorchRLModule = RLModule


class ValueFunctionAPI(abc.ABC):
    """RLlib's value-function API: PPO calls ``compute_values`` for GAE and the value loss."""

    @abc.abstractmethod
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """Value estimates ``[B]`` for ``batch[Columns.OBS]`` (``embeddings``: a shared
        encoder's output from ``forward_train``, to skip a second encoder pass)."""


class RandomRLModule(RLModule):
    """Uniformly random actions (RLlib's ``RandomRLModule``): a league or self-play opponent.

    Where the observation carries an ``action_mask`` (PettingZoo's classic games), only legal
    actions are drawn, so a random opponent never forfeits by an illegal move. It has no
    parameters and is never trained (``forward_train`` raises, as RLlib's).
    """

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        mask = obs.get(MASK_KEY) if isinstance(obs, Mapping) else None
        size = _batch_size(obs)
        generator = kwargs.get("generator")
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            if mask is not None:
                probs = mask.float().clamp(min=0)
                probs = torch.where(probs.sum(-1, keepdim=True) > 0, probs, torch.ones_like(probs))
                action = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            else:
                action = torch.randint(int(space.n), (size,), generator=generator)
            return {Columns.ACTIONS: action}  # an index, as the runners' actions (start added later)
        if (
            isinstance(space, spaces.Box)
            and np.all(np.isfinite(space.low))
            and np.all(np.isfinite(space.high))
        ):
            low = torch.as_tensor(space.low, dtype=torch.float32)
            high = torch.as_tensor(space.high, dtype=torch.float32)
            return {
                Columns.ACTIONS: low + torch.rand((size, *space.shape), generator=generator) * (high - low)
            }
        samples = np.stack([np.asarray(space.sample()) for _ in range(size)])
        return {Columns.ACTIONS: torch.as_tensor(samples)}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError(
            "RandomRLModule is never trained: leave its policy id out of policies_to_train."
        )


def _batch_size(obs: Any) -> int:
    while isinstance(obs, Mapping):
        obs = next(iter(obs.values()))
    if isinstance(obs, list | tuple):
        return _batch_size(obs[0])
    return int(obs.shape[0])


class MultiRLModule(nn.ModuleDict):
    """One RLModule per module (policy) id, as RLlib's ``MultiRLModule``."""

    def __init__(self, rl_modules: Mapping[str, RLModule] | None = None) -> None:
        super().__init__(dict(rl_modules or {}))

    def add_module(self, module_id: str, module: nn.Module | None, *, override: bool = False) -> None:  # type: ignore[override]
        if module_id in self and not override:
            raise ConfigError(f"Module {module_id!r} exists already; pass override=True to replace it.")
        self[module_id] = module

    def remove_module(self, module_id: str) -> None:
        del self[module_id]


# -- specs ---------------------------------------------------------------------------------------
def accept_rl_module_class(obj: Any) -> bool:
    """What a stored name may resolve to without an allow-list: lightning-rl's own RLModules
    (a user's class must be allowed with ``trusted_classes``, as custom models are)."""
    return (
        isinstance(obj, type)
        and issubclass(obj, RLModule)
        and str(getattr(obj, "__module__", "")).startswith("lightning_rl.")
    )


def resolve_module_class(value: Any) -> type[RLModule]:
    """A class, or an import path resolved by the checked import rules, that is an RLModule."""
    if isinstance(value, str):
        try:
            value = import_object(value, kind="rl_module_spec module_class", accept=accept_rl_module_class)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"Cannot import rl_module_spec module_class {value!r}: {exc}") from exc
    if not (isinstance(value, type) and issubclass(value, RLModule)):
        raise ConfigError(
            f"rl_module_spec module_class must be a subclass of lightning_rl.RLModule, got {value!r}."
        )
    return value


def module_class_reference(module_class: type[RLModule]) -> str | type[RLModule]:
    """How a class travels to EnvRunners and into checkpoints: its import path where it has a
    usable one; a class defined in a script (``__main__``) or a function travels as itself (Ray
    pickles it by value), and checkpoint recipes then rebuild the algorithm instead."""
    path = object_path(module_class)
    if path is None or path.startswith("__main__:"):
        return module_class
    return path


@dataclass
class RLModuleSpec:
    """What to build for one policy (RLlib's ``RLModuleSpec``).

    ``module_class`` None means the algorithm's own default networks (with this spec's
    ``model_config``); spaces left None are filled in from the env (after the env-to-module
    connectors), as in RLlib.
    """

    module_class: type[RLModule] | str | None = None
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    inference_only: bool = False
    learner_only: bool = False
    model_config: dict[str, Any] | DefaultModelConfig | None = None
    catalog_class: Any = None
    load_state_path: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model_config, DefaultModelConfig):
            self.model_config = self.model_config.to_dict()

    def build(self) -> RLModule:
        if self.module_class is None:
            raise ConfigError("RLModuleSpec.build() needs a module_class.")
        if self.observation_space is None or self.action_space is None:
            raise ConfigError(
                "RLModuleSpec.build() needs observation_space and action_space (the algorithm fills them "
                "in from the env)."
            )
        module_class = resolve_module_class(self.module_class)
        model_config = self.model_config
        if isinstance(model_config, DefaultModelConfig):
            model_config = model_config.to_dict()
        module = module_class(
            observation_space=self.observation_space,
            action_space=self.action_space,
            inference_only=self.inference_only,
            learner_only=self.learner_only,
            model_config=dict(model_config or {}),
            catalog_class=self.catalog_class,
        )
        if self.load_state_path is not None:
            load_module_state(module, self.load_state_path)
        return module

    @classmethod
    def from_module(cls, module: nn.Module) -> RLModuleSpec:
        """The spec that builds another module like ``module`` (RLlib's ``from_module``; its
        self-play callback snapshots ``algorithm.get_module("main")`` this way).

        ``module`` is a user's :class:`RLModule` (the spec names its class) or an algorithm's
        default networks (an object with ``observation_space``, ``action_space`` and
        ``model_config``; the spec's ``module_class`` is None, which means "the default networks").
        """
        if isinstance(module, MultiRLModule):
            raise ConfigError(
                "RLModuleSpec.from_module takes one module; for a MultiRLModule use "
                "MultiRLModuleSpec(rl_module_specs={module_id: RLModuleSpec.from_module(m), ...})."
            )
        missing = [a for a in ("observation_space", "action_space") if getattr(module, a, None) is None]
        if missing:
            raise ConfigError(
                f"RLModuleSpec.from_module({type(module).__name__}): the module has no {missing}; pass a "
                "module from algorithm.get_module(module_id)."
            )
        model_config = getattr(module, "model_config", None)
        if isinstance(model_config, DefaultModelConfig):
            model_config = model_config.to_dict()
        return cls(
            module_class=type(module) if isinstance(module, RLModule) else None,
            observation_space=module.observation_space,
            action_space=module.action_space,
            inference_only=bool(getattr(module, "inference_only", False)),
            learner_only=bool(getattr(module, "learner_only", False)),
            model_config=dict(model_config) if model_config is not None else None,
        )

    def update(self, other: RLModuleSpec, override: bool = True) -> None:
        """Fill (or, with ``override``, replace) fields from ``other`` (RLlib's ``update``)."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if theirs is not None and (override or mine is None):
                setattr(self, f.name, theirs)

    def to_plain(self) -> dict[str, Any]:
        """Plain data for hyperparameters and YAML: the class by import path, spaces tagged."""
        module_class = self.module_class
        if module_class is not None and not isinstance(module_class, str):
            path = object_path(module_class)
            if path is None:
                raise ConfigError(
                    f"rl_module_spec module_class {module_class!r} must be defined at module level so that "
                    "EnvRunners and checkpoints can rebuild it."
                )
            module_class = path
        model_config = self.model_config
        if isinstance(model_config, DefaultModelConfig):
            model_config = model_config.to_dict()
        # RLlib's initialiser keys may hold torch.nn.init functions: stored by name (checked).
        model_config = {**dict(model_config or {}), **canonical_initializer_settings(model_config or {})}
        return {
            "module_class": module_class,
            "observation_space": to_plain(self.observation_space),
            "action_space": to_plain(self.action_space),
            "inference_only": bool(self.inference_only),
            "learner_only": bool(self.learner_only),
            "model_config": to_plain(model_config),
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> RLModuleSpec:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"Unknown RLModuleSpec fields {sorted(unknown)}.")
        values = {k: from_plain(v) if k != "module_class" else v for k, v in data.items()}
        return cls(**values)


@dataclass
class MultiRLModuleSpec:
    """One :class:`RLModuleSpec` per policy id (RLlib's ``MultiRLModuleSpec``)."""

    multi_rl_module_class: Any = None
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    inference_only: bool = False
    model_config: dict[str, Any] | None = None
    rl_module_specs: dict[str, RLModuleSpec] | RLModuleSpec = field(default_factory=dict)
    load_state_path: str | None = None
    modules_to_load: Any = None

    def module_specs(self) -> dict[str, RLModuleSpec]:
        if isinstance(self.rl_module_specs, RLModuleSpec):
            raise ConfigError(
                "MultiRLModuleSpec(rl_module_specs=RLModuleSpec) (one spec for every module) needs the "
                "policy ids: pass rl_module_specs={policy_id: RLModuleSpec(...), ...}."
            )
        return dict(self.rl_module_specs)

    def build(self) -> MultiRLModule:
        return MultiRLModule({pid: spec.build() for pid, spec in self.module_specs().items()})

    def to_plain(self) -> dict[str, Any]:
        return {"rl_module_specs": {str(pid): spec.to_plain() for pid, spec in self.module_specs().items()}}


def resolve_rl_module_specs(value: Any) -> dict[str, RLModuleSpec] | None:
    """``rl_module_spec`` as given (a spec, a multi spec, or their plain-data form from
    hyperparameters/YAML) -> ``{policy_id: spec}``; a single spec is keyed by ``"*"`` (every
    policy). None: no spec."""
    if value is None:
        return None
    if isinstance(value, RLModuleSpec):
        return {"*": value}
    if isinstance(value, MultiRLModuleSpec):
        return value.module_specs()
    if isinstance(value, Mapping):
        if "rl_module_specs" in value:
            specs = value["rl_module_specs"]
            if not isinstance(specs, Mapping):
                raise ConfigError(f"rl_module_specs must map policy ids to specs, got {specs!r}.")
            return {
                str(pid): spec if isinstance(spec, RLModuleSpec) else RLModuleSpec.from_plain(spec)
                for pid, spec in specs.items()
            }
        return {"*": RLModuleSpec.from_plain(value)}
    raise ConfigError(
        f"rl_module_spec must be an RLModuleSpec or a MultiRLModuleSpec (or their dict form), got {value!r}."
    )


def plain_rl_module_spec(value: Any) -> dict[str, Any] | None:
    """The plain-data form stored in hyperparameters (checked, classes by import path)."""
    specs = resolve_rl_module_specs(value)
    if specs is None:
        return None
    if set(specs) == {"*"}:
        return specs["*"].to_plain()
    return {"rl_module_specs": {pid: spec.to_plain() for pid, spec in specs.items()}}


#: RLlib's path of the modules inside a checkpoint: ``<checkpoint>/learner_group/learner/rl_module``.
RL_MODULE_PATH_PARTS = ("learner_group", "learner", "rl_module")


def split_rl_module_path(path: str | os.PathLike) -> tuple[Path, str | None]:
    """RLlib's ``<checkpoint>/learner_group/learner/rl_module[/<module_id>]`` (a checkpoint is a
    directory tree there, one file here) -> ``(<checkpoint>, module id or None)``; any other
    path, or one that exists, comes back as it is."""
    path = Path(path)
    parts = path.parts
    if not path.exists():
        if len(parts) > 4 and parts[-4:-1] == RL_MODULE_PATH_PARTS:
            return Path(*parts[:-4]), parts[-1]
        if len(parts) > 3 and parts[-3:] == RL_MODULE_PATH_PARTS:
            return Path(*parts[:-3]), None
    return path, None


def load_module_state(module: RLModule, path: str | os.PathLike) -> None:
    """``RLModuleSpec(load_state_path=...)``: start ``module`` from an RLModule policy saved in a
    lightning-rl checkpoint file (``algo.save()``), e.g. BC's module before PPO fine-tunes it.
    RLlib's form ``<checkpoint>/learner_group/learner/rl_module[/<module_id>]`` names the file
    (and the module) too.

    Only tensors are read (``torch.load(weights_only=True)``; no name in the file is resolved).
    The policy is the named one, else ``default_policy`` or the checkpoint's only RLModule policy. Every saved
    tensor must fit the module; the module may have more (PPO's value head over BC's model).
    """
    path, module_id = split_rl_module_path(path)
    if not path.is_file():
        raise ConfigError(
            f"RLModuleSpec load_state_path {str(path)!r} is not a checkpoint file (algo.save())."
        )
    state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict", {})
    prefixes = sorted({key.split(".rl_module.")[0] for key in state if ".rl_module." in key})
    default = f"policies.{module_id or DEFAULT_POLICY_ID}"
    if default in prefixes:
        prefix = default
    elif module_id is not None:
        found = [p.removeprefix("policies.") for p in prefixes]
        raise ConfigError(f"Checkpoint {str(path)!r} has no RLModule policy {module_id!r}; it has {found}.")
    elif len(prefixes) == 1:
        prefix = prefixes[0]
    else:
        found = [p.removeprefix("policies.") for p in prefixes]
        raise ConfigError(
            f"Checkpoint {str(path)!r} has RLModule policies {found}; load_state_path needs "
            f"'{DEFAULT_POLICY_ID}' or exactly one."
        )
    saved = {
        key[len(prefix) + len(".rl_module.") :]: value
        for key, value in state.items()
        if key.startswith(prefix + ".rl_module.")
    }
    missing = module.load_state_dict(saved, strict=False)
    if missing.unexpected_keys:
        raise ConfigError(
            f"load_state_path {str(path)!r}: {type(module).__name__} has no parameters "
            f"{missing.unexpected_keys}."
        )


def module_model_config(spec: RLModuleSpec, model_config: DefaultModelConfig) -> dict[str, Any]:
    """What the user's module sees as ``self.model_config``: the algorithm's model config (all
    keys, defaults included, as RLlib fills them) overlaid with the spec's own dict or
    ``DefaultModelConfig``. Every algorithm that runs a user's RLModule builds it this way."""
    own = spec.model_config
    if isinstance(own, DefaultModelConfig):
        own = own.to_dict()
    return {**model_config.to_dict(), **dict(own or {})}


def spec_for_policy(specs: Mapping[str, RLModuleSpec] | None, policy_id: str) -> RLModuleSpec | None:
    """The spec of ``policy_id`` (or the one spec for every policy, keyed ``"*"``)."""
    if not specs:
        return None
    return specs.get(policy_id, specs.get("*"))


def policies_with_specs(policies: Any, specs: Mapping[str, RLModuleSpec] | None) -> Any:
    """RLlib derives the policy ids from a ``MultiRLModuleSpec`` when ``policies`` is not set."""
    if policies is None and specs and set(specs) != {"*"}:
        return sorted(specs)
    return policies


def check_rl_module_specs(
    specs: Mapping[str, RLModuleSpec] | None, policy_ids: list[str], algorithm: str, supported: bool
) -> None:
    """Specs only for existing policies, and module classes only where the algorithm runs them."""
    if not specs:
        return
    unknown = sorted(set(specs) - {"*", *policy_ids})
    if unknown:
        raise ConfigError(
            f"rl_module_spec has specs for {unknown}, which are not policies; the policies are {policy_ids}."
        )
    if not supported and any(spec.module_class is not None for spec in specs.values()):
        raise ConfigError(
            f"rl_module_spec with a module_class: {algorithm} does not run RLModules yet; PPO, IMPALA, "
            "APPO and BC do. "
            "Use model_config (custom_model) for a custom encoder."
        )


@dataclass
class UserRLModule:
    """A user's RLModule built for one policy from its spec, and the runner policy that acts
    with it: what every learner adapter (PPO, IMPALA/APPO, BC) starts from."""

    module: RLModule
    module_class: type[RLModule]
    model_config: dict[str, Any]
    observation_space: gym.Space
    action_space: gym.Space

    @classmethod
    def build(
        cls,
        spec: RLModuleSpec,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: DefaultModelConfig,
    ) -> UserRLModule:
        """The spec's module (its own spaces where it names them, else the policy's)."""
        check_rl_module_action_space(action_space)
        module_class = resolve_module_class(spec.module_class)
        config = module_model_config(spec, model_config)
        module_observation_space = spec.observation_space or observation_space
        module_action_space = spec.action_space or action_space
        module = RLModuleSpec(
            module_class=module_class,
            observation_space=module_observation_space,
            action_space=module_action_space,
            model_config=config,
            load_state_path=spec.load_state_path,
        ).build()
        return cls(module, module_class, config, module_observation_space, module_action_space)

    def policy_spec(self) -> PolicySpec:
        """The runners' :class:`RLModuleInferencePolicy` for this module (plain data for Ray)."""
        return PolicySpec(
            RLModuleInferencePolicy,
            {
                "module_class": module_class_reference(self.module_class),
                "observation_space": self.observation_space,
                "action_space": self.action_space,
                "model_config": self.model_config,
            },
        )


# -- a learner's batches as a module's input ------------------------------------------------------
def observation_leaf_spaces(observation_space: gym.Space, algorithm: str) -> dict[str, gym.Space] | None:
    """The leaves of a flat Dict observation (a module reads ``batch[Columns.OBS][key]``), None
    for any other space. A nested Dict or Tuple observation raises: no learner here flattens it
    for an RLModule."""
    if not isinstance(observation_space, spaces.Dict):
        return None
    leaves = dict(observation_space.spaces)
    if any(isinstance(s, spaces.Dict | spaces.Tuple) for s in leaves.values()):
        raise ConfigError(
            f"RLModules with {algorithm} take a flat Dict observation here, got {observation_space}."
        )
    return leaves


def tensor_tree(value: Any) -> Any:
    """A TensorDict (a Dict observation) as plain nested dicts, which users' modules expect."""
    if isinstance(value, TensorDictBase):
        return {k: tensor_tree(v) for k, v in value.items()}
    return value


def flat_observations(
    observation: Any, leaf_spaces: dict[str, gym.Space] | None, space: gym.Space
) -> tuple[Any, torch.Size]:
    """``[*lead, ...]`` observations (``[num_envs, T]``, ``[rows, T]``) with one batch dim, as
    users' modules (like RLlib's) expect them (a flat Dict observation as a dict of its leaves),
    and the leading dims to restore the outputs' shape with."""
    if leaf_spaces:
        first_key, first_space = next(iter(leaf_spaces.items()))
        first = observation[first_key]
        lead = first.shape[: first.dim() - len(first_space.shape)]
        return {key: observation[key].reshape(-1, *leaf.shape) for key, leaf in leaf_spaces.items()}, lead
    lead = observation.shape[: observation.dim() - len(space.shape)]
    return observation.reshape(-1, *space.shape), lead


def module_values(
    rl_module: RLModule, batch: dict[str, Any], algorithm: str, out: dict[str, Any] | None = None
) -> torch.Tensor:
    """Values of ``batch`` as RLlib's learners take them: ``out``'s ``VF_PREDS`` (a
    ``forward_train`` output at hand), else ``compute_values`` (``ValueFunctionAPI``), else the
    ``VF_PREDS`` of a ``forward_train`` run here (only when no output was given). A module with
    neither is one error naming ``algorithm`` and both ways to give values."""
    if out is not None and Columns.VF_PREDS in out:
        return out[Columns.VF_PREDS]
    if callable(getattr(rl_module, "compute_values", None)):
        return rl_module.compute_values(batch)
    values = rl_module.forward_train(batch).get(Columns.VF_PREDS) if out is None else None
    if values is None:
        raise ConfigError(
            f"{algorithm} needs values from {type(rl_module).__name__}: implement compute_values "
            f"(ValueFunctionAPI) or return {Columns.VF_PREDS!r} from _forward_train."
        )
    return values


def train_outputs_and_values(
    rl_module: RLModule, batch: dict[str, Any], algorithm: str
) -> tuple[dict[str, Any], torch.Tensor]:
    """``forward_train``'s outputs and the values of ``batch``, in RLlib's order: values first
    (its GAE connector's pass; a module may read or pop inputs there, as RLlib's action-masking
    example does), then ``forward_train``, whose ``VF_PREDS`` win where it returns them."""
    has_compute_values = callable(getattr(rl_module, "compute_values", None))
    values = rl_module.compute_values(batch) if has_compute_values else None
    out = rl_module.forward_train(batch)
    if Columns.VF_PREDS in out or values is None:
        values = module_values(rl_module, batch, algorithm, out)
    return out, values


def action_dist_inputs(rl_module: RLModule, out: dict[str, Any], algorithm: str) -> torch.Tensor:
    """``out[ACTION_DIST_INPUTS]``, or one error naming ``algorithm`` and the keys it got."""
    if Columns.ACTION_DIST_INPUTS not in out:
        raise ConfigError(
            f"{type(rl_module).__name__}._forward_train must return {Columns.ACTION_DIST_INPUTS!r} "
            f"for {algorithm}; it returned keys {sorted(out)}."
        )
    return out[Columns.ACTION_DIST_INPUTS]


# -- running a module in the EnvRunners -----------------------------------------------------------
def batch_view(obs: Any) -> Any:
    """A fresh (shallow) dict tree over the observation tensors: RLlib's modules pop keys out of
    ``batch[Columns.OBS]`` (the action-masking module does), which must not touch the runner's
    or the learner's own structures."""
    if isinstance(obs, Mapping):
        return {k: batch_view(v) for k, v in obs.items()}
    return obs


def distribution_params(
    distribution: ActionDistribution, dist_inputs: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """RLlib's ``ACTION_DIST_INPUTS`` as the parameters of our distribution: logits, or
    ``[mean, log_std]`` (concatenated, RLlib's layout) -> ``(loc, scale)`` for Box actions."""
    if isinstance(distribution, DiagGaussianDistribution):
        loc, log_std = dist_inputs.chunk(2, dim=-1)
        return loc, log_std.clamp(-20.0, 2.0).exp()
    return (dist_inputs,)


def check_rl_module_action_space(action_space: gym.Space) -> None:
    if isinstance(action_space, spaces.Discrete) or (
        isinstance(action_space, spaces.Box) and len(action_space.shape) == 1
    ):
        return
    raise SpaceError(f"RLModules act in Discrete or 1-D Box action spaces here, got {action_space}.")


class RLModuleInferencePolicy(InferencePolicy):
    """The runner-side policy of an RLModule: ``forward_exploration`` when exploring, else
    ``forward_inference``; actions from ``Columns.ACTIONS`` if the module picks them, else
    sampled from (exploring) or the mode of (greedy) the distribution over
    ``Columns.ACTION_DIST_INPUTS``. ``action_log_prob`` is stored for PPO's ratio."""

    def __init__(
        self,
        module_class: type[RLModule] | str,
        observation_space: gym.Space,
        action_space: gym.Space,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        spec = RLModuleSpec(
            module_class=module_class,
            observation_space=observation_space,
            action_space=action_space,
            model_config=model_config,
        )
        self.module = spec.build()
        self.picks_actions = isinstance(self.module, RandomRLModule)
        self.distribution = None if self.picks_actions else distribution_for(action_space)

    def forward(self, obs, explore=True, generator=None):
        batch = {Columns.OBS: batch_view(obs)}
        # The runner's seeded generator reaches a module that draws actions itself; users' modules
        # are called as RLlib calls them (no extra keyword arguments).
        kwargs = {"generator": generator} if self.picks_actions else {}
        if explore:
            out = self.module.forward_exploration(batch, **kwargs)
        else:
            out = self.module.forward_inference(batch, **kwargs)
        return actions_from_output(out, self.distribution, explore, generator)

    def load_weights(self, weights):
        self.module.load_state_dict(weights)


def actions_from_output(
    out: Mapping[str, Any],
    distribution: ActionDistribution | None,
    explore: bool,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``{"action", "action_log_prob"}`` from an RLModule's forward output."""
    if Columns.ACTIONS in out:
        action = torch.as_tensor(out[Columns.ACTIONS])
        log_prob = out.get(Columns.ACTION_LOGP)
        if log_prob is None and distribution is not None and Columns.ACTION_DIST_INPUTS in out:
            params = distribution_params(distribution, out[Columns.ACTION_DIST_INPUTS])
            log_prob = distribution.log_prob(params, action)
        if log_prob is None:
            log_prob = torch.zeros(action.shape[0])
        return {"action": action, "action_log_prob": torch.as_tensor(log_prob, dtype=torch.float32)}
    if distribution is None or Columns.ACTION_DIST_INPUTS not in out:
        raise ConfigError(
            f"An RLModule's forward output needs {Columns.ACTIONS!r} or {Columns.ACTION_DIST_INPUTS!r}; "
            f"got keys {sorted(out)}."
        )
    params = distribution_params(distribution, out[Columns.ACTION_DIST_INPUTS])
    if explore:
        action, log_prob = distribution.sample(params, generator)
    else:
        action = distribution.mode(params)
        log_prob = distribution.log_prob(params, action)
    return {"action": action, "action_log_prob": log_prob}
