"""The ``external=`` setting of an algorithm: where the policy server listens and how it behaves.

It is plain data (it lands in the algorithm's hyperparameters and checkpoints), except the
shared token: that is kept out of the hyperparameters so it never reaches a checkpoint or a
logger. A restored run gets it again from ``external={"token": ...}`` or from the environment
variable :data:`TOKEN_ENV_VAR`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from lightning_rl.envs.external.protocol import DEFAULT_MAX_FRAME_BYTES
from lightning_rl.errors import ConfigError, unknown_name_message

TOKEN_ENV_VAR = "LIGHTNING_RL_EXTERNAL_TOKEN"
BATCH_MODES = ("truncate_episodes", "complete_episodes")


@dataclass
class ExternalEnvConfig:
    """Settings of the external-env policy server (``external={...}`` in the algorithm config).

    Args:
        host: address to listen on; 127.0.0.1 (loopback only) unless you mean to accept remote
            simulators (then also use a strong token and a trusted network or a TLS tunnel).
        port: TCP port; 0 picks a free one (read it from ``address_file`` or the runner).
            With several runners (``num_env_runners=k``), runner ``i`` listens on ``port + i``.
        token: shared secret every client must present in its ``hello``; None reads the
            environment variable ``LIGHTNING_RL_EXTERNAL_TOKEN``. Never stored in checkpoints.
        batch_mode: ``"truncate_episodes"``: a sample ends as soon as enough steps arrived and
            running episodes are cut there (marked truncated, bootstrapped from their true next
            observation, continued in the next sample), like the EnvRunners' fragments;
            ``"complete_episodes"``: once enough steps arrived the server starts no new episode
            and waits for the running ones to end, so batches hold whole episodes only.
        max_frame_bytes: largest frame body the server reads; bigger frames are refused.
        timeout_s: a connection that keeps the server waiting this long for its next complete
            frame is closed (time the server itself holds a request does not count).
        handshake_timeout_s: time a new connection has to send a valid ``hello``; short, because
            an unauthenticated socket is all an attacker without the token can hold.
        max_clients: concurrent authenticated connections; more are refused with
            ``too_many_clients``. Sockets still waiting for their ``hello`` do not count here.
        max_unauthenticated: sockets that may wait for their ``hello`` at once; a new one beyond
            this closes the one that has waited longest, so idle sockets reopened by someone
            without the token cannot keep clients that say ``hello`` at once from connecting.
            Before its ``hello`` is accepted a socket may send frames of at most 4 KiB.
        max_outbound_bytes: replies the server buffers for one client that does not read them;
            above this the server stops reading that client's requests, and a client that does
            not read for ``timeout_s`` is dropped.
        max_abs_reward: largest reward magnitude accepted from a client (one step's reward,
            summed over ``log_returns``); bigger values are ``bad_request`` because squared in a
            value loss they overflow float32. None: only float32 finiteness is checked.
        max_abs_log_prob: largest action log-probability magnitude accepted in an upload
            (log-probs of discrete actions must also be <= 0); a value a model cannot produce.
        drain_timeout_s: ``complete_episodes`` mode: once enough steps arrived, how long a sample
            waits for the running episodes to end. Episodes still running then are dropped from
            training (their client keeps being served; that episode is not learned from), so one
            client that never ends its episode cannot stop training.
        sample_timeout_s: how long one ``sample()`` waits for clients to deliver enough steps
            before raising EnvError; None: the algorithm's ``sample_timeout_s``; 0: forever.
        address_file: write ``{"host", "port", "pid"}`` as JSON here once listening (a
            ``{worker_index}`` placeholder separates several runners).
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    batch_mode: str = "truncate_episodes"
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    timeout_s: float = 60.0
    handshake_timeout_s: float = 5.0
    max_clients: int = 1024
    max_unauthenticated: int = 256
    max_outbound_bytes: int = 4 * 1024 * 1024
    max_abs_reward: float | None = 1e9
    max_abs_log_prob: float = 1e3
    drain_timeout_s: float = 30.0
    sample_timeout_s: float | None = None
    address_file: str | None = None

    def to_dict(self, with_token: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not with_token:
            data.pop("token")
        return data

    def resolved_token(self) -> str:
        """The token to require: the configured one, else the environment variable."""
        token = self.token if self.token is not None else os.environ.get(TOKEN_ENV_VAR)
        if not token:
            raise ConfigError(
                "The external env server needs a shared token: pass external={'token': ...} or set the "
                f"environment variable {TOKEN_ENV_VAR}. Every client must present it."
            )
        return token


def resolve_external_config(value: ExternalEnvConfig | dict | bool | None) -> ExternalEnvConfig | None:
    """``external=`` as users write it (None/False: off, True: defaults, dict, config) -> checked config."""
    if value is None or value is False:
        return None
    if value is True:
        return ExternalEnvConfig()
    if isinstance(value, ExternalEnvConfig):
        value = value.to_dict(with_token=True)
    if not isinstance(value, dict):
        raise ConfigError(f"external must be a dict of server settings, True or None, got {value!r}.")
    names = [f.name for f in dataclasses.fields(ExternalEnvConfig)]
    for key in value:
        if key not in names:
            raise ConfigError(unknown_name_message("external env setting", str(key), names))
    config = ExternalEnvConfig(**value)
    _validate(config)
    return config


def _validate(config: ExternalEnvConfig) -> None:
    if not isinstance(config.host, str) or not config.host:
        raise ConfigError(f"external host must be a non-empty string, got {config.host!r}.")
    if isinstance(config.port, bool) or not isinstance(config.port, int) or not 0 <= config.port <= 65535:
        raise ConfigError(f"external port must be an integer in [0, 65535], got {config.port!r}.")
    if config.token is not None and (not isinstance(config.token, str) or not config.token):
        raise ConfigError("external token must be a non-empty string.")
    if config.batch_mode not in BATCH_MODES:
        raise ConfigError(unknown_name_message("external batch_mode", str(config.batch_mode), BATCH_MODES))
    for name in ("max_frame_bytes", "max_clients", "max_unauthenticated", "max_outbound_bytes"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"external {name} must be a positive integer, got {value!r}.")
    for name in ("timeout_s", "handshake_timeout_s", "max_abs_log_prob", "drain_timeout_s"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"external {name} must be a positive number, got {value!r}.")
    reward = config.max_abs_reward
    if reward is not None and (
        isinstance(reward, bool) or not isinstance(reward, int | float) or not reward > 0
    ):
        raise ConfigError(f"external max_abs_reward must be a positive number or None, got {reward!r}.")
    timeout = config.sample_timeout_s
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
    ):
        raise ConfigError(f"external sample_timeout_s must be a number >= 0 or None, got {timeout!r}.")
