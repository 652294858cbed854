"""External simulators over TCP, the client side: what a simulator process imports.

The Python client, the wire protocol, the connection settings (:class:`ExternalEnvConfig`,
which the algorithm also reads) and a gymnasium env over a client. The server side (the
:class:`~lightning_rl.external_server.ExternalEnvRunner` that hosts the policy server) builds on
the EnvRunners and lives in :mod:`lightning_rl.external_server`; nothing here imports it, so a
client process never loads torch's training stack. Protocol: ``docs/external_env_protocol.md``.
Attributes load lazily.
"""

from __future__ import annotations

from lightning_rl._imports import lazy_exports

_EXPORTS = {
    "ExternalEnvClient": "lightning_rl.envs.external.client",
    "ExternalEnvConfig": "lightning_rl.envs.external.config",
    "ExternalSpacesEnv": "lightning_rl.envs.external.spaces_env",
    "PROTOCOL_VERSION": "lightning_rl.envs.external.protocol",
    "ServerError": "lightning_rl.envs.external.protocol",
    "TOKEN_ENV_VAR": "lightning_rl.envs.external.config",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
