"""DreamerV3's building blocks: normed dense stacks, the LayerNorm GRU, encoders, decoders, heads.

Every hidden layer is ``Linear (no bias) -> LayerNorm -> SiLU`` as in the paper's reference
implementation; weights start with the fan-average (Xavier) variance, and the two-hot reward
and critic output layers start at zero so that early predictions are exactly 0 instead of
random values of any size. Vector observations enter (and are predicted) in symlog space;
images are scaled to [-0.5, 0.5] and run through stride-2 convolutions (kernel 4) whose
channels double per layer from ``cnn_multiplier`` until the image is at most 4x4.

torchrl ships DreamerV3 networks too (``DreamerV3MLP``, ``DreamerV3ImageEncoder``,
``RSSMPriorV3`` ...), but they are TensorDict modules with fixed 64x64 image shapes and their
RSSM runs through ``RSSMRolloutV3``'s per-step TensorDict plumbing; the runner-side policy here
must step one env batch at a time without tensordict (EnvRunners do not import it), and the
learner's sequence loop is the hot path, so these are plain ``nn.Module`` s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchrl.modules.functional import symlog

from lightning_rl.algorithms.dreamerv3.model_sizes import ModelDims

LAYER_NORM_EPS = 1e-3
UNIMIX = 0.01  # 1% uniform mixed into every categorical (latents and discrete actions)
# Bounds of the continuous actor's standard deviation (the reference implementation's).
MIN_ACTION_STD, MAX_ACTION_STD = 0.1, 1.0


def init_weights(module: nn.Module) -> None:
    """Fan-average variance for every linear and conv weight, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def zero_output(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class NormDense(nn.Sequential):
    """``Linear (no bias) -> LayerNorm -> SiLU``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, out_dim, bias=False), nn.LayerNorm(out_dim, eps=LAYER_NORM_EPS), nn.SiLU()
        )


def dense_stack(in_dim: int, units: int, layers: int) -> nn.Sequential:
    return nn.Sequential(*[NormDense(in_dim if i == 0 else units, units) for i in range(layers)])


class LayerNormGRUCell(nn.Module):
    """The reference implementation's GRU: one matmul over ``[x, h]``, LayerNorm over the three
    gate pre-activations, and an update gate biased by -1 (it starts by mostly keeping ``h``)."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim + hidden, 3 * hidden, bias=False)
        self.norm = nn.LayerNorm(3 * hidden, eps=LAYER_NORM_EPS)
        self.hidden = hidden

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        parts = self.norm(self.linear(torch.cat([x, h], dim=-1)))
        reset, candidate, update = parts.split(self.hidden, dim=-1)
        candidate = torch.tanh(torch.sigmoid(reset) * candidate)
        update = torch.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * h.to(candidate.dtype)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of a ``[B, C, H, W]`` image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def image_layout(shape: Sequence[int]) -> tuple[bool, int, int, int]:
    """``(channels_last, C, H, W)`` of an image observation shape (channel-first or -last)."""
    shape = tuple(int(s) for s in shape)
    channels_last = shape[-1] <= 4 < shape[0]
    c, h, w = (shape[2], shape[0], shape[1]) if channels_last else shape
    return channels_last, c, h, w


class VectorEncoder(nn.Module):
    """symlog(observation) -> dense stack."""

    def __init__(self, obs_dim: int, dims: ModelDims, use_symlog: bool) -> None:
        super().__init__()
        self.use_symlog = use_symlog
        self.net = dense_stack(obs_dim, dims.dense_units, dims.dense_layers)
        self.out_dim = dims.dense_units

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.float()
        return self.net(symlog(obs) if self.use_symlog else obs)


class ImageEncoder(nn.Module):
    """Stride-2 conv stack (kernel 4) down to at most 4x4, channels ``m, 2m, 4m, ...``."""

    def __init__(self, shape: Sequence[int], dims: ModelDims, uint8: bool) -> None:
        super().__init__()
        self.channels_last, c, h, w = image_layout(shape)
        self.uint8 = uint8
        layers: list[nn.Module] = []
        self.sizes = [(h, w)]  # the decoder retraces these exactly
        in_c, out_c = c, dims.cnn_multiplier
        while min(h, w) > 4:
            layers += [nn.Conv2d(in_c, out_c, 4, 2, 1, bias=False), ChannelNorm(out_c, eps=LAYER_NORM_EPS)]
            layers.append(nn.SiLU())
            h, w = (h + 2 - 4) // 2 + 1, (w + 2 - 4) // 2 + 1
            self.sizes.append((h, w))
            in_c, out_c = out_c, out_c * 2
        if not layers:
            raise ValueError(f"Image observations must be larger than 4x4, got {tuple(shape)}.")
        self.conv = nn.Sequential(*layers)
        self.out_channels = in_c
        self.out_dim = in_c * h * w

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """``[..., image]`` -> float ``[N, C, H, W]`` in the scale the decoder predicts."""
        x = obs.reshape(-1, *obs.shape[-3:])
        x = x.float() / 255.0 - 0.5 if self.uint8 else x.float()
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-3]
        return self.conv(self.preprocess(obs)).reshape(*lead, -1)


class VectorDecoder(nn.Module):
    """Model state -> symlog(observation) (the loss compares in symlog space)."""

    def __init__(self, feature_size: int, obs_dim: int, dims: ModelDims) -> None:
        super().__init__()
        self.net = nn.Sequential(
            dense_stack(feature_size, dims.dense_units, dims.dense_layers),
            nn.Linear(dims.dense_units, obs_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class ImageDecoder(nn.Module):
    """Model state -> image in [-0.5, 0.5] (uint8 envs) through transposed convs mirroring the encoder."""

    def __init__(self, feature_size: int, encoder: ImageEncoder, out_channels: int) -> None:
        super().__init__()
        self.sizes = list(reversed(encoder.sizes))  # [(4, 4) ... (H, W)]
        self.start_channels = encoder.out_channels
        h, w = self.sizes[0]
        self.project = nn.Linear(feature_size, self.start_channels * h * w)
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        channels = self.start_channels
        for i in range(len(self.sizes) - 1):
            last = i == len(self.sizes) - 2
            out = out_channels if last else channels // 2
            self.layers.append(nn.ConvTranspose2d(channels, out, 4, 2, 1, bias=last))
            if not last:
                self.norms.append(ChannelNorm(out, eps=LAYER_NORM_EPS))
            channels = out
        self.channels_last = encoder.channels_last

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lead = features.shape[:-1]
        h, w = self.sizes[0]
        x = self.project(features.reshape(-1, features.shape[-1])).reshape(-1, self.start_channels, h, w)
        for i, layer in enumerate(self.layers):
            x = layer(x, output_size=list(self.sizes[i + 1]))
            if i < len(self.norms):
                x = nn.functional.silu(self.norms[i](x))
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        return x.reshape(*lead, *x.shape[1:])


class MLPHead(nn.Module):
    """Dense stack -> linear output (zero-initialised for the two-hot reward and critic heads)."""

    def __init__(self, in_dim: int, out_dim: int, dims: ModelDims, zero_init: bool = False) -> None:
        super().__init__()
        self.trunk = dense_stack(in_dim, dims.dense_units, dims.dense_layers)
        self.out = nn.Linear(dims.dense_units, out_dim)
        self.zero_init = zero_init

    def reset_output(self) -> None:
        if self.zero_init:
            zero_output(self.out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(features))


class Actor(nn.Module):
    """Model state -> action distribution: categorical with 1% unimix, or a Normal with
    ``tanh`` mean and a standard deviation in [0.1, 1] (the reference's continuous actor)."""

    def __init__(self, feature_size: int, action_dim: int, discrete: bool, dims: ModelDims) -> None:
        super().__init__()
        self.discrete = discrete
        self.action_dim = action_dim
        self.net = MLPHead(feature_size, action_dim if discrete else 2 * action_dim, dims)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(log_probs, None)`` (discrete) or ``(mean, std)`` (continuous), in float32."""
        out = self.net(features).float()
        if self.discrete:
            probs = (1.0 - UNIMIX) * torch.softmax(out, dim=-1) + UNIMIX / self.action_dim
            return probs.log(), None
        mean, std = out.chunk(2, dim=-1)
        std = (MAX_ACTION_STD - MIN_ACTION_STD) * torch.sigmoid(std + 2.0) + MIN_ACTION_STD
        return torch.tanh(mean), std

    def distribution(self, features: torch.Tensor) -> torch.distributions.Distribution:
        a, b = self(features)
        if self.discrete:
            return torch.distributions.OneHotCategoricalStraightThrough(logits=a)
        return torch.distributions.Independent(torch.distributions.Normal(a, b), 1)

    def sample(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One action per row (one-hot for discrete), plus the distribution parameters.

        Continuous samples are reparameterised (gradients reach the actor through the action
        when imagination backpropagates through the dynamics).
        """
        a, b = self(features)
        if self.discrete:
            noise = torch.empty_like(a).exponential_(generator=generator).log_()
            index = (a - noise).argmax(dim=-1)
            return nn.functional.one_hot(index, self.action_dim).to(a.dtype), a, None
        noise = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        return a + b * noise, a, b

    def mode(self, features: torch.Tensor) -> torch.Tensor:
        a, _ = self(features)
        if self.discrete:
            return nn.functional.one_hot(a.argmax(dim=-1), self.action_dim).to(a.dtype)
        return a


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    return (0.5 + 0.5 * math.log(2 * math.pi) + std.log()).sum(-1)
