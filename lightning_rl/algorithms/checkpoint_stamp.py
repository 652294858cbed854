"""What an algorithm adds to a Lightning checkpoint, and the checks it runs when reading one.

Lightning saves the weights and hyperparameters; an algorithm adds a lightning-rl section
(:mod:`lightning_rl.checkpoint_format`: format version, algorithm name, policy ids, policies added
during training, connector state, inference recipes, RNG streams) and a checksum. On loading,
the section is checked and migrated before anything is restored, and networks that do not fit
are one clear error instead of Lightning's list of missing keys.

Plain functions over the parts they touch (the :class:`~.policy_set.PolicySet`, the learner
connectors, the minibatch generator), and :class:`AlgorithmCheckpointHooks`, the Lightning hooks that
call them (a mixin of the ``Algorithm``: Lightning finds hooks only as methods of the module).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any, Self

import torch
from lightning.pytorch.core.saving import load_hparams_from_yaml

from lightning_rl import checkpoint_format as ckpt
from lightning_rl import rng
from lightning_rl.algorithms.policy_set import PolicySet
from lightning_rl.errors import CheckpointError
from lightning_rl.policy import checkpoint_recipes


def stamp_checkpoint(
    checkpoint: dict[str, Any],
    *,
    algorithm_name: str,
    policy_set: PolicySet,
    learner_connectors: Mapping[str, list[Any]],
    inference: dict[str, Any],
    minibatch_generator: torch.Generator,
) -> None:
    """Write the lightning-rl section (call :func:`lightning_rl.checkpoint_format.add_checksum` last)."""
    ckpt.stamp(
        checkpoint,
        algorithm=algorithm_name,
        policy_ids=list(policy_set.policy_ids),
        added_policies=copy.deepcopy(policy_set.added),
        learner_connector_state={
            pid: [c.get_state() for c in connectors] for pid, connectors in learner_connectors.items()
        },
        connector_state=copy.deepcopy(policy_set.connector_state),
        inference=inference,
        rng_states=rng.capture({"minibatch": minibatch_generator}),
    )


def restore_sections(
    section: Mapping[str, Any],
    *,
    policy_set: PolicySet,
    learner_connectors: Mapping[str, list[Any]],
    minibatch_generator: torch.Generator,
) -> None:
    """Learner-connector state, the minibatch RNG stream and the env-to-module connector state."""
    for policy_id, states in section.get("learner_connector_state", {}).items():
        for connector, state in zip(learner_connectors.get(policy_id, []), states, strict=False):
            connector.set_state(state)
    rng.restore(section.get("rng_states", {}), {"minibatch": minibatch_generator})
    state = section.get("connector_state")
    if state:
        policy_set.restore_connector_state(state)


def check_weight_shapes(own: Mapping[str, torch.Tensor], state_dict: Mapping[str, Any]) -> None:
    """One clear error when the checkpoint's networks do not fit this algorithm's."""
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs here {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            "The checkpoint's networks do not fit this algorithm (another env, model_config or "
            f"policies?): shape mismatches {mismatched[:3]}, missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}."
        )


def read_for_loading(
    cls: type,
    checkpoint_path: str | os.PathLike,
    *,
    map_location: Any,
    hparams_file: str | os.PathLike | None,
    trusted_classes: ckpt.TrustedClasses,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint (read once, plain data only) and the ``__init__`` kwargs to rebuild ``cls``.

    A checkpoint of another algorithm is refused naming it before anything is built; the keys
    LightningCLI adds to the hyperparameters (``_class_path``, ``_instantiator``) are dropped.
    """
    checkpoint = ckpt.load_checkpoint(
        checkpoint_path, map_location=map_location or "cpu", trusted_classes=trusted_classes
    )
    ckpt.check_algorithm(checkpoint, cls, source=f"Checkpoint {str(checkpoint_path)!r}")
    init_kwargs = ckpt.algorithm_init_kwargs(checkpoint)
    if hparams_file is not None:
        init_kwargs = ckpt.algorithm_init_kwargs({"hyper_parameters": load_hparams_from_yaml(hparams_file)})
    return checkpoint, init_kwargs


def weights_device(state_dict: Mapping[str, Any]) -> torch.device | None:
    """The device the checkpoint's tensors were mapped to (None: no tensors)."""
    tensors = (t for t in state_dict.values() if isinstance(t, torch.Tensor))
    return next((t.device for t in tensors), None)


class AlgorithmCheckpointHooks:
    """Lightning's checkpoint hooks of :class:`~lightning_rl.algorithms.Algorithm`.

    The algorithm's own DataModule (when ``trainer.fit`` got none) is saved under the key
    Lightning would use for a Trainer's, so both ways resume identically.
    """

    policy_set: PolicySet
    learner_connectors: dict[str, list[Any]]
    minibatch_generator: torch.Generator

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stamp_checkpoint(
            checkpoint,
            algorithm_name=type(self).__name__,
            policy_set=self.policy_set,
            learner_connectors=self.learner_connectors,
            inference=checkpoint_recipes(self, checkpoint.get("state_dict", {})),
            minibatch_generator=self.minibatch_generator,
        )
        if self._owns_datamodule() and self._default_datamodule is not None:
            checkpoint[type(self._default_datamodule).__qualname__] = self._default_datamodule.state_dict()
        ckpt.add_checksum(checkpoint)  # last: Lightning calls this hook after writing everything else

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        *,
        trusted_classes: ckpt.TrustedClasses = (),
        **kwargs: Any,
    ) -> Self:
        """Lightning's ``load_from_checkpoint`` through lightning-rl's reader.

        The file is read once with ``weights_only=True`` (plain data only; ``weights_only`` is
        accepted for Lightning's signature and cannot be turned off), a checkpoint of another
        algorithm is refused naming it before anything is built, and the keys LightningCLI adds
        to the hyperparameters (``_class_path``, ``_instantiator``) are dropped instead of being
        resolved to a class. ``kwargs`` replace hyperparameters, as in Lightning. Names in the
        file resolve only by the checkpoint rules (``docs/security.md``); ``trusted_classes``
        allows more.
        """
        checkpoint, init_kwargs = read_for_loading(
            cls,
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            trusted_classes=trusted_classes,
        )
        with ckpt.name_guard(f"Checkpoint {str(checkpoint_path)!r}", trusted_classes):
            algorithm = cls(**{**init_kwargs, **kwargs})
            algorithm.on_load_checkpoint(checkpoint)
        algorithm.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        device = weights_device(checkpoint["state_dict"])
        return algorithm if device is None else algorithm.to(device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        section = ckpt.check_and_migrate(checkpoint)
        ckpt.check_algorithm(checkpoint, type(self))
        for policy_id, added in section.get("added_policies", {}).items():
            if policy_id not in self.policies:  # snapshots made during training (self-play)
                self.add_policy(policy_id, added["from_policy"], trainable=added["trainable"])
        check_weight_shapes(self.state_dict(), checkpoint.get("state_dict", {}))
        restore_sections(
            section,
            policy_set=self.policy_set,
            learner_connectors=self.learner_connectors,
            minibatch_generator=self.minibatch_generator,
        )
        key = self.datamodule_class.__qualname__
        if self._owns_datamodule() and key in checkpoint:
            if self._default_datamodule is not None:
                self._default_datamodule.load_state_dict(checkpoint[key])
            else:
                self._pending_datamodule_state = checkpoint[key]
