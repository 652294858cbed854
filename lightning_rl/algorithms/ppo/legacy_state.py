"""Reading PPO checkpoints written while the loss was a torchrl ``ClipPPOLoss`` submodule.

Those modules also held the loss object (``loss.*``: second references to the actor and critic
weights plus its coefficients) and torchrl's actor wrapper (``actor.*``, the same weights as
``policy_net``); the memory-model module also a critic wrapper (``critic.*``, the weights of
``model``). The loss is now written out in :mod:`.loss`, so these entries hold nothing the
module does not already load from its own keys: they are dropped when such a checkpoint loads.
The same holds for ``gae.gamma``/``gae.lmbda``, the buffers of torchrl's ``GAE`` module that the
feed-forward module held until GAE became a call of torchrl's functional estimator (both come
from the hyperparameters).
"""

from __future__ import annotations

from typing import Any

from torch import nn

LEGACY_PREFIXES = ("loss.", "actor.", "critic.", "gae.")


def drop_legacy_loss_state(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *_args: Any, **_kwargs: Any
) -> None:
    """``load_state_dict`` pre-hook: remove the old loss-object entries under ``prefix``.

    A key is dropped only where the module has no such entry itself (the feed-forward module
    keeps its ``critic`` wrapper for GAE; the memory-model module has none).
    """
    own = {prefix + key for key in module.state_dict()}
    for key in list(state_dict):
        if key.startswith(prefix) and key not in own and key[len(prefix) :].startswith(LEGACY_PREFIXES):
            del state_dict[key]
