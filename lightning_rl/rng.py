"""Random-number-generator states as plain data, so checkpoints resume the same random streams.

Kept as tensors, lists and numbers (not numpy or Python objects), so a checkpoint holding them
still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def restore(states: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    if not states:
        return
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    python_state = states["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
    for name, generator in (generators or {}).items():
        if name in states.get("generators", {}):
            generator.set_state(states["generators"][name])
