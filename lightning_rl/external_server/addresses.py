"""Where a run's external-env servers listen, for clients started next to it (tests, examples)."""

from __future__ import annotations

from typing import Any


def server_addresses(source: Any) -> list[tuple[str, int]]:
    """``(host, port)`` of every training server of a TrainingRun, algorithm, DataModule or runner group."""
    if hasattr(source, "train_group"):  # an ExperienceDataModule
        group = source.train_group
    elif hasattr(getattr(source, "datamodule", None), "train_group"):  # a TrainingRun
        group = source.datamodule.train_group
    elif hasattr(source, "experience"):  # an Algorithm
        group = source.experience.train_group
    else:
        group = source
    if group is None:
        raise RuntimeError("The external env servers start with training (trainer.fit / TrainingRun.train).")
    if group.local_runner is not None:
        return [group.local_runner.get_address()]
    import ray

    return [tuple(ray.get(actor.get_address.remote())) for actor in group.actors() if actor is not None]
