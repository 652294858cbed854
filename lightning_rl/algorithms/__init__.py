"""Algorithms: each one a LightningModule subclass of :class:`Algorithm`."""

from lightning_rl.algorithms.base import Algorithm
from lightning_rl.algorithms.policy_module import PolicyModule
from lightning_rl.constants import DEFAULT_POLICY_ID

__all__ = ["DEFAULT_POLICY_ID", "Algorithm", "PolicyModule"]
