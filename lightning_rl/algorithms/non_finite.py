"""The learner's guard against non-finite losses and gradients: skip, count, then stop.

One NaN in a batch (an env's reward, a client's upload, an overflow in float32) turns every
weight it reaches into NaN at the next optimizer step, and from then on the policy is lost
while training runs on silently. The guard sits on Lightning's two hooks that every
algorithm's optimisation passes through, automatic (PPO, IMPALA, APPO, BC, MARWIL, plugins)
and manual (DQN, SAC, CQL, DreamerV3) alike: ``on_before_backward`` sees the loss,
``on_before_optimizer_step`` sees the gradients after backward (and, under DDP, after the
all-reduce, so every rank decides the same). A non-finite loss or gradient skips the step by
setting that optimizer's gradients to ``None``: torch's optimizers skip parameters without a
gradient, so weights and optimizer moments stay exactly as they were. Skips are counted per
policy (``learners/<policy_id>/num_non_finite_updates_skipped``); after
``max_consecutive_non_finite_updates`` skips of a policy in a row, training stops with a
:class:`~lightning_rl.errors.NonFiniteError` naming the policy and the first non-finite key of
the batch. Under fp16 mixed precision, inf gradients are the loss scaler's business (it skips
and lowers the scale), so only the loss is checked there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lightning_rl.errors import NonFiniteError


class NonFiniteGuard:
    """Per-update bookkeeping of the guard (see the module docstring)."""

    def __init__(self, max_consecutive: int) -> None:
        self.max_consecutive = int(max_consecutive)
        self.loss: torch.Tensor | None = None  # the loss of the backward that led to this step
        self.batch: Any = None  # the training batch (for the error message)
        self.skipped: dict[str, int] = {}  # skips per policy in iteration ``self.epoch``
        self.epoch = -1
        self.last_step_skipped = False  # whether the latest optimizer step was skipped
        # One update = one backward, even when several optimizers step after it (DreamerV3's
        # world model, actor and critic): it is counted once.
        self._backward_id = 0
        self._counted_id = -1
        self.consecutive: dict[str, int] = {}
        self.num_skipped_lifetime = 0
        self._owner_cache: dict[tuple[int, int, int], list[str]] = {}

    def start_batch(self, batch: Any) -> None:
        """A new training batch: remember it for messages; forget the last batch's loss."""
        self.batch = batch
        self.loss = None

    def before_backward(self, loss: torch.Tensor) -> None:
        self.loss = loss.detach()
        self._backward_id += 1

    def before_optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        policies: Mapping[str, nn.Module],
        check_gradients: bool,
        any_rank: Any = None,
        epoch: int = 0,
    ) -> bool:
        """Check this step's loss and gradients; on a non-finite one, drop the gradients (so the
        step leaves the weights alone), count it, and raise past the limit. Returns True when
        the step was skipped. ``any_rank``: reduces the decision over DDP ranks (or None)."""
        all_params = [p for group in optimizer.param_groups for p in group["params"]]
        params = [p for p in all_params if p.grad is not None]
        # The loss and every gradient norm in one sum and one read back to the host: this runs
        # at every update (float64, so that large finite norms cannot add up to a false inf).
        total = None if self.loss is None else self.loss.double().sum()
        if check_gradients and params:
            norms = torch.stack(torch._foreach_norm([p.grad for p in params])).double().sum()
            total = norms if total is None else total + norms
        bad = total is not None and not bool(torch.isfinite(total))
        if any_rank is not None:
            bad = bool(any_rank(bad))
        owners = self._owners(optimizer, all_params, policies)
        self.last_step_skipped = bad
        if not bad:
            for policy_id in owners:
                self.consecutive[policy_id] = 0
            return False
        culprits = self._culprits(params, policies, owners)
        if epoch != self.epoch:
            self.skipped, self.epoch = {}, epoch
        for p in params:
            p.grad = None
        if self._counted_id == self._backward_id:
            return True  # this update's skip is counted already
        self._counted_id = self._backward_id
        self.num_skipped_lifetime += 1
        for policy_id in culprits:
            self.skipped[policy_id] = self.skipped.get(policy_id, 0) + 1
            self.consecutive[policy_id] = self.consecutive.get(policy_id, 0) + 1
        for policy_id in culprits:
            if self.consecutive[policy_id] >= self.max_consecutive:
                raise NonFiniteError(self._message(policy_id))
        return True

    def skipped_in(self, epoch: int, policy_ids: list[str]) -> dict[str, int]:
        """Skips per policy in iteration ``epoch`` (0 for policies without any)."""
        counts = self.skipped if epoch == self.epoch else {}
        return {pid: counts.get(pid, 0) for pid in policy_ids}

    # -- attribution -------------------------------------------------------------------------
    def _owners(
        self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], policies: Mapping[str, nn.Module]
    ) -> list[str]:
        """The policies whose parameters (``params``, all of ``optimizer``'s) it trains (cached
        per optimizer and size)."""
        key = (id(optimizer), len(params), len(policies))
        cached = self._owner_cache.get(key)
        if cached is None:
            ids = {id(p) for p in params}
            cached = [
                pid for pid, module in policies.items() if any(id(p) in ids for p in module.parameters())
            ]
            self._owner_cache[key] = cached
        return cached

    def _culprits(
        self, params: list[torch.Tensor], policies: Mapping[str, nn.Module], owners: list[str]
    ) -> list[str]:
        """The policies to blame: those with non-finite gradients, else those whose batch holds a
        non-finite value, else every policy this optimizer trains."""
        ids = {id(p) for p in params if not bool(torch.isfinite(p.grad).all())}
        with_bad_grads = [
            pid for pid, module in policies.items() if any(id(p) in ids for p in module.parameters())
        ]
        if with_bad_grads:
            return with_bad_grads
        with_bad_data = [pid for pid in owners if first_non_finite_key(self._policy_batch(pid)) is not None]
        return with_bad_data or owners or ["?"]

    def _policy_batch(self, policy_id: str) -> Any:
        batch = self.batch
        if isinstance(batch, Mapping) and policy_id in batch and _is_batch(batch[policy_id]):
            return batch[policy_id]
        return batch

    def _message(self, policy_id: str) -> str:
        key = first_non_finite_key(self._policy_batch(policy_id))
        where = (
            f"the first non-finite input is batch key {key!r}"
            if key is not None
            else "the batch is finite, so the weights, the learning rate or the loss itself overflowed"
        )
        return (
            f"Policy {policy_id!r}: {self.consecutive[policy_id]} updates in a row had a non-finite loss "
            "or gradient and were skipped "
            f"(max_consecutive_non_finite_updates={self.max_consecutive}); {where}. "
            "Check the env's rewards and observations, or lower lr / enable grad_clip."
        )


def _is_batch(value: Any) -> bool:
    return isinstance(value, Mapping) or hasattr(value, "keys")


def first_non_finite_key(batch: Any, prefix: tuple[str, ...] = ()) -> str | tuple[str, ...] | None:
    """The first key (in the batch's order, nested keys as tuples) holding a non-finite float."""
    if batch is None:
        return None
    if isinstance(batch, torch.Tensor):
        if batch.is_floating_point() and not bool(torch.isfinite(batch).all()):
            return prefix if len(prefix) > 1 else (prefix[0] if prefix else "")
        return None
    if not _is_batch(batch):
        return None
    for key in list(batch.keys()):
        found = first_non_finite_key(batch[key], (*prefix, key))
        if found is not None:
            return found
    return None


class NonFiniteHooks:
    """The guard's three Lightning hooks, mixed into :class:`~lightning_rl.algorithms.Algorithm`.

    A mixin rather than an object because Lightning finds hooks only as methods of the
    LightningModule; the state lives in the :class:`NonFiniteGuard` the algorithm holds as
    ``_non_finite_guard``.
    """

    _non_finite_guard: NonFiniteGuard

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._trainer is not None and self.trainer.training:
            self._non_finite_guard.start_batch(batch)
        return batch

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._non_finite_guard.before_backward(loss)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        trainer = self.trainer
        strategy = trainer.strategy
        any_rank = (
            (lambda bad: strategy.reduce_boolean_decision(bad, all=False)) if trainer.world_size > 1 else None
        )
        # fp16 mixed precision: the loss scaler handles inf gradients (skips, lowers the scale).
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._non_finite_guard.before_optimizer_step(
            optimizer,
            self.policies,
            check_gradients=scaler is None,
            any_rank=any_rank,
            epoch=self.current_epoch,
        )
