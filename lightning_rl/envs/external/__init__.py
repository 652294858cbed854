"""External simulators over TCP: the policy server (an EnvRunner kind) and its Python client.

Protocol: ``docs/external_env_protocol.md``. Attributes load lazily, so the algorithm config
can read :class:`ExternalEnvConfig` without importing the server, and a client process never
imports the server side.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExternalEnvClient": "lightning_rl.envs.external.client",
    "ExternalEnvConfig": "lightning_rl.envs.external.config",
    "ExternalEnvRunner": "lightning_rl.envs.external.runner",
    "ExternalEnvRunnerSpec": "lightning_rl.envs.external.runner",
    "ExternalSpacesEnv": "lightning_rl.envs.external.spaces_env",
    "PROTOCOL_VERSION": "lightning_rl.envs.external.protocol",
    "ServerError": "lightning_rl.envs.external.protocol",
    "TOKEN_ENV_VAR": "lightning_rl.envs.external.config",
    "external_runner_spec": "lightning_rl.envs.external.spec",
    "server_addresses": "lightning_rl.envs.external.spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_rl.envs.external' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
