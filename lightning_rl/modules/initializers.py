"""RLlib's ``*_initializer`` / ``*_initializer_kwargs`` model-config keys, checked and stored by name.

RLlib's ``DefaultModelConfig`` takes, for the encoder MLP (``fcnet_*``), the heads
(``head_fcnet_*``) and the conv stack (``conv_*``), a weight ("kernel") and a bias initialiser:
a function of ``torch.nn.init`` or its name (RLlib's ``get_initializer_fn``: the name
lower-cased, the in-place spelling with a trailing ``_``), plus a kwargs dict passed to it.

A model config travels in checkpoints, hyperparameters and YAML as plain data, and a checkpoint
is untrusted: so a value is resolved only against ``torch.nn.init``'s own initialisers (a
callable by identity, a name by lookup in that fixed table; nothing is imported), stored as its
canonical name (``"xavier_uniform_"``, never the function object), and its kwargs must be a dict
of plain, finite values that the function's signature accepts. Anything else is one
:class:`~lightning_rl.errors.ConfigError` naming the value and the choices.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_rl.errors import ConfigError, unknown_name_message

#: The in-place initialisers of ``torch.nn.init`` (its public API, ``calculate_gain`` aside).
INITIALIZERS: dict[str, Callable[..., Any]] = {
    name: getattr(nn.init, name)
    for name in nn.init.__all__
    if name.endswith("_") and callable(getattr(nn.init, name, None))
}
# torch's deprecated out-of-place aliases (``nn.init.xavier_uniform``) name the same initialiser.
_DEPRECATED_ALIASES: dict[int, str] = {
    id(getattr(nn.init, name[:-1])): name
    for name in INITIALIZERS
    if callable(getattr(nn.init, name[:-1], None))
}
_BY_IDENTITY: dict[int, str] = {id(fn): name for name, fn in INITIALIZERS.items()} | _DEPRECATED_ALIASES
# Keyword arguments that are not plain data (the tensor itself, a torch.Generator).
_NOT_CONFIGURABLE = {"tensor", "generator"}

#: The prefixes of RLlib's initialiser keys: encoder MLP, heads, conv stack.
INITIALIZER_GROUPS = ("fcnet", "head_fcnet", "conv")


def initializer_keys(group: str) -> tuple[str, str, str, str]:
    """``(kernel, kernel_kwargs, bias, bias_kwargs)`` key names of one group (``"fcnet"`` ...)."""
    return (
        f"{group}_kernel_initializer",
        f"{group}_kernel_initializer_kwargs",
        f"{group}_bias_initializer",
        f"{group}_bias_initializer_kwargs",
    )


ALL_INITIALIZER_KEYS = tuple(key for group in INITIALIZER_GROUPS for key in initializer_keys(group))


def resolve_initializer(key: str, value: Any) -> str | None:
    """The canonical ``torch.nn.init`` name of ``value`` (None stays None), or one ConfigError.

    Accepted: a function of ``torch.nn.init`` (``nn.init.orthogonal_``, also torch's deprecated
    ``nn.init.orthogonal``) or its name in any case, with or without the trailing ``_``
    (``"orthogonal_"``, ``"Orthogonal_"``, ``"orthogonal"``). An arbitrary callable is refused:
    the stored config must rebuild the same network from plain data.
    """
    if value is None:
        return None
    choices = sorted(INITIALIZERS)
    if isinstance(value, str):
        name = value.strip().lower()
        if name in INITIALIZERS:
            return name
        if f"{name}_" in INITIALIZERS:
            return f"{name}_"
        raise ConfigError(
            unknown_name_message(f"model_config {key} (a torch.nn.init initializer)", value, choices)
        )
    if callable(value):
        name = _BY_IDENTITY.get(id(value))
        if name is not None and (INITIALIZERS[name] is value or getattr(nn.init, name[:-1], None) is value):
            return name
    raise ConfigError(
        f"model_config {key} must be a torch.nn.init initializer (the function or its name), got {value!r}. "
        f"Choices: {', '.join(choices)}."
    )


def _plain_number_or_name(value: Any) -> bool:
    if value is None or isinstance(value, bool | str):
        return True
    return isinstance(value, int | float) and math.isfinite(float(value))


def resolve_initializer_kwargs(key: str, initializer: str | None, kwargs: Any) -> dict[str, Any] | None:
    """``kwargs`` for ``initializer`` as a checked plain dict (None stays None), or one ConfigError.

    Keys must be parameters of the initialiser (``tensor`` and ``generator`` aside), values plain
    finite numbers, booleans, strings or None. kwargs without an initialiser would be ignored, so
    they are refused rather than silently dropped.
    """
    if kwargs is None and initializer is None:
        return None
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConfigError(f"model_config {key} must be a dict of keyword arguments or None, got {kwargs!r}.")
    initializer_key = key.removesuffix("_kwargs")
    given = {} if kwargs is None else dict(kwargs)
    if initializer is None:
        if not given:
            return None
        raise ConfigError(
            f"model_config {key}={given!r} is set but {initializer_key} is not; name the initializer "
            f"(e.g. {initializer_key}='constant_') or drop the kwargs."
        )
    parameters = inspect.signature(INITIALIZERS[initializer]).parameters
    allowed = [name for name in list(parameters)[1:] if name not in _NOT_CONFIGURABLE]
    plain: dict[str, Any] = {}
    for name, value in given.items():
        if not isinstance(name, str) or name not in allowed:
            raise ConfigError(
                f"model_config {key}: {name!r} is not a keyword argument of torch.nn.init.{initializer}. "
                f"Choices: {', '.join(allowed) or '(none)'}."
            )
        if not _plain_number_or_name(value):
            raise ConfigError(
                f"model_config {key}[{name!r}] must be a finite number, a bool, a string or None, "
                f"got {value!r}."
            )
        plain[name] = value
    missing = [
        name
        for name, parameter in parameters.items()
        if name in allowed and parameter.default is inspect.Parameter.empty and name not in plain
    ]
    if missing:
        raise ConfigError(
            f"model_config {key} must give {', '.join(missing)} for torch.nn.init.{initializer} "
            f"(e.g. {key}={{{missing[0]!r}: 0.0}}), got {kwargs!r}."
        )
    return None if kwargs is None else plain


def canonical_initializer_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The initialiser keys present in ``values`` with names canonical and kwargs checked (plain
    data for hyperparameters and checkpoints); other keys are left out."""
    out: dict[str, Any] = {}
    for group in INITIALIZER_GROUPS:
        for name_key, kwargs_key in zip(
            initializer_keys(group)[0::2], initializer_keys(group)[1::2], strict=True
        ):
            name = resolve_initializer(name_key, values.get(name_key))
            kwargs = resolve_initializer_kwargs(kwargs_key, name, values.get(kwargs_key))
            if name_key in values:
                out[name_key] = name
            if kwargs_key in values:
                out[kwargs_key] = kwargs
    return out


@dataclass(frozen=True)
class LayerInit:
    """The weight and bias initialisers of one group of layers (canonical names, checked kwargs).

    A part left None keeps what the network would do without it (orthogonal init with the
    project's gains when ``orthogonal_init``, else PyTorch's default), so a config that names no
    initialiser builds exactly the same network as before.
    """

    group: str = "fcnet"
    kernel: str | None = None
    kernel_kwargs: dict[str, Any] = field(default_factory=dict)
    bias: str | None = None
    bias_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return self.kernel is None and self.bias is None

    def apply(self, layer: nn.Module) -> nn.Module:
        """Initialise ``layer.weight``/``layer.bias`` with the named initialisers (None: untouched)."""
        kernel_key, _, bias_key, _ = initializer_keys(self.group)
        with torch.no_grad():
            if self.kernel is not None:
                self._call(kernel_key, self.kernel, self.kernel_kwargs, layer.weight)
            if self.bias is not None and getattr(layer, "bias", None) is not None:
                self._call(bias_key, self.bias, self.bias_kwargs, layer.bias)
        return layer

    @staticmethod
    def _call(key: str, name: str, kwargs: dict[str, Any], tensor: torch.Tensor) -> None:
        try:
            INITIALIZERS[name](tensor, **kwargs)
        except (ValueError, RuntimeError, TypeError) as exc:
            # e.g. eye_ on a 1-D bias, dirac_ on a Linear weight, an out-of-range mode string.
            raise ConfigError(
                f"model_config {key}={name!r} with kwargs {kwargs!r} cannot initialise a tensor of shape "
                f"{tuple(tensor.shape)}: {exc}"
            ) from exc


DEFAULT_LAYER_INIT = LayerInit()
