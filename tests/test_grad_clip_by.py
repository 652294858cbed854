"""RLlib's ``grad_clip_by`` (issue 19 item 8): "value", "norm" and "global_norm" clip as named,
inside a real Lightning Trainer and through an algorithm's own clipping hook; bad values are
refused at construction with the choices named."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_rl.algorithms.dreamerv3 import DreamerV3Config
from lightning_rl.algorithms.gradient_clipping import GRAD_CLIP_BY, clip_gradients
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.errors import ConfigError, UnknownNameError

# Two parameters whose gradients have L2 norms 5 and 0.3 (joint norm sqrt(25.09)).
GRAD_A = [3.0, 4.0]
GRAD_B = [0.1, -0.2, 0.2]


class _ClipProbe(pl.LightningModule):
    """One manual-optimisation step that clips the same gradients in each mode and keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(3))
        self.clipped: dict[str, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        for mode in GRAD_CLIP_BY:
            optimizer.zero_grad()
            loss = (self.a * torch.tensor(GRAD_A)).sum() + (self.b * torch.tensor(GRAD_B)).sum()
            self.manual_backward(loss)
            clip_gradients(self, optimizer, 1.0, mode)
            self.clipped[mode] = [self.a.grad.clone(), self.b.grad.clone()]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return [torch.zeros(1)]


def test_value_norm_and_global_norm_clip_as_named(tmp_path):
    probe = _ClipProbe()
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(probe)
    a, b = probe.clipped["value"]  # each element into [-1, 1]
    assert a.tolist() == [1.0, 1.0] and b.tolist() == pytest.approx(GRAD_B)
    a, b = probe.clipped["norm"]  # each tensor on its own: a (norm 5) to norm 1, b (0.3) untouched
    assert a.tolist() == pytest.approx([0.6, 0.8], abs=1e-5) and b.tolist() == pytest.approx(GRAD_B)
    a, b = probe.clipped["global_norm"]  # both scaled by 1 / joint norm
    scale = 1.0 / math.sqrt(25.0 + 0.09)
    assert a.tolist() == pytest.approx([3.0 * scale, 4.0 * scale], abs=1e-5)
    assert b.tolist() == pytest.approx([g * scale for g in GRAD_B], abs=1e-5)
    assert math.sqrt(sum(float(g.pow(2).sum()) for g in (a, b))) == pytest.approx(1.0, abs=1e-4)


def test_ppo_clips_its_gradients_by_grad_clip_by(tmp_path):
    """PPO's clipping hook (the one every update calls) follows grad_clip_by, here "value"."""
    algo = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .training(train_batch_size=32, minibatch_size=32, num_epochs=1, grad_clip=0.25, grad_clip_by="value")
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        algo.train()
        ppo = algo.algorithm
        optimizer = ppo.trainer.optimizers[0]
        for p in ppo.parameters():
            p.grad = torch.full_like(p, 3.0)
        ppo.configure_gradient_clipping(optimizer)
        assert all(torch.all(p.grad == 0.25) for p in ppo.parameters())
    finally:
        algo.stop()


def test_bad_grad_clip_settings_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"grad_clip_by must be one of \['global_norm', 'norm', 'value'\]"):
        PPO("CartPole-v1", grad_clip_by="max")
    for bad in (0.0, -1.0, float("inf"), True, "1"):
        with pytest.raises(ConfigError, match="grad_clip must be a positive number or None"):
            PPO("CartPole-v1", grad_clip=bad)
    # The default is RLlib's, and existing configs keep their global-norm clipping.
    assert PPOConfig().grad_clip_by == "global_norm" == PPO.__init__.__kwdefaults__["grad_clip_by"]
    # DreamerV3 clips each optimizer by global norm (its own settings), as RLlib's.
    with pytest.raises(UnknownNameError, match="grad_clip_by"):
        DreamerV3Config().training(grad_clip_by="value")
