"""Tensors on their way to Ray actors: numpy arrays out of band, torch tensors again on arrival.

Ray pickles numpy arrays out of band (their bytes are copied into the object store untouched
and read in place), torch tensors in band through torch's own reducer, which writes every
storage through ``torch.save``. For the learner's state that the runners load every iteration
(PPO's two 64x64 layers on CartPole, ~20 KB) a pickle round trip took ~510 us as tensors and
~20 us as arrays; a 2-runner iteration's ``ray.put`` + ``set_state`` went from 4.2 to 3.1 ms.
Runner results already travel as arrays (:func:`~lightning_rl.env_runners.env_runner_group.numpy_results`);
this is the other direction.

Only plain CPU tensors without gradient, of a dtype numpy has, are converted (what
``state_dict()`` holds), and each comes back as a plain tensor of the same dtype and shape in
memory the runner owns, so a runner sees exactly what it saw before. Anything else (a
``Parameter``, a GPU or bfloat16 tensor, a numpy array, a scalar) keeps Ray's own pickling.
Containers keep their type: a ``state_dict``'s ``OrderedDict`` keeps its ``_metadata``, a
``defaultdict`` its factory, a namedtuple its class.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

# The torch dtypes whose tensors numpy can hold.
_NUMPY_DTYPES = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.float32,
        torch.float64,
    }
)


class WireArray:
    """A torch tensor's values as a numpy array, for one trip through Ray's serializer."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[type, tuple[np.ndarray]]:
        return (WireArray, (self.array,))

    def to_tensor(self) -> torch.Tensor:
        array = self.array if self.array.flags.writeable else self.array.copy()
        return torch.from_numpy(array)


def _convertible(x: Any) -> bool:
    return (
        type(x) is torch.Tensor
        and x.device.type == "cpu"
        and x.layout is torch.strided
        and x.dtype in _NUMPY_DTYPES
        and not x.requires_grad
        and not x.is_neg()
    )


def _map(fn: Any, tree: Any) -> Any:
    if type(tree) is dict:
        return {key: _map(fn, value) for key, value in tree.items()}
    if isinstance(tree, dict):
        try:
            out = copy.copy(tree)  # the subclass with its attributes (a state_dict's _metadata)
        except Exception:  # a mapping that cannot be copied travels as it is
            return tree
        for key, value in tree.items():
            out[key] = _map(fn, value)
        return out
    if type(tree) in (list, tuple):
        return type(tree)(_map(fn, value) for value in tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a namedtuple
        return type(tree)(*(_map(fn, value) for value in tree))
    return fn(tree)


def _to_wire(x: Any) -> Any:
    return WireArray(x.numpy()) if _convertible(x) else x


def _own_copy(x: Any) -> Any:
    if isinstance(x, WireArray):
        return WireArray(x.array.copy())
    return copy.deepcopy(x) if isinstance(x, torch.Tensor) else x


def _from_wire(x: Any) -> Any:
    return x.to_tensor() if isinstance(x, WireArray) else x


def tensors_to_wire(tree: Any) -> Any:
    """``tree`` with its plain CPU tensors as :class:`WireArray`: views of the tensors' memory,
    serialised at once by ``ray.put`` (:func:`owned_copy` for a tree serialised later)."""
    return _map(_to_wire, tree)


def owned_copy(wire: Any) -> Any:
    """``wire`` (from :func:`tensors_to_wire`) with its own copy of every array and tensor, for
    a tree kept to be serialised later (an argument of calls still to come), which the
    learner's next step must not change."""
    return _map(_own_copy, wire)


def tensors_from_wire(tree: Any) -> Any:
    """``tree`` with every :class:`WireArray` a writable torch tensor again."""
    return _map(_from_wire, tree)


__all__ = ["WireArray", "owned_copy", "tensors_from_wire", "tensors_to_wire"]
