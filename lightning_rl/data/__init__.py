"""Experience DataModules: one per kind of experience an algorithm learns from."""

from lightning_rl.data.experience import ExperienceDataModule
from lightning_rl.data.offline import OfflineDataModule
from lightning_rl.data.on_policy import OnPolicyDataModule
from lightning_rl.data.replay import ReplayDataModule

__all__ = ["ExperienceDataModule", "OfflineDataModule", "OnPolicyDataModule", "ReplayDataModule"]
