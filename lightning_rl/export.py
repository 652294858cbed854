"""Self-contained policy artifacts: ONNX and TorchScript files with the connectors baked in.

An exported policy maps raw env observations to env actions by itself: the env-to-module
connectors (each one's :meth:`~lightning_rl.connectors.EnvToModule.as_module`, e.g. the
mean-std filter with its frozen statistics), the inference policy's greedy (or, with
``explore=True``, sampling) forward, and the module-to-env connectors (unsquashing, clipping,
the Discrete ``start`` offset). A connector without a tensor-op form (a frame stack keeps
per-episode state) makes the export fail with its name instead of producing an artifact
that silently acts differently. A memory-model policy (LSTM, GRU, attention) exports as a pure
function of its state: input ``state`` (zeros at an episode's first step) next to the
observation, output ``state_out`` next to the action, to be fed back on the next step; a
stateful policy without that form (DreamerV3) refuses. The artifact carries plain-data metadata:
spaces, policy id, connector specs, the state contract and the versions that wrote it.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from lightning_rl._tree import to_torch
from lightning_rl.errors import ConfigError
from lightning_rl.modules.distributions import CategoricalDistribution, DiagGaussianDistribution
from lightning_rl.optional import require
from lightning_rl.policy import Policy
from lightning_rl.serialization import space_to_data
from lightning_rl.version import __version__

__all__ = ["EXPORT_FORMATS", "ExportedPolicy", "export_policy", "read_export_metadata"]

EXPORT_FORMATS = ("onnx", "torchscript")
STATE_INPUT, STATE_OUTPUT = "state", "state_out"
METADATA_KEY = "lightning_rl"  # ONNX metadata_props key / TorchScript extra file name
EXPORT_FORMAT_VERSION = 1
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportedPolicy(nn.Module):
    """raw observation batch -> env action batch, as pure tensor ops.

    Sampling (``explore=True``) draws its noise with ``rand_like``/``randn_like``, which ONNX
    and TorchScript both express, instead of the runner's generator-driven fast path.
    """

    def __init__(self, policy: Policy, explore: bool = False) -> None:
        super().__init__()
        # Dict observations (e.g. observation + action_mask) are one graph input per key.
        space = policy.observation_space
        self.keys = list(space.spaces) if isinstance(space, spaces.Dict) else None
        self.obs_modules = nn.ModuleList(_connector_modules(policy.env_to_module, "env-to-module"))
        self.action_modules = nn.ModuleList(_connector_modules(policy.module_to_env, "module-to-env"))
        self.inference_policy = policy.inference_policy
        self.explore = explore
        self.discrete_start = policy._discrete_start
        self.stateful = exported_state_size(policy, explore) is not None
        if explore:
            self.distribution = _sampleable_distribution(policy)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.stateful:
            *inputs, state = inputs
        x: Any = dict(zip(self.keys, inputs, strict=True)) if self.keys is not None else inputs[0]
        for module in self.obs_modules:
            x = module(x)
        if self.stateful:
            action, state_out = self.inference_policy.export_step(x, state)
        else:
            action = self._sample(x) if self.explore else self.inference_policy(x, False, None)["action"]
        for module in self.action_modules:
            action = module(action)
        if self.discrete_start:
            action = action + self.discrete_start
        return (action, state_out) if self.stateful else action

    def _sample(self, x: torch.Tensor) -> torch.Tensor:
        params = self.inference_policy.net(x)
        if isinstance(self.distribution, CategoricalDistribution):
            (logits,) = params
            uniform = torch.rand_like(logits).clamp(1e-12, 1.0 - 1e-7)
            return (torch.log_softmax(logits, dim=-1) - torch.log(-torch.log(uniform))).argmax(dim=-1)
        loc, scale = params
        return loc + scale * torch.randn_like(loc)


def _connector_modules(pipeline: Any, seam: str) -> list[nn.Module]:
    modules = []
    for connector in pipeline:
        module = connector.as_module()
        if module is None:
            raise ConfigError(
                f"The {seam} connector {connector!r} has no tensor-op form (its as_module() returns None), "
                "so an exported policy would act differently from training; export is not possible "
                "with it. Use lightning_rl.Policy for inference instead."
            )
        modules.append(module.eval())
    return modules


def exported_state_size(policy: Policy, explore: bool = False) -> int | None:
    """The size of the state an artifact of ``policy`` takes and returns (None: stateless).

    Raises a ConfigError for a stateful policy without a pure step, or with ``explore=True``
    (sampling artifacts exist for stateless policies only).
    """
    inference_policy = policy.inference_policy
    if not inference_policy.keeps_episode_state:
        return None
    name = type(inference_policy).__name__
    if inference_policy.export_state_size is None:
        raise ConfigError(
            f"{name} keeps model state from step to step and has no pure export_step, so an exported "
            "artifact would act as if every step began an episode; export is not possible for it. "
            "Use lightning_rl.Policy for inference instead."
        )
    if explore:
        raise ConfigError(
            f"{name} is a memory-model policy; it exports greedy only (explore=False), with its state "
            f"as input {STATE_INPUT!r} and output {STATE_OUTPUT!r}."
        )
    return int(inference_policy.export_state_size)


def _sampleable_distribution(policy: Policy) -> Any:
    net = getattr(policy.inference_policy, "net", None)
    distribution = getattr(net, "distribution", None)
    if not isinstance(distribution, CategoricalDistribution | DiagGaussianDistribution):
        raise ConfigError(
            f"explore=True export needs an inference policy with a categorical or diagonal-Gaussian "
            f"PolicyNet (like StochasticPolicy); {type(policy.inference_policy).__name__} has none. "
            "Export with explore=False."
        )
    return distribution


_TENSOR_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiBinary, spaces.MultiDiscrete)


def example_inputs(policy: Policy) -> dict[str, torch.Tensor]:
    """``{input name: example batch}``: ``obs``, or one input per key of a Dict observation space."""
    space = policy.observation_space
    if isinstance(space, _TENSOR_SPACES):
        parts = {"obs": space}
    elif isinstance(space, spaces.Dict) and all(isinstance(s, _TENSOR_SPACES) for s in space.spaces.values()):
        parts = dict(space.spaces)
    else:
        raise ConfigError(
            f"Export feeds observations as tensors (one per key of a flat Dict space); the observation "
            f"space {space} is nested. Flatten it in the env (a gymnasium wrapper), or use "
            "lightning_rl.Policy."
        )
    examples = {}
    for name, part in parts.items():
        part.seed(0)
        examples[name] = to_torch(np.stack([part.sample() for _ in range(2)]))
    state_size = exported_state_size(policy)
    if state_size is not None:
        examples[STATE_INPUT] = torch.zeros(2, state_size)
    return examples


def metadata(policy: Policy, fmt: str, explore: bool, examples: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What a deployment needs to feed the artifact and read its output."""
    return {
        "format": "lightning-rl-policy",
        "format_version": EXPORT_FORMAT_VERSION,
        "package_version": __version__,
        "torch_version": torch.__version__,
        "artifact": fmt,
        "algorithm": policy.recipe.algorithm,
        "policy_id": policy.policy_id,
        "explore": explore,
        "inputs": [
            {"name": name, "dtype": str(x.dtype).removeprefix("torch."), "shape": ["batch", *x.shape[1:]]}
            for name, x in examples.items()
        ],
        "output_name": "action",
        "state": None
        if STATE_INPUT not in examples
        else {
            "input": STATE_INPUT,
            "output": STATE_OUTPUT,
            "size": int(examples[STATE_INPUT].shape[1]),
            "initial": "zeros at each episode's first step; then feed back the previous step's output",
        },
        "observation_space": space_to_data(policy.observation_space),
        "action_space": space_to_data(policy.action_space),
        "env_to_module": policy.recipe.env_to_module,
        "module_to_env": policy.recipe.module_to_env,
    }


def export_policy(
    policy: Policy,
    path: str | os.PathLike,
    format: Literal["onnx", "torchscript"] = "onnx",
    *,
    explore: bool = False,
) -> Path:
    """Write ``policy`` (connectors included) to ``path`` as ONNX or TorchScript; returns the path.

    The artifact's input ``obs`` is a batch of raw env observations (``float64`` Box
    observations as ``float32``, like the runners feed them; a Dict observation space gives one
    input per key, named after it); its output ``action`` is the batch of env actions
    (``explore=False``: the greedy action that evaluation takes).
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"Unknown export format {format!r}. Choices: {', '.join(EXPORT_FORMATS)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ExportedPolicy(policy, explore=explore).eval()
    examples = example_inputs(policy)
    info = json.dumps(metadata(policy, format, explore, examples))
    with torch.no_grad():
        if format == "onnx":
            _export_onnx(module, examples, path, info)
        else:
            _export_torchscript(module, examples, path, info)
    return path


def _export_onnx(module: nn.Module, examples: dict[str, torch.Tensor], path: Path, info: str) -> None:
    onnx = require("onnx", purpose="ONNX export")
    require("onnxscript", purpose="ONNX export")  # the torch.export-based exporter needs it
    batch = torch.export.Dim("batch", min=1)
    # The exporter logs a warning per torchvision op it cannot register; none is used here.
    exporter_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    previous_level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                tuple(examples.values()),
                dynamo=True,
                input_names=list(examples),
                output_names=["action", STATE_OUTPUT] if STATE_INPUT in examples else ["action"],
                # forward(*inputs): one positional parameter holding every input
                dynamic_shapes=(tuple({0: batch} for _ in examples),),
                verbose=False,
            )
    finally:
        exporter_log.setLevel(previous_level)
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info
    onnx.save(model, str(path))


def _export_torchscript(module: nn.Module, examples: dict[str, torch.Tensor], path: Path, info: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, tuple(examples.values()), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": info})


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata an exported artifact carries (spaces, policy id, versions)."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnx = require("onnx", purpose="Reading an ONNX policy's metadata")
        model = onnx.load(str(path), load_external_data=False)
        for entry in model.metadata_props:
            if entry.key == METADATA_KEY:
                return json.loads(entry.value)
        raise ConfigError(f"{str(path)!r} has no lightning-rl metadata.")
    files = {f"{METADATA_KEY}.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    if not files[f"{METADATA_KEY}.json"]:
        raise ConfigError(f"{str(path)!r} has no lightning-rl metadata.")
    return json.loads(files[f"{METADATA_KEY}.json"])


def default_export_path(checkpoint_path: str | os.PathLike, format: str, policy_id: str | None) -> Path:
    """``<checkpoint stem>[-<policy id>].onnx|.pt`` next to the checkpoint."""
    checkpoint_path = Path(checkpoint_path)
    stem = checkpoint_path.stem + (f"-{policy_id}" if policy_id else "")
    return checkpoint_path.with_name(stem + _SUFFIX[format])
