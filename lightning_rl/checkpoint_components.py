"""RLlib's ``algo.restore_from_path(path, component=...)``: load one part of a checkpoint.

RLlib checkpoints are directory trees of components (``learner_group/learner/rl_module/
<module_id>``, ``env_runner``, ...) and ``component=`` loads only the named one into a running
algorithm, leaving everything else (optimizers, counters, other modules) as it is. The usual
use is the module's weights: a BC-trained RLModule into PPO's module before fine-tuning, whose
extra value head starts fresh. lightning-rl checkpoints are one file; the components read from
it are the modules (policies), under RLlib's names:

* ``learner_group/learner/rl_module``: every module the checkpoint and this algorithm share
  (one module each with different ids: that one);
* ``learner_group/learner/rl_module/<module_id>``: that module only.

``path`` is the checkpoint file (``algo.save()``), a directory holding ``*.ckpt`` files, or,
RLlib-style, either of them followed by the component's path (``<checkpoint>/learner_group/
learner/rl_module``). The file is read with ``torch.load(weights_only=True)`` (no code runs),
its format and checksum checked (:mod:`lightning_rl.checkpoint_format`); only tensors are taken
from it and no name in it is resolved (a user's RLModule class named in it needs no allow-list,
as nothing is built from it).

How a module's weights go in, in order: a user's RLModule takes the saved RLModule's tensors
(every saved tensor must fit; the target may have more, like PPO's value head over BC's model,
as RLlib loads them); the same algorithm's module takes its whole saved state (target networks
included); another algorithm's default networks go through the algorithm's
``load_policy_weights_from`` (policy network, value network where shapes fit, connector state).
The algorithm is seen only through those attributes, so this module imports no algorithm.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from lightning_rl import checkpoint_format as ckpt
from lightning_rl.errors import CheckpointError, ConfigError, UnknownNameError, unknown_name_message

# RLlib's component names (ray.rllib.core.COMPONENT_*), for ported code.
COMPONENT_LEARNER_GROUP = "learner_group"
COMPONENT_LEARNER = "learner"
COMPONENT_RL_MODULE = "rl_module"
RL_MODULE_COMPONENT = f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"
#: The components ``restore_from_path`` loads (``<module_id>`` stands for a policy id).
SUPPORTED_COMPONENTS = (RL_MODULE_COMPONENT, f"{RL_MODULE_COMPONENT}/<module_id>")


def parse_component(component: str) -> str | None:
    """The module id a component names (None: every module); one error listing the choices
    for any other component."""
    if not isinstance(component, str):
        raise ConfigError(
            f"component must be a string such as {RL_MODULE_COMPONENT!r}, got {type(component).__name__}."
        )
    parts = [p for p in component.strip("/").split("/") if p]
    prefix = RL_MODULE_COMPONENT.split("/")
    if parts[:3] == prefix and len(parts) in (3, 4):
        return parts[3] if len(parts) == 4 else None
    raise UnknownNameError(
        f"Unknown checkpoint component {component!r}: restore_from_path(component=...) loads "
        f"{' or '.join(repr(c) for c in SUPPORTED_COMPONENTS)} (a module's weights). For the whole "
        "algorithm (weights, optimizers, counters) call restore_from_path(path) without component."
    )


def checkpoint_file(path: str | os.PathLike, component: str) -> Path:
    """The checkpoint file ``path`` names, with an RLlib-style component suffix taken off."""
    given = Path(path)
    candidate = given
    suffix = PurePosixPath(component.strip("/")).parts
    if not candidate.exists() and tuple(candidate.parts[-len(suffix) :]) == suffix:
        candidate = Path(*candidate.parts[: -len(suffix)])
    if not candidate.exists():
        raise CheckpointError(f"Checkpoint {str(given)!r} does not exist.")
    return ckpt.resolve_checkpoint_path(candidate)


def restore_modules(algorithm: Any, path: str | os.PathLike, component: str) -> list[str]:
    """Load the module weights ``component`` names from the checkpoint at ``path`` into
    ``algorithm`` (its optimizers, counters and other modules stay as they are); returns the
    policy ids loaded."""
    module_id = parse_component(component)
    file = checkpoint_file(path, component)
    state = ckpt.read_plain_checkpoint(file).get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"Checkpoint {str(file)!r} holds no weights (state_dict).")
    saved_ids = sorted({key.split(".")[1] for key in state if key.startswith("policies.")})
    pairs = _module_pairs(list(algorithm.policy_ids), saved_ids, module_id, file)
    for policy_id, saved_id in pairs:
        _load_module(algorithm, policy_id, saved_id, state, file)
    return [policy_id for policy_id, _ in pairs]


def _module_pairs(
    own_ids: list[str], saved_ids: list[str], module_id: str | None, file: Path
) -> list[tuple[str, str]]:
    """(this algorithm's policy id, the checkpoint's module id) for every module to load."""
    where = f"checkpoint {str(file)!r}"
    if not saved_ids:
        raise CheckpointError(f"The {where} holds no module weights.")
    if module_id is not None:
        if module_id not in own_ids:
            raise UnknownNameError(unknown_name_message("module id of this algorithm", module_id, own_ids))
        if module_id in saved_ids:
            return [(module_id, module_id)]
        if len(saved_ids) == 1:
            return [(module_id, saved_ids[0])]
        raise UnknownNameError(unknown_name_message(f"module id in the {where}", module_id, saved_ids))
    shared = [pid for pid in own_ids if pid in saved_ids]
    if shared:
        return [(pid, pid) for pid in shared]
    if len(own_ids) == 1 and len(saved_ids) == 1:
        return [(own_ids[0], saved_ids[0])]
    raise ConfigError(
        f"The {where} holds modules {saved_ids}; this algorithm has {own_ids} and none in common. "
        f"Name one with component='{RL_MODULE_COMPONENT}/<module_id>'."
    )


def _load_module(algorithm: Any, policy_id: str, saved_id: str, state: dict[str, Any], file: Path) -> None:
    module = algorithm.policies[policy_id]
    prefix = f"policies.{saved_id}."
    saved = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    rl_module = getattr(module, "rl_module", None)
    saved_rl_module = {
        key[len("rl_module.") :]: value for key, value in saved.items() if key.startswith("rl_module.")
    }
    if isinstance(rl_module, torch.nn.Module) and saved_rl_module:
        _load_tensors(rl_module, saved_rl_module, strict=False, what=f"{type(rl_module).__name__}", file=file)
    elif saved_rl_module or isinstance(rl_module, torch.nn.Module):
        kinds = {True: "a user's RLModule (rl_module_spec)", False: "lightning-rl's default networks"}
        raise ConfigError(
            f"Module {saved_id!r} in checkpoint {str(file)!r} is {kinds[bool(saved_rl_module)]}, but this "
            f"algorithm's policy {policy_id!r} is {kinds[isinstance(rl_module, torch.nn.Module)]}; build it "
            "with a module that fits the saved one (rl_module_spec=RLModuleSpec(module_class=...))."
        )
    elif set(saved) == set(module.state_dict()):
        _load_tensors(module, saved, strict=True, what=f"module {policy_id!r}", file=file)
    else:
        algorithm.load_policy_weights_from(str(file), policy_id=policy_id, source_policy_id=saved_id)


def _load_tensors(
    target: torch.nn.Module, saved: dict[str, Any], *, strict: bool, what: str, file: Path
) -> None:
    """Copy ``saved`` into ``target``: every saved entry must be a tensor of the target's shape."""
    own = target.state_dict()
    unexpected = sorted(set(saved) - set(own))
    mismatched = [
        f"{key}: {tuple(value.shape)} vs {tuple(own[key].shape)}"
        for key, value in saved.items()
        if key in own and (not isinstance(value, torch.Tensor) or value.shape != own[key].shape)
    ]
    missing = sorted(set(own) - set(saved)) if strict else []
    if unexpected or mismatched or missing:
        found = (("unexpected", unexpected), ("different shapes", mismatched), ("missing", missing))
        details = [f"{label} {items[:4]}" for label, items in found if items]
        raise CheckpointError(
            f"The module weights in checkpoint {str(file)!r} do not fit {what} ({'; '.join(details)}); "
            "was it trained with another model or env?"
        )
    target.load_state_dict(saved, strict=strict)
