"""Algorithms: each one a LightningModule subclass of :class:`Algorithm`."""

from lightning_rl.algorithms.base import DEFAULT_POLICY_ID, Algorithm

__all__ = ["DEFAULT_POLICY_ID", "Algorithm"]
