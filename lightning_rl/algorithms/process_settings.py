"""Process-wide settings of the learner process: Lightning warnings that do not apply, a fast
path for Lightning's ``self.log``, torch threads.

All change global state of the Python process, so they live apart from the algorithm and say
so in their names: the warning filters and the logging fast path are installed once when the
algorithms package is imported, and the learner's thread count holds only for a block
(construction, one ``fit``).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.trainer.connectors.logger_connector import result as lightning_result


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


def skip_redundant_logged_value_moves() -> None:
    """Let Lightning's ``self.log`` skip moving a metric's accumulator to the device it is on.

    Every ``self.log`` call moves the logged metric's accumulator to the value's device
    (``_ResultMetric.to``: a recursive walk over the whole ``__dict__`` of a torchmetrics
    ``Metric``) even when it is there already, which it is from the second iteration on. That
    walk was about 60% of a ``self.log`` call, and an RL iteration logs ~30 metrics once each
    (sampling, learner and step-axis metrics): on CartPole PPO the iteration's logging cost
    several minibatch updates' worth (``benchmarks/learner_overhead.py``, ``step`` vs
    ``update``). Only that no-op case is short-cut: a tensor metric whose state tensors are all
    on the requested device returns itself; any other call (another device, dtype or keyword
    arguments, metric objects) runs Lightning's own method. Idempotent; a Lightning without the
    method is left alone.
    """
    metric_class = getattr(lightning_result, "_ResultMetric", None)
    original = getattr(metric_class, "to", None)
    if original is None or getattr(original, "_lightning_rl_fast_path", False):
        return

    @functools.wraps(original)
    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and isinstance(args[0], torch.device) and self.is_tensor:
            states = [self.__dict__.get(name) for name in getattr(self, "_defaults", ())]
            device = args[0]
            if states and all(isinstance(t, torch.Tensor) and t.device == device for t in states):
                return self
        return original(self, *args, **kwargs)

    to._lightning_rl_fast_path = True  # type: ignore[attr-defined]
    metric_class.to = to


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
