"""The action distribution PPO's loss evaluates, built without torch's argument checks.

``torch.distributions`` checks every parameter and every sample by default (a NaN scan of the
logits, a support check of the actions, each read back to the host): on a CartPole minibatch
that costs three times the log-probabilities themselves (~125 us of a ~3 ms update, measured
with ``benchmarks/learner_overhead.py``'s shapes). On the learner the checks add nothing: the
actions are the ones the runners sampled from the same distribution, and a non-finite
parameter gives a non-finite loss, which the non-finite guard skips and counts
(:mod:`lightning_rl.algorithms.non_finite`); a validation error would instead stop training
before the guard sees the update. A distribution class that takes no ``validate_args`` (a
plugin's) is built as it always was.
"""

from __future__ import annotations

import functools
import inspect

import torch

from lightning_rl.modules.distributions import ActionDistribution


def learner_distribution(
    spec: ActionDistribution, params: tuple[torch.Tensor, ...]
) -> torch.distributions.Distribution:
    """``spec``'s torch distribution over ``params`` (the network's outputs, in ``param_keys`` order)."""
    cls = spec.torch_distribution_class()
    kwargs = {**dict(zip(spec.param_keys, params, strict=True)), **spec.torch_distribution_kwargs()}
    if _takes_validate_args(cls):
        kwargs.setdefault("validate_args", False)
    return cls(**kwargs)


@functools.cache
def _takes_validate_args(cls: type) -> bool:
    """Whether ``cls(...)`` accepts ``validate_args`` (named, or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "validate_args" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
