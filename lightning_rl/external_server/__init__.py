"""The server side of external simulators: an EnvRunner kind that serves actions over TCP.

:class:`ExternalEnvRunner` is an EnvRunner whose env copies are remote clients: it hosts a
:class:`~lightning_rl.external_server.server.PolicyServer` (sockets, authentication, flow
control), answers their steps with one batched forward of its runner policy
(:mod:`~lightning_rl.external_server.backend`), serves ONNX/TorchScript snapshots for client-side
inference (:mod:`~lightning_rl.external_server.local_model`) and hands finished episode segments to
the learner like any runner. It builds on ``env_runners`` and the inference layer, so it lives
above them; the client SDK a simulator imports (:mod:`lightning_rl.envs.external`) lives low and
never imports this package. Protocol: ``docs/external_env_protocol.md``.
"""

from __future__ import annotations

from lightning_rl.external_server.addresses import server_addresses
from lightning_rl.external_server.runner import ExternalEnvRunner, ExternalEnvRunnerSpec

__all__ = ["ExternalEnvRunner", "ExternalEnvRunnerSpec", "server_addresses"]
