"""Process-wide settings of the learner process: Lightning warnings that do not apply, torch threads.

Both change global state of the Python process, so they live apart from the algorithm and say
so in their names: the warning filters are installed once when the algorithms package is
imported, and the learner's thread count holds only for a block (construction, one ``fit``).
Lightning's own classes are never patched: a user's LightningModules share this process.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch


def silence_inapplicable_lightning_warnings() -> None:
    """Filter the warnings Lightning emits on every RL run that tell the user nothing actionable."""
    # Our IterableDatasets define __len__ on purpose (minibatches per iteration, no loader
    # workers), and Lightning 2.6 calls a torch pytree API that torch 2.13 deprecated.
    warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    # RL metrics are logged per iteration (epoch), so Lightning's per-step logging interval
    # warning ("fewer training batches than log_every_n_steps") does not apply.
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    # Under DDP, sampling and evaluation metrics are already identical on every rank (the
    # DataModule shares them) and learner stats are averaged explicitly (sync_dist=True).
    warnings.filterwarnings("ignore", message=r".*It is recommended to use .self\.log\(.*sync_dist=True.*")


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch intra-op threads (None: unchanged), then restore."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LearnerThreads:
    """The learner's torch thread count for the length of one ``fit`` (setup to teardown), so the
    caller's own count comes back afterwards."""

    def __init__(self) -> None:
        self._before: int | None = None

    def enter(self, count: int | None) -> None:
        self._before = torch.get_num_threads()
        if count:
            torch.set_num_threads(int(count))

    def restore(self) -> None:
        if self._before is not None:
            torch.set_num_threads(self._before)
            self._before = None
