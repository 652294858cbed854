"""Experience DataModules: one per kind of experience an algorithm learns from.

The DataModules load on first use: an on-policy run that imports
``lightning_rl.data.on_policy`` does not pay for the replay DataModule's torchrl.data (about
1 s and 70 MB), nor the offline one's pyarrow.
"""

from __future__ import annotations

from lightning_rl._imports import lazy_exports

_EXPORTS = {
    "AsyncDataModule": "lightning_rl.data.async_data",
    "ExperienceDataModule": "lightning_rl.data.experience",
    "OfflineDataModule": "lightning_rl.data.offline",
    "OnPolicyDataModule": "lightning_rl.data.on_policy",
    "ReplayDataModule": "lightning_rl.data.transition_replay",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
