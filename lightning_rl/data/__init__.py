"""Experience DataModules: one per kind of experience an algorithm learns from."""

from lightning_rl.data.experience import ExperienceDataModule
from lightning_rl.data.on_policy import OnPolicyDataModule

__all__ = ["ExperienceDataModule", "OnPolicyDataModule"]
