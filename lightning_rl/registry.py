"""Name -> object registries for algorithms, envs and connectors, fed by setuptools entry points.

A third-party package becomes usable by name everywhere (fluent config, CLI, ``make_env``)
by declaring an entry point in one of three groups:

* ``lightning_rl.algorithms``: an :class:`~lightning_rl.algorithms.Algorithm` subclass,
* ``lightning_rl.envs``: a callable ``creator(env_config: dict) -> env`` (an env class whose
  ``__init__`` takes the config dict is one),
* ``lightning_rl.connectors``: a :class:`~lightning_rl.connectors.Connector` subclass.

The built-ins register through the same groups in the project's own ``pyproject.toml``, so
there is one mechanism, not two. Entry points are listed without importing anything and
loaded on first lookup; a plugin that fails to import, or a name declared by two
distributions, fails only the lookups of that name, with one message naming the
distribution(s). ``LIGHTNING_RL_DISABLE_PLUGIN_AUTOLOAD=1`` keeps every distribution but
lightning-rl itself out, for hermetic tests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from lightning_rl._imports import import_object, object_path, subclass_named
from lightning_rl.errors import CheckpointError, PluginError, UnknownNameError, unknown_name_message

BUILTIN_DISTRIBUTION = "lightning-rl"
AUTOLOAD_ENV_VAR = "LIGHTNING_RL_DISABLE_PLUGIN_AUTOLOAD"
IN_PROCESS = "in-process"

_UNLOADED = object()


@dataclass
class RegistryEntry:
    """One registered name: where it comes from and, once loaded, what it is."""

    kind: str
    name: str
    source: str  # "<distribution> <version>" or "in-process"
    target: str = ""  # "module:attr" for entry points
    distribution: str = ""
    obj: Any = field(default=_UNLOADED, repr=False)

    @property
    def loaded(self) -> bool:
        return self.obj is not _UNLOADED


def _normalise(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-")


class Registry:
    """Case-insensitive, lazily loaded registry of one kind of object."""

    def __init__(self, kind: str, group: str, validate: Callable[[str, Any], None] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._validate = validate
        self._in_process: dict[str, RegistryEntry] = {}
        self._plugins: dict[str, RegistryEntry] | None = None
        self._conflicts: dict[str, list[RegistryEntry]] = {}
        self._lock = threading.Lock()

    # -- discovery ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Forget discovered entry points so the next lookup scans ``sys.path`` again."""
        with self._lock:
            self._plugins = None
            self._conflicts = {}

    def _discover(self) -> dict[str, RegistryEntry]:
        with self._lock:
            if self._plugins is not None:
                return self._plugins
            autoload = os.environ.get(AUTOLOAD_ENV_VAR, "").lower() not in {"1", "true", "yes"}
            plugins: dict[str, RegistryEntry] = {}
            conflicts: dict[str, list[RegistryEntry]] = {}
            for ep in metadata.entry_points(group=self.group):
                dist = getattr(ep, "dist", None)
                dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
                version = dist.version if dist is not None else "?"
                if not autoload and _normalise(dist_name) != BUILTIN_DISTRIBUTION:
                    continue
                entry = RegistryEntry(
                    kind=self.kind,
                    name=ep.name,
                    source=f"{dist_name} {version}",
                    target=ep.value,
                    distribution=dist_name,
                )
                key = ep.name.lower()
                previous = plugins.get(key)
                if previous is None:
                    plugins[key] = entry
                elif (
                    _normalise(previous.distribution) == _normalise(dist_name) and previous.target == ep.value
                ):
                    continue  # the same distribution seen twice on sys.path
                else:
                    conflicts.setdefault(key, [previous]).append(entry)
            self._plugins, self._conflicts = plugins, conflicts
            return plugins

    # -- registration and lookup -------------------------------------------------------------
    def register(self, name: str, obj: Any, *, source: str = IN_PROCESS) -> None:
        """Register ``obj`` under ``name`` for this process; it shadows a plugin of that name."""
        if not isinstance(name, str) or not name:
            raise UnknownNameError(f"A {self.kind} name must be a non-empty string, got {name!r}.")
        if self._validate is not None:
            self._validate(name, obj)
        self._in_process[name.lower()] = RegistryEntry(self.kind, name, source, obj=obj)

    def unregister(self, name: str) -> None:
        self._in_process.pop(name.lower(), None)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return key in self._in_process or key in self._discover() or key in self._conflicts

    def names(self) -> list[str]:
        plugins = self._discover()
        names = {e.name.lower(): e.name for e in plugins.values()}
        names.update({e.name.lower(): e.name for e in self._in_process.values()})
        return sorted(names.values(), key=str.lower)

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (case-insensitive), importing its plugin if needed."""
        key = name.lower()
        if key in self._in_process:
            return self._in_process[key].obj
        plugins = self._discover()
        if key in self._conflicts:
            clashing = self._conflicts[key]
            described = "; ".join(f"distribution {e.source!r} ({e.target})" for e in clashing)
            raise PluginError(
                f"The {self.kind} name {name!r} is declared by more than one installed distribution: "
                f"{described}. Uninstall one of them, or register the one you want in-process with "
                f"lightning_rl.registry.{self.kind}s.register(...)."
            )
        entry = plugins.get(key)
        if entry is None:
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))
        if not entry.loaded:
            entry.obj = self._load(entry)
        return entry.obj

    def _load(self, entry: RegistryEntry) -> Any:
        module_name, _, attr = entry.target.partition(":")
        try:
            obj = metadata.EntryPoint(entry.name, entry.target, self.group).load()
        except Exception as exc:
            raise PluginError(
                f"The {self.kind} plugin {entry.name!r} from distribution {entry.source!r} failed to "
                f"import ({entry.target}): {type(exc).__name__}: {exc}"
            ) from exc
        if self._validate is not None:
            try:
                self._validate(entry.name, obj)
            except Exception as exc:
                raise PluginError(
                    f"The {self.kind} plugin {entry.name!r} from distribution {entry.source!r} "
                    f"({module_name}:{attr}) is not a valid {self.kind}: {exc}"
                ) from exc
        return obj

    def entries(self) -> Iterator[RegistryEntry]:
        """Every registered name with its source, without importing anything."""
        plugins = self._discover()
        for key, entry in sorted(plugins.items()):
            if key in self._conflicts or key in self._in_process:
                continue
            yield entry
        for clashing in self._conflicts.values():
            yield from clashing
        yield from self._in_process.values()

    def conflicts(self) -> dict[str, list[RegistryEntry]]:
        self._discover()
        return dict(self._conflicts)


#: The base classes a registered algorithm and connector must derive from, named by path: the
#: registry is core machinery below both layers, so it checks a class's MRO by name instead of
#: importing them (tests/test_registry.py proves the paths name the real classes).
ALGORITHM_BASE = "lightning_rl.algorithms.base:Algorithm"
CONNECTOR_BASE = "lightning_rl.connectors.base:Connector"


def subclass_validator(kind: str, base: str) -> Callable[[str, Any], None]:
    """A ``validate`` for :class:`Registry`: the object must be a subclass of ``base``
    (``"module:Class"``), checked through its MRO without importing ``base``."""
    accept = subclass_named(base)
    shown = base.replace(":", ".")

    def validate(name: str, obj: Any) -> None:
        if not accept(obj):
            raise TypeError(f"{obj!r} is not a subclass of {shown} (every {kind} must be one)")

    return validate


_validate_algorithm = subclass_validator("algorithm", ALGORITHM_BASE)
_validate_connector = subclass_validator("connector", CONNECTOR_BASE)


def _validate_env(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"{obj!r} is not callable; an env entry must be creator(env_config) -> env")


algorithms = Registry("algorithm", "lightning_rl.algorithms", _validate_algorithm)
envs = Registry("env", "lightning_rl.envs", _validate_env)
connectors = Registry("connector", "lightning_rl.connectors", _validate_connector)

REGISTRIES: dict[str, Registry] = {"algorithms": algorithms, "envs": envs, "connectors": connectors}


def get_algorithm_class(name: str) -> type:
    """Resolve an algorithm by registry name (case-insensitive) or ``module.Class`` path."""
    if "." in name and name.lower() not in algorithms:
        try:
            obj = import_object(name, kind="algorithm", accept=subclass_named(ALGORITHM_BASE))
        except CheckpointError:
            raise
        except Exception as exc:
            raise UnknownNameError(
                f"Cannot import algorithm class path {name!r}: {exc}. "
                + unknown_name_message("algorithm", name, algorithms.names())
            ) from exc
        _validate_algorithm(name, obj)
        return obj
    return algorithms.get(name)


def algorithms_with(flag: str) -> list[str]:
    """Names of the registered algorithms whose class sets ``flag`` (error messages' choices).

    Imports every algorithm, so it is for error paths only; one that fails to import is left out
    (its own lookup reports that failure).
    """
    names = []
    for name in algorithms.names():
        try:
            cls = algorithms.get(name)
        except Exception:
            continue
        if getattr(cls, flag, False):
            names.append(name)
    return sorted(names)


def register_algorithm(name: str, cls: type) -> None:
    algorithms.register(name, cls)


def register_connector(name: str, cls: type) -> None:
    connectors.register(name, cls)


def refresh() -> None:
    """Re-scan installed distributions (after installing a plugin in a running process)."""
    for registry in REGISTRIES.values():
        registry.refresh()


def list_registered() -> list[dict[str, str]]:
    """Rows ``{kind, name, source, target, status}`` for ``lightning-rl list``; imports nothing."""
    rows = []
    for registry in REGISTRIES.values():
        conflicts = registry.conflicts()
        for entry in registry.entries():
            status = "conflict" if entry.name.lower() in conflicts else "ok"
            target = entry.target or _describe(entry.obj)
            rows.append(
                {
                    "kind": registry.kind,
                    "name": entry.name,
                    "source": entry.source,
                    "target": target,
                    "status": status,
                }
            )
    return rows


def _describe(obj: Any) -> str:
    return object_path(obj) or repr(obj)
