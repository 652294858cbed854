"""Checkpoint format versioning: stamp what we write, check (and migrate) what we read.

Every checkpoint carries ``checkpoint["lightning_rl"] = {"format_version", "package_version",
"algorithm", ...}`` and holds only plain data (tensors, numbers, strings, lists, dicts), so
``torch.load(path, weights_only=True)`` opens it without trusting pickled classes. A newer
format than this package knows fails with one clear message; older formats pass through
the migrations below, one version step at a time.

Format history (bump :data:`FORMAT_VERSION` and add a migration whenever a reader would
otherwise have to guess):

1. The ``lightning_rl`` section: format and package version, ``algorithm`` (registry name),
   ``policy_ids`` and ``connector_state`` (``{policy_id: [state per env-to-module connector]}``).
2. ``inference``: ``{policy_id: recipe}``, the plain-data recipe of each policy (env-side
   spaces, connector specs, inference-policy class and kwargs, weight keys), so
   :meth:`lightning_rl.Policy.from_checkpoint` needs no env. A recipe needs the env to be
   derived, so format-1 checkpoints migrate to an empty ``inference`` and their policies are
   rebuilt from the hyperparameters (which creates the env once).
3. ``checkpoint["lightning_rl_checksum"]``: a SHA-256 over every tensor's bytes (with its
   dtype, shape and place in the checkpoint) and every plain value, so that a flipped bit is
   a :class:`CheckpointError` at load instead of silently changed weights. Format-2 files have
   none and load unchecked.

Checkpoints are data from outside: :func:`load_checkpoint` also checks every name a checkpoint
carries (algorithm, connectors, inference policy class, env, custom model, mapping function,
class paths in hyperparameters) with :func:`check_names` before anything is built from it, and
:func:`name_guard` keeps every later resolution inside the same rules (see
:mod:`lightning_rl._imports`). A checksum protects against corruption, not against an attacker,
who can recompute it; the name rules are what make a hostile file harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from lightning_rl import registry
from lightning_rl._imports import (
    TRUSTED_CLASSES_ENV_VAR,
    NameGuard,
    import_object,
    object_path,
    restricted_names,
    split_path,
    subclass_named,
)
from lightning_rl.errors import CheckpointError
from lightning_rl.version import __version__

FORMAT_VERSION = 3
KEY = "lightning_rl"
CHECKSUM_KEY = "lightning_rl_checksum"
#: The first format whose files always carry a checksum.
CHECKSUM_SINCE = 3

TrustedClasses = Iterable[str | type | Callable[..., Any]]

# A loaded checkpoint is verified once: later checks of the same dict (load_checkpoint, then the
# algorithm's on_load_checkpoint) see this mark. A file re-saved from a loaded dict carries the
# mark of another process and is checked again when loaded elsewhere.
_PROCESS_NONCE = os.urandom(8).hex()


def _add_inference_section(checkpoint: dict[str, Any]) -> None:
    checkpoint[KEY].setdefault("inference", {})


def _no_checksum_yet(checkpoint: dict[str, Any]) -> None:
    """Format 2 had no checksum: one computed now would vouch for nothing, so the file is marked
    as checked (in this process only) instead."""
    checkpoint[CHECKSUM_KEY] = {"verified": _PROCESS_NONCE}


# MIGRATIONS[v] turns a format-v checkpoint into format v + 1, in place.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], None]] = {1: _add_inference_section, 2: _no_checksum_yet}


def stamp(checkpoint: dict[str, Any], **extra: Any) -> None:
    checkpoint[KEY] = {"format_version": FORMAT_VERSION, "package_version": __version__, **extra}


def check_and_migrate(checkpoint: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """Return the lightning-rl section of ``checkpoint``, migrated to the current format."""
    section = checkpoint.get(KEY)
    if not isinstance(section, dict):
        raise CheckpointError(
            f"{source} was not written by lightning-rl (no {KEY!r} section); "
            "it cannot be restored as an algorithm."
        )
    raw_version = section.get("format_version", 0)
    if isinstance(raw_version, bool) or not isinstance(raw_version, int):
        raise CheckpointError(f"{source} has an invalid checkpoint format version {raw_version!r}.")
    version = raw_version
    written_by = section.get("package_version", "an unknown version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format {version} (written by lightning-rl "
            f"{written_by}), but this lightning-rl {__version__} reads "
            f"formats up to {FORMAT_VERSION}. Upgrade lightning-rl to load it."
        )
    if version >= CHECKSUM_SINCE:
        verify_checksum(checkpoint, source)
    while version < FORMAT_VERSION:
        migrate = MIGRATIONS.get(version)
        if migrate is None:
            raise CheckpointError(
                f"{source} has checkpoint format {version} (written by lightning-rl {written_by}), "
                f"which this lightning-rl {__version__} cannot migrate to format {FORMAT_VERSION} "
                f"(it migrates formats {', '.join(map(str, sorted(MIGRATIONS)))} and newer). Load it "
                f"with lightning-rl {written_by} and export the policy, or retrain."
            )
        migrate(checkpoint)
        version += 1
        checkpoint[KEY]["format_version"] = version
    return checkpoint[KEY]


# What LightningCLI records next to an algorithm's own arguments: how it built the module. They
# are no ``__init__`` arguments, so every reader of the hyperparameters drops them.
CLI_HPARAM_KEYS = ("_class_path", "_instantiator")


def checkpoint_algorithm(checkpoint: dict[str, Any]) -> str | None:
    """The registry name of the algorithm that wrote ``checkpoint`` (None if it names none)."""
    section = checkpoint.get(KEY)
    name = section.get("algorithm") if isinstance(section, dict) else None
    return name if isinstance(name, str) and name else None


def check_algorithm(checkpoint: dict[str, Any], expected: type, source: str = "This checkpoint") -> None:
    """Refuse, naming both, a checkpoint written by another algorithm than ``expected`` (or a base)."""
    written_by = checkpoint_algorithm(checkpoint)
    if written_by and written_by not in {cls.__name__ for cls in expected.__mro__}:
        raise CheckpointError(
            f"{source} is a {written_by} checkpoint, not {expected.__name__}: load it with "
            f"{written_by}.load_from_checkpoint(...) or TrainingRun.from_checkpoint(...), which "
            "pick the algorithm the checkpoint names."
        )


def algorithm_init_kwargs(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The algorithm's ``__init__`` arguments stored in ``checkpoint`` (``hyper_parameters``),
    without the keys LightningCLI adds when it builds the algorithm."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise CheckpointError(f"The checkpoint's hyper_parameters are not a dict: {type(hparams).__name__}.")
    return {k: v for k, v in hparams.items() if k not in CLI_HPARAM_KEYS}


# -- checksum ----------------------------------------------------------------------------------
def _digest(value: Any, hasher: Any, place: str) -> None:
    """Feed ``value`` into ``hasher`` with its place, so moved or retyped data changes the sum."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        tensor = tensor.cpu().contiguous()
        hasher.update(f"T{place}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            hasher.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(value, dict):
        hasher.update(f"D{place}|{len(value)}|".encode())
        for key, item in value.items():
            _digest(item, hasher, f"{place}/{key!r}")
    elif isinstance(value, list | tuple):
        hasher.update(f"L{place}|{type(value).__name__}|{len(value)}|".encode())
        for index, item in enumerate(value):
            _digest(item, hasher, f"{place}/{index}")
    else:
        hasher.update(f"V{place}|{type(value).__name__}|{value!r}|".encode())


def compute_checksum(checkpoint: dict[str, Any], keys: Iterable[str]) -> str:
    hasher = hashlib.sha256()
    for key in keys:
        _digest(checkpoint.get(key), hasher, repr(key))
    return hasher.hexdigest()


def add_checksum(checkpoint: dict[str, Any]) -> None:
    """Write the checksum over everything now in ``checkpoint`` (call it last when saving)."""
    keys = [k for k in checkpoint if k != CHECKSUM_KEY]
    checkpoint[CHECKSUM_KEY] = {
        "algorithm": "sha256",
        "keys": keys,
        "digest": compute_checksum(checkpoint, keys),
    }


def verify_checksum(checkpoint: dict[str, Any], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` still matches its checksum."""
    entry = checkpoint.get(CHECKSUM_KEY)
    if isinstance(entry, dict) and entry.get("verified") == _PROCESS_NONCE:
        return
    if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
        raise CheckpointError(
            f"{source} has no valid checksum (format {FORMAT_VERSION} files always carry one under "
            f"{CHECKSUM_KEY!r}); it is corrupt or was edited."
        )
    keys = entry.get("keys")
    if entry.get("algorithm") != "sha256" or not isinstance(keys, list):
        raise CheckpointError(f"{source} has an unreadable checksum entry; it is corrupt or was edited.")
    missing = [k for k in keys if k not in checkpoint]
    if missing or compute_checksum(checkpoint, keys) != entry["digest"]:
        raise CheckpointError(
            f"{source} is corrupt: its data no longer match the checksum written when it was saved "
            + (f"(missing entries {missing[:3]})" if missing else "(a changed byte in its tensors or values)")
            + "; restore it from a backup or use an older checkpoint."
        )
    entry["verified"] = _PROCESS_NONCE


# -- names a checkpoint may carry ----------------------------------------------------------------
CONNECTOR_BASE = registry.CONNECTOR_BASE
INFERENCE_POLICY_BASE = "lightning_rl.modules.policy_networks:InferencePolicy"
ALGORITHM_BASE = registry.ALGORITHM_BASE
ENV_BASES = (
    "gymnasium.core:Env",
    "lightning_rl.envs.multi_agent:MultiAgentEnv",
    "pettingzoo.utils.env:ParallelEnv",
    "pettingzoo.utils.env:AECEnv",
)
#: Lightning's own instantiator (LightningCLI writes it into hyperparameters).
LIGHTNING_INSTANTIATORS = frozenset(
    {"lightning.pytorch.cli.instantiate_module", "pytorch_lightning.cli.instantiate_module"}
)
_CONNECTOR_KEYS = frozenset(
    {
        "env_to_module_connector",
        "module_to_env_connector",
        "learner_connector",
        "env_to_module",
        "module_to_env",
    }
)

accept_connector = subclass_named(CONNECTOR_BASE)
_is_inference_policy = subclass_named(INFERENCE_POLICY_BASE)
_is_module = subclass_named("torch.nn.modules.module:Module")


def accept_inference_policy(obj: Any) -> bool:
    """An ``InferencePolicy`` subclass, or one of lightning-rl's own runner networks (the
    recurrent ones are plain ``nn.Module`` s that follow the same contract)."""
    own = str(getattr(obj, "__module__", "")).startswith("lightning_rl.")
    return _is_inference_policy(obj) or (own and _is_module(obj))


accept_algorithm = subclass_named(ALGORITHM_BASE)
accept_env = subclass_named(*ENV_BASES)


def accept_custom_model(obj: Any) -> bool:
    """Only lightning-rl's own network classes; a user's model must be allowed explicitly (any
    ``nn.Module`` would admit classes that do far more than compute, such as torchrl's envs)."""
    return _is_module(obj) and str(obj.__module__).startswith("lightning_rl.")


_is_rl_module = subclass_named("lightning_rl.modules.rl_module:RLModule")


def accept_rl_module_class(obj: Any) -> bool:
    """An ``rl_module_spec``'s ``module_class``: only lightning-rl's own RLModules without an
    allow-list; a user's RLModule must be allowed explicitly, as a custom model is."""
    return _is_rl_module(obj) and str(obj.__module__).startswith("lightning_rl.")


def accept_mapping_class(obj: Any) -> bool:
    """Policy-mapping classes store themselves as ``{"class_path", "init_args"}`` via ``to_config``."""
    in_package = str(getattr(obj, "__module__", "")).startswith("lightning_rl.")
    return isinstance(obj, type) and in_package and hasattr(obj, "to_config")


def trusted_paths(trusted_classes: TrustedClasses = ()) -> list[str]:
    """The allow-list: ``trusted_classes`` (paths, ``"module:*"``, classes or functions) plus the
    comma-separated :data:`~lightning_rl._imports.TRUSTED_CLASSES_ENV_VAR`."""
    if isinstance(trusted_classes, str):
        trusted_classes = [trusted_classes]
    paths = []
    for item in trusted_classes or ():
        path = item if isinstance(item, str) else object_path(item)
        if path is None:
            raise CheckpointError(f"trusted_classes entry {item!r} is not importable by a path.")
        paths.append(path)
    paths += [p.strip() for p in os.environ.get(TRUSTED_CLASSES_ENV_VAR, "").split(",") if p.strip()]
    return paths


def registered_paths() -> list[str]:
    """``module:attr`` of every registry entry, without importing anything new."""
    paths = []
    for kind in registry.REGISTRIES.values():
        for entry in kind.entries():
            path = entry.target or (object_path(entry.obj) if entry.loaded else None)
            if path:
                paths.append(path)
    return paths


@contextlib.contextmanager
def name_guard(source: str, trusted_classes: TrustedClasses = ()) -> Iterator[NameGuard]:
    """Resolve names inside the block by the checkpoint rules (see :mod:`lightning_rl._imports`)."""
    with restricted_names(source, trusted_paths(trusted_classes), registered_paths()) as guard:
        yield guard


def check_names(
    checkpoint: dict[str, Any],
    source: str,
    trusted_classes: TrustedClasses = (),
    *,
    hyperparameters: bool = True,
) -> None:
    """Refuse a checkpoint that names anything a loader would import or call outside the rules.

    Runs before anything is built: the algorithm, the inference recipes (policy class,
    connectors, model config) and, unless the loader will not build from them
    (``hyperparameters=False``: a policy served from its recipe), every name-bearing
    hyperparameter (env, connectors, ``custom_model``, ``policy_mapping_fn``, ``class_path``
    entries, LightningCLI's ``_class_path``/``_instantiator``). Registry names pass; import
    paths must pass the guard.
    """
    with name_guard(source, trusted_classes):
        section = checkpoint.get(KEY) or {}
        algorithm = section.get("algorithm")
        if isinstance(algorithm, str) and algorithm not in registry.algorithms:
            _check_path(algorithm, "algorithm", accept_algorithm)
        for policy_id, recipe in (section.get("inference") or {}).items():
            where = f"inference recipe of policy {policy_id!r}"
            if not isinstance(recipe, dict):
                raise CheckpointError(f"{source} has a malformed {where}: {type(recipe).__name__}.")
            policy_class = recipe.get("policy_class")
            _check_path(policy_class, f"inference policy class ({where})", accept_inference_policy)
            _check_tree(recipe, where)
        for key in ("hyper_parameters", "datamodule_hyper_parameters") if hyperparameters else ():
            _check_tree(checkpoint.get(key), key)


def _check_path(path: Any, kind: str, accept: Callable[[Any], bool] | None) -> None:
    try:
        split_path(path)
    except ImportError as exc:
        raise CheckpointError(f"The checkpoint's {kind} {path!r} is not a valid name: {exc}") from exc
    import_object(path, kind=kind, accept=accept)


def _check_connector(spec: Any, where: str) -> None:
    if isinstance(spec, list | tuple):
        for index, item in enumerate(spec):
            _check_connector(item, f"{where}[{index}]")
        return
    if isinstance(spec, dict):
        name = spec.get("class_path", spec.get("name"))
        where = f"{where}['{'class_path' if 'class_path' in spec else 'name'}']"
    else:
        name = spec
    if not isinstance(name, str) or name in registry.connectors:
        return  # not a name (built-ins rebuild from specs), or a registered one
    if "." in name or ":" in name:
        _check_path(name, f"connector ({where})", accept_connector)


def _check_env(name: str, where: str) -> None:
    if ":" not in name or name in registry.envs:
        return  # registry names and gymnasium ids import nothing
    module_name, _, rest = name.partition(":")
    if not rest.replace(".", "_").isidentifier():  # "ale_py:ALE/Pong-v5": gymnasium's module prefix
        _check_path(f"{module_name}:*", f"env module ({where})", None)
        return
    _check_path(name, f"env ({where})", accept_env)


def _check_tree(value: Any, where: str) -> None:
    """Walk plain data and check every value whose key says it is a name."""
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_tree(item, f"{where}[{index}]")
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        place = f"{where}[{key!r}]"
        if key in _CONNECTOR_KEYS:
            _check_connector(item, place)
        elif key == "env" and isinstance(item, str):
            _check_env(item, place)
        elif key == "custom_model" and isinstance(item, str):
            _check_path(item, f"model_config custom_model ({place})", accept_custom_model)
        elif key == "module_class" and isinstance(item, str):
            _check_path(item, f"rl_module_spec module_class ({place})", accept_rl_module_class)
        elif key == "policy_mapping_fn" and isinstance(item, str):
            _check_path(item, f"policy_mapping_fn ({place})", None)
        elif key in {"class_path", "_class_path"} and isinstance(item, str):
            accept = accept_algorithm if key == "_class_path" else accept_mapping_class
            _check_path(item, f"class ({place})", accept)
        elif key == "_instantiator" and item is not None and item not in LIGHTNING_INSTANTIATORS:
            _check_path(str(item), f"instantiator ({place})", None)
        else:
            _check_tree(item, place)


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the last ``*.ckpt`` (by name) in a directory."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.ckpt"))
        if not candidates:
            raise CheckpointError(f"No checkpoint (*.ckpt) found in directory {str(path)!r}.")
        path = candidates[-1]
    return path


def read_plain_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """A checkpoint file as plain data (``torch.load(weights_only=True)``: no code runs), its format
    and checksum checked and migrated; the names it carries are not checked here (loaders that
    build from them use :func:`load_checkpoint`; loaders that take only tensors may stop here)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is corrupt or truncated and cannot be read: {exc}"
            ) from exc
        detail = next(
            (line.strip() for line in str(exc).splitlines() if "unsupported global" in line.lower()), ""
        )
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds pickled Python objects, not plain data; lightning-rl loads "
            f"checkpoints only with torch.load(weights_only=True). {detail}"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is corrupt or truncated and cannot be read: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"Checkpoint {str(path)!r} does not hold a checkpoint dict.")
    check_and_migrate(checkpoint, source=f"Checkpoint {str(path)!r}")
    return checkpoint


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    trusted_classes: TrustedClasses = (),
    algorithm_class: type | None = None,
    check_hyperparameters: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True``; a missing, truncated, corrupt (checksum)
    or foreign file, a name outside the rules of :func:`check_names` (``trusted_classes`` opts in
    to more) or, with ``algorithm_class``, another algorithm's checkpoint gives one
    :class:`CheckpointError` naming it. ``check_hyperparameters=False`` is for loaders that
    build nothing from the hyperparameters (they must call :func:`check_names` before they do)."""
    checkpoint = read_plain_checkpoint(path, map_location)
    source = f"Checkpoint {str(Path(path))!r}"
    if algorithm_class is not None:
        check_algorithm(checkpoint, algorithm_class, source)
    check_names(checkpoint, source, trusted_classes, hyperparameters=check_hyperparameters)
    return checkpoint
