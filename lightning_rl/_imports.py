"""Import helpers shared by the registry, env resolution and config handling.

Names that come from a file someone else wrote (a checkpoint) are resolved under a
:func:`restricted_names` guard: inside it, :func:`import_object` decides *before importing*
whether a name may be resolved at all, because importing a module can run code and calling
the object it yields (``subprocess:Popen`` with a shell command as its argument) certainly
does. A guarded name resolves only when it is

* on the caller's allow-list (the user opted in to that exact class or function),
* the exact target of a registry entry (an entry point of an installed plugin, or an object
  registered in this process), or
* found in a module that is part of lightning-rl, holds a registry entry (an installed
  plugin's module) or is already imported (so importing it runs nothing new), *and* accepted
  by the caller's check of what is expected there (a subclass of ``Connector``,
  ``InferencePolicy``, ``Algorithm``, an env class ...). Where the caller expects something
  with no such base (a plain function, an arbitrary ``nn.Module``), only the first two rules
  apply.

Anything else is a :class:`~lightning_rl.errors.CheckpointError` naming the entry and how to
opt in. Outside a guard (names the user typed into their own code or config) nothing changes.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from lightning_rl.errors import CheckpointError

#: Packages whose modules a guarded name may import: lightning-rl's own.
TRUSTED_PACKAGES = ("lightning_rl",)
#: The environment variable with a comma-separated allow-list of ``module:attr`` names.
TRUSTED_CLASSES_ENV_VAR = "LIGHTNING_RL_TRUSTED_CLASSES"


#: Modules renamed since checkpoints and configs started storing import paths: old name -> new.
#: Saved files keep their old paths (their checksums cover them), so the rename is applied where
#: a path is read, and every stored path resolves, is checked and is compared under its new name.
RENAMED_MODULES = {
    "lightning_rl.modules.policy": "lightning_rl.modules.policy_networks",
    "lightning_rl.data.replay": "lightning_rl.data.transition_replay",
    "lightning_rl.data.replaying": "lightning_rl.data.replay_schedule",
}


def split_path(path: str) -> tuple[str, str]:
    """``"package.module:attr"`` or ``"package.module.attr"`` -> ``(module, attr)``, with a
    renamed module (:data:`RENAMED_MODULES`) given its current name."""
    if not isinstance(path, str):
        raise ImportError(f"{path!r} is not an import path of the form 'package.module:attr'")
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{path!r} is not an import path of the form 'package.module:attr'")
    return RENAMED_MODULES.get(module_name, module_name), attr


def canonical_path(path: str) -> str:
    """One spelling (``module:attr``) for both import-path forms, for allow-list comparison."""
    module_name, attr = split_path(path)
    return f"{module_name}:{attr}"


@dataclass(frozen=True)
class NameGuard:
    """What a guarded resolution may import: see the module docstring."""

    source: str  # "Checkpoint '/runs/a.ckpt'": who asks, for the error message
    allowed: frozenset[str]  # canonical paths the user opted in to
    registered: frozenset[str]  # canonical paths of registry entries (entry-point targets ...)

    @property
    def registered_modules(self) -> frozenset[str]:
        return frozenset(path.partition(":")[0] for path in self.registered)

    def refuse(self, path: str, kind: str, why: str) -> CheckpointError:
        return CheckpointError(
            f"{self.source} names {path!r} as its {kind}, which lightning-rl will not import or call: "
            f"{why}. A checkpoint may name only registered entries (plugins' entry points, "
            "register_env/register_connector), classes of lightning-rl, and subclasses of the expected "
            "base class from modules you have already imported. If you trust this file, allow the class "
            f"explicitly: trusted_classes=[{canonical_path(path)!r}] (or the environment variable "
            f"{TRUSTED_CLASSES_ENV_VAR}={canonical_path(path)})."
        )


_GUARD: contextvars.ContextVar[NameGuard | None] = contextvars.ContextVar(
    "lightning_rl_name_guard", default=None
)


@contextlib.contextmanager
def restricted_names(
    source: str, allowed: Iterable[str] = (), registered: Iterable[str] = ()
) -> Iterator[NameGuard]:
    """Resolve every name inside the block under a :class:`NameGuard`; a nested guard names its
    own source and keeps the outer one's allow-list (the user opted in for the whole load)."""
    outer = _GUARD.get()
    inherited = outer.allowed if outer is not None else frozenset()
    guard = NameGuard(
        source,
        (frozenset(_canonical_or_none(p) for p in allowed) - {None}) | inherited,
        frozenset(_canonical_or_none(p) for p in registered) - {None},
    )
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


def active_guard() -> NameGuard | None:
    return _GUARD.get()


def _canonical_or_none(path: Any) -> str | None:
    try:
        return canonical_path(path)
    except ImportError:
        return None


def _is_trusted_module(module_name: str) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in TRUSTED_PACKAGES)


def import_object(path: str, *, kind: str = "object", accept: Callable[[Any], bool] | None = None) -> Any:
    """Import ``"package.module:attr"`` or ``"package.module.attr"``.

    ``kind`` names what the object is for (in errors); ``accept`` says whether an object found
    in an importable module is something that may be built from a checkpoint's data (e.g. a
    subclass of the expected base class). Both matter only under :func:`restricted_names`.
    """
    module_name, attr = split_path(path)
    guard = _GUARD.get()
    if guard is None:
        return _resolve(module_name, attr)
    canonical = f"{module_name}:{attr}"
    if canonical in guard.allowed or f"{module_name}:*" in guard.allowed or canonical in guard.registered:
        return _resolve(module_name, attr)
    if accept is None:
        raise guard.refuse(path, kind, "it is neither registered nor on the allow-list")
    importable = _is_trusted_module(module_name) or module_name in guard.registered_modules
    if not importable and module_name not in sys.modules:
        raise guard.refuse(
            path,
            kind,
            f"module {module_name!r} is not part of lightning-rl or a plugin, and not imported yet",
        )
    try:
        obj = _resolve(module_name, attr, through_modules=False)
    except (ImportError, AttributeError) as exc:
        raise guard.refuse(path, kind, f"it cannot be resolved ({exc})") from exc
    if not accept(obj):
        raise guard.refuse(path, kind, f"{obj!r} is not of the type expected there")
    return obj


def _resolve(module_name: str, attr: str, through_modules: bool = True) -> Any:
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
        if not through_modules and isinstance(obj, ModuleType):
            # "lightning_rl.policy:os.system" must not reach past the trusted module.
            raise ImportError(f"{module_name}:{attr} reaches into module {obj.__name__!r}")
    return obj


def subclass_of(*bases: type) -> Callable[[Any], bool]:
    """An ``accept`` check: a class deriving from one of ``bases``."""
    return lambda obj: isinstance(obj, type) and issubclass(obj, bases)


def subclass_named(*bases: str) -> Callable[[Any], bool]:
    """An ``accept`` check by the bases' ``module:qualname``, for layers that cannot import them."""
    wanted = frozenset(bases)
    return lambda obj: isinstance(obj, type) and any(object_path(c) in wanted for c in obj.__mro__)


def object_path(obj: Any) -> str | None:
    """``"module:qualname"`` for an importable class or function, else ``None``."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        return None
    return f"{module}:{qualname}"


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names load on first use.

    ``exports`` maps each public name to the module defining it; the package stays cheap to
    import (``import lightning_rl`` does not import Lightning, an EnvRunner actor importing
    ``lightning_rl.offline`` does not import tensordict). Use it only for modules *below or beside*
    the package in the layers (docs/architecture.md): a lazy export must not reach up.
    """
    names = sorted(exports)
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__


class ModuleOnFirstUse:
    """Stands for a third-party module that is imported when one of its names is first used.

    For a base dependency that many modules name but few runs call: ``pa = ModuleOnFirstUse("pyarrow")``
    costs nothing at import, and ``pa.table(...)`` imports pyarrow then. Unlike
    ``importlib.util.LazyLoader`` it leaves ``sys.modules`` alone (other libraries that look
    for ``"pyarrow" in sys.modules`` see the truth) and works for submodules (``pyarrow.parquet``)
    without importing their package first. Annotations need the real module: import it under
    ``TYPE_CHECKING``.
    """

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr in self.__slots__:  # unset only in a copy made without __init__: no recursion
            raise AttributeError(attr)
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<module {self._name!r} on first use, {state}>"
