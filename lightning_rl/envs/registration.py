"""Turning whatever the user calls an env into a picklable ``creator(env_context) -> env``.

Lookup order for a name: in-process :func:`register_env`, plugin entry points
(``lightning_rl.envs``), names registered with ``ray.tune.register_env`` (as RLlib users
expect), then gymnasium ids (``"CartPole-v1"``, ``"ale_py:ALE/Pong-v5"``), all case-insensitive.
The creator travels to Ray actors by value, so in-process registrations work there too.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from lightning_rl import registry
from lightning_rl._imports import import_object, object_path
from lightning_rl.checkpoint_format import accept_env
from lightning_rl.errors import EnvError, MissingExtraError, UnknownNameError, unknown_name_message
from lightning_rl.optional import EXTRA_OF_PACKAGE, missing_extra_error, require

EnvLike = str | type | Callable[..., Any]


class EnvContext(dict):
    """The env config dict, plus where this env copy lives (RLlib's ``EnvContext``).

    Creators receive it as their only argument; it is a plain ``dict`` of the user's config,
    with ``worker_index`` (0 = local or driver), ``vector_index`` and ``num_workers`` as
    attributes, so one creator can give each copy a different seed or port.
    """

    def __init__(
        self,
        env_config: dict | None = None,
        *,
        worker_index: int = 0,
        vector_index: int = 0,
        num_workers: int = 0,
        recreated_worker: bool = False,
    ) -> None:
        super().__init__(env_config or {})
        self.worker_index = worker_index
        self.vector_index = vector_index
        self.num_workers = num_workers
        self.recreated_worker = recreated_worker

    def copy_with(self, **overrides: Any) -> EnvContext:
        fields = {
            "worker_index": self.worker_index,
            "vector_index": self.vector_index,
            "num_workers": self.num_workers,
            "recreated_worker": self.recreated_worker,
        }
        fields.update(overrides)
        return EnvContext(dict(self), **fields)

    def __reduce__(self):  # keep attributes across pickling (Ray actors)
        return (
            _rebuild_env_context,
            (dict(self), self.worker_index, self.vector_index, self.num_workers, self.recreated_worker),
        )


def _rebuild_env_context(config, worker_index, vector_index, num_workers, recreated_worker):
    return EnvContext(
        config,
        worker_index=worker_index,
        vector_index=vector_index,
        num_workers=num_workers,
        recreated_worker=recreated_worker,
    )


def register_env(name: str, creator: Callable[[dict], Any]) -> None:
    """Make ``name`` resolve to ``creator(env_config)`` in this process and in its Ray actors."""
    if not callable(creator):
        raise TypeError(f"register_env({name!r}, ...) needs a callable creator(env_config), got {creator!r}")
    registry.envs.register(name, creator)


def _make_gymnasium_env(env_id: str, env_config: dict) -> gym.Env:
    kwargs = dict(env_config)
    kwargs.setdefault("disable_env_checker", True)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        # gymnasium names its own extra ("gymnasium[mujoco]"); ours brings the same packages.
        package = (getattr(exc, "name", None) or "").split(".")[0]
        extra = EXTRA_OF_PACKAGE.get(package) or _extra_named_in(str(exc))
        if extra is None:
            raise
        raise missing_extra_error(package or extra, f"the env {env_id!r}", extra=extra) from exc


def _extra_named_in(message: str) -> str | None:
    """Our extra for the gymnasium extra its DependencyNotInstalled message names, if we have one."""
    for gym_extra, ours in (("mujoco", "mujoco"), ("box2d", None), ("atari", "atari")):
        if f"gymnasium[{gym_extra}]" in message:
            return ours
    return None


def _ray_tune_creator(name: str) -> Callable | None:
    if "ray.tune.registry" not in sys.modules:  # nobody registered anything with Tune
        return None
    from ray.tune.registry import ENV_CREATOR, _global_registry

    try:
        if _global_registry.contains(ENV_CREATOR, name):
            return _global_registry.get(ENV_CREATOR, name)
    except Exception:
        return None
    return None


def _gymnasium_id(name: str) -> str | None:
    module = name.partition(":")[0] if ":" in name else ""
    if module.split(".")[0] in EXTRA_OF_PACKAGE:
        # gymnasium turns a missing "module:" prefix into "Namespace not found": name the extra.
        require(module, purpose=f"Env id {name!r}")
    try:
        gym.spec(name)  # also imports "module:" prefixes such as "ale_py:ALE/Pong-v5"
        return name
    except gym.error.Error:
        pass
    except ModuleNotFoundError as exc:
        raise UnknownNameError(f"Env id {name!r} needs module {exc.name!r}, which is not installed.") from exc
    lowered = {key.lower(): key for key in gym.registry}
    return lowered.get(name.lower())


class EnvCreator:
    """A picklable ``creator(env_context) -> env`` with a human-readable name."""

    def __init__(self, creator: Callable[[EnvContext], Any], name: str) -> None:
        self.creator = creator
        self.name = name

    def __call__(self, context: EnvContext | dict | None = None) -> Any:
        if not isinstance(context, EnvContext):
            context = EnvContext(context)
        try:
            env = self.creator(context)
        except MissingExtraError:
            raise  # already names the env and the extra to install
        except Exception as exc:
            raise EnvError(f"Creating env {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
        if env is None:
            raise EnvError(f"The creator of env {self.name!r} returned None instead of an env.")
        return env

    def __repr__(self) -> str:
        return f"EnvCreator({self.name!r})"


def resolve_env(env: EnvLike) -> EnvCreator:
    """Resolve a name, class or creator function into an :class:`EnvCreator`."""
    if isinstance(env, EnvCreator):
        return env
    if env is None:
        raise UnknownNameError(
            "No env given: pass a gymnasium id, a registered name, an env class or a creator, "
            "e.g. PPO(env='CartPole-v1') or PPOConfig().environment('CartPole-v1')."
        )
    if not isinstance(env, str):
        if not callable(env):
            raise UnknownNameError(f"env must be a name, an env class or a creator function, got {env!r}")
        return EnvCreator(env, object_path(env) or getattr(env, "__name__", repr(env)))
    if env in registry.envs:
        return EnvCreator(registry.envs.get(env), env)
    tune_creator = _ray_tune_creator(env)
    if tune_creator is not None:
        return EnvCreator(tune_creator, env)
    gym_id = _gymnasium_id(env)
    if gym_id is not None:
        return EnvCreator(functools.partial(_make_gymnasium_env, gym_id), gym_id)
    if ":" in env:
        try:
            return EnvCreator(import_object(env, kind="env", accept=accept_env), env)
        except (ImportError, AttributeError):
            pass
    choices = list(registry.envs.names()) + [
        key for key in gym.registry if "/" not in key or key.startswith("ALE")
    ]
    raise UnknownNameError(unknown_name_message("env", env, choices))


def env_name(env: EnvLike) -> str:
    """The string stored in hyperparameters for ``env`` (a name or an import path)."""
    if isinstance(env, str):
        return env
    if isinstance(env, EnvCreator):
        return env.name
    return object_path(env) or getattr(env, "__name__", repr(env))


def make_env(env: EnvLike, env_config: dict | None = None, **context: Any) -> Any:
    """Create one env from a name, class or creator, exactly as the EnvRunners do."""
    return resolve_env(env)(EnvContext(env_config, **context))
