"""Experience DataModules: one per kind of experience an algorithm learns from."""

from lightning_rl.data.async_data import AsyncDataModule
from lightning_rl.data.experience import ExperienceDataModule
from lightning_rl.data.offline import OfflineDataModule
from lightning_rl.data.on_policy import OnPolicyDataModule
from lightning_rl.data.transition_replay import ReplayDataModule

__all__ = [
    "AsyncDataModule",
    "ExperienceDataModule",
    "OfflineDataModule",
    "OnPolicyDataModule",
    "ReplayDataModule",
]
