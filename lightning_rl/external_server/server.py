"""The policy server: many client connections on one asyncio loop in a background thread.

Why one thread and asyncio ``Protocol`` callbacks (no coroutine per message): on a 2-core
machine the server must spend its time on inference, not on task switching. Bytes arrive in
``data_received``, complete frames are handled at once, and every ``get_action`` of one loop
iteration joins one batched forward pass that runs at the start of the next iteration
(``call_soon`` callbacks run before the I/O callbacks of the next poll). Everything that
touches episodes, the policy or connectors runs on this thread; the runner's ``sample()``
(the learner's thread, or a Ray actor's) hands over the new weights and waits for the batch.

The *gate* keeps the data on-policy: actions of training episodes are served and their
uploads accepted while a ``sample()`` call is collecting; in between (while the learner
updates) those requests wait in arrival order, and are answered with the new weights once the
next ``sample()`` opens the gate. A connection whose request the server holds is never timed
out for it. Episodes with training off are never learned from, so they never wait.

Each connection has exactly one request in flight (frames that arrive meanwhile wait, and
reading pauses once more than one frame's worth is buffered), so replies come back in request
order and a fast sender cannot make the server buffer without bound. Protocol violations get
one error frame, then that connection is closed; the other connections never notice.

Who may cost what (docs/security.md): a socket that has not said a valid ``hello`` may send
frames of 4 KiB at most, lives ``handshake_timeout_s`` at most, and competes only with other
such sockets (``max_unauthenticated``; the one that waited longest makes room), never with
authenticated clients (``max_clients``). An authenticated client's unread replies are bounded
by the transport's write-buffer limit: above it the server stops reading that client, and
drops it when it has not read for ``timeout_s``. Model exports run on a worker thread, once per
weights version and format.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_rl.envs.external import protocol as proto
from lightning_rl.envs.external.config import ExternalEnvConfig
from lightning_rl.envs.external.protocol import PRE_AUTH_MAX_FRAME_BYTES, ProtocolError
from lightning_rl.errors import ConfigError, EnvError
from lightning_rl.external_server.backend import PolicyBackend, UploadedEpisode
from lightning_rl.external_server.episodes import LiveEpisode, concat_segments, row, steps_to_segment
from lightning_rl.version import __version__

log = logging.getLogger(__name__)

CLOSED, OPEN, DRAINING = "closed", "open", "draining"
MAX_EPISODES_PER_CONNECTION = 1024
MAX_EPISODE_ID_LENGTH = 256
MAX_EPISODES_PER_UPLOAD = 1024


@dataclass
class SampleResult:
    """What one ``sample()`` collected: the ``[1, M]`` batch, finished episodes, filter deltas."""

    data: dict[str, Any]
    num_steps: int
    returns: list[float]
    lengths: list[int]
    connector_deltas: dict[str, list]
    weights_version: int
    seconds: float


@dataclass
class _Action:
    connection: _Connection
    episode: LiveEpisode
    observation: Any


@dataclass
class _ServerCounters:
    connections_total: int = 0
    actions_served: int = 0
    ticks: int = 0
    episodes_finished: int = 0
    episodes_uploaded: int = 0
    lost_episodes: int = 0
    lost_steps: int = 0
    abandoned_episodes: int = 0  # complete_episodes: still running after drain_timeout_s
    evicted_handshakes: int = 0  # unauthenticated sockets closed to make room for new ones
    internal_errors: int = 0  # exceptions on bad input (answered bad_request, logged)
    peak_outbound_bytes: int = 0  # largest write buffer of any connection
    errors: Counter = field(default_factory=Counter)


class _Connection(asyncio.Protocol):
    """One client: frame parsing, the one-request-in-flight rule, error-then-close."""

    _ids = itertools.count(1)

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.id = next(self._ids)
        # Until hello is accepted only a few KiB per frame: checked from the header, before the body.
        self.reader = proto.FrameReader(min(PRE_AUTH_MAX_FRAME_BYTES, server.config.max_frame_bytes))
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.authenticated = False
        self.busy = False  # the server holds this connection's request
        self.reading = True  # False while reading is paused (see _update_reading)
        self.write_paused = False  # the client does not read its replies fast enough
        self.write_paused_since = 0.0
        self.closed = False
        self.encoding = proto.JSON
        self.idle_since = time.monotonic()
        self.episodes: dict[str, LiveEpisode] = {}

    # -- asyncio callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        limit = self.server.config.max_outbound_bytes
        self.transport.set_write_buffer_limits(high=limit, low=limit // 4)
        self.server._on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.reader.feed(data)
        if self.busy or self.write_paused:
            self._update_reading()
            return
        self.drain()

    def _update_reading(self) -> None:
        """Read only while the request can be handled: pause while the server holds a request and
        more than one frame's worth is buffered, and while the client leaves its replies unread."""
        if self.closed:
            return
        ahead = self.busy and self.reader.buffered > self.reader.max_frame_bytes + proto.HEADER_SIZE
        should_read = not (ahead or self.write_paused)
        if should_read != self.reading:
            self.reading = should_read
            if should_read:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # Write flow control: the transport calls these around its write-buffer limits.
    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_since = time.monotonic()
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()
        if not self.busy and self.reader.buffered and not self.closed:
            self.server.loop.call_soon(self.drain)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        self.server._on_disconnect(self, truncated=self.reader.buffered > 0 and not was_closed)

    # -- request handling -------------------------------------------------------------------------
    def drain(self) -> None:
        """Handle the complete frames buffered so far, one request at a time."""
        while not self.busy and not self.closed and not self.write_paused:
            try:
                item = self.reader.next_message()
            except ProtocolError as exc:
                self.fail(exc.code, exc.message)
                return
            if item is None:
                return
            message, self.encoding = item
            self.server._dispatch(self, message)

    def defer(self) -> None:
        """The reply will come later (batched inference, or the gate is closed)."""
        self.busy = True

    def reply(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        self.transport.write(proto.encode_frame(message, self.encoding))
        self.idle_since = time.monotonic()
        counters = self.server.counters
        counters.peak_outbound_bytes = max(
            counters.peak_outbound_bytes, self.transport.get_write_buffer_size()
        )
        if self.busy:
            self.busy = False
            self._update_reading()
            if self.reader.buffered and not self.write_paused:
                self.server.loop.call_soon(self.drain)

    def fail(self, code: str, message: str) -> None:
        """Send one error frame, then close this connection (its unfinished episodes are dropped)."""
        if self.closed:
            return
        if code == proto.SERVER_CLOSING:
            log.info("Closing external env client %s (%s): the server shuts down.", self.id, self.peer)
        else:
            self.server.counters.errors[code] += 1
            # Unauthenticated sockets are anyone's: logging each at warning level would let a flood
            # of them fill the logs. They are counted in stats() by code.
            level = logging.WARNING if self.authenticated else logging.DEBUG
            log.log(
                level, "External env client %s (%s): %s: %s; closing it.", self.id, self.peer, code, message
            )
        frame = {"type": proto.ERROR, "code": code, "message": message}
        self.closed = True
        if self.write_paused:
            # It does not read: a graceful close would keep its unread replies buffered forever.
            self.transport.abort()
            return
        with contextlib.suppress(Exception):
            self.transport.write(proto.encode_frame(frame, proto.JSON))
        self.transport.close()


class PolicyServer:
    """Serves one :class:`PolicyBackend` to external clients; see the module docstring."""

    def __init__(
        self, backend: PolicyBackend, config: ExternalEnvConfig, token: str, worker_index: int = 0
    ) -> None:
        self.backend = backend
        self.config = config
        self._token = token.encode("utf-8")
        self.worker_index = worker_index
        self.complete_episodes = config.batch_mode == "complete_episodes"
        self.counters = _ServerCounters()
        self.connections: set[_Connection] = set()  # every open socket, authenticated or not
        # Sockets still waiting for their hello, oldest first (a dict keeps insertion order).
        self.unauthenticated: dict[_Connection, None] = {}
        self.clients: set[_Connection] = set()  # authenticated connections (max_clients)
        self._exports: dict[tuple[str, int], list[_Connection]] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"external-env-export-{worker_index}"
        )
        self._drain_since = 0.0
        self.loop = asyncio.new_event_loop()
        self.host: str = config.host
        self.port: int = 0
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        # -- collection state (loop thread only) --
        self.gate = CLOSED
        self.target = 0
        self.explore = True
        self._future: concurrent.futures.Future | None = None
        self._sample_start = 0.0
        self._held: deque[tuple] = deque()
        self._pending: list[_Action] = []
        self._tick_scheduled = False
        self._ready: list[dict[str, Any]] = []
        self._ready_steps = 0
        self._live_steps = 0  # closed, undelivered transitions of running training episodes
        self._live_training_episodes = 0
        self._returns: list[float] = []
        self._lengths: list[int] = []
        self._handlers = {
            proto.HELLO: self._hello_again,
            proto.GET_CONFIG: self._get_config,
            proto.START_EPISODE: self._start_episode,
            proto.GET_ACTION: self._get_action,
            proto.LOG_RETURNS: self._log_returns,
            proto.END_EPISODE: self._end_episode,
            proto.GET_MODEL: self._get_model,
            proto.GET_WEIGHTS: self._get_weights,
            proto.UPLOAD_EPISODES: self._upload_episodes,
            proto.PING: self._ping,
        }

    # -- lifecycle (caller's thread) ---------------------------------------------------------------
    def start(self, port: int) -> tuple[str, int]:
        """Listen on ``(config.host, port)`` from a background thread; returns the bound address."""
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run,
            args=(port, started),
            name=f"external-env-server-{self.worker_index}",
            daemon=True,
        )
        self._thread.start()
        try:
            self.host, self.port = started.result(timeout=30)
        except OSError as exc:
            raise ConfigError(
                f"The external env server cannot listen on {self.config.host}:{port}: {exc}"
            ) from exc
        if self.config.address_file:
            self._write_address_file()
        log.info("External env server %d listening on %s:%d", self.worker_index, self.host, self.port)
        return self.host, self.port

    def _run(self, port: int, started: concurrent.futures.Future) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _Connection(self), self.config.host, port, backlog=1024)
            )
        except Exception as exc:
            started.set_exception(exc)
            return
        address = self._server.sockets[0].getsockname()
        started.set_result((address[0], int(address[1])))
        self.loop.call_soon(self._sweep)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def _write_address_file(self) -> None:
        path = self.config.address_file.replace("{worker_index}", str(self.worker_index))
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"host": self.host, "port": self.port, "pid": os.getpid()}, f)
        os.replace(tmp, path)

    def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.fail(proto.SERVER_CLOSING, "The server is shutting down.")
        if self._future is not None and not self._future.done():
            self._future.set_exception(EnvError("The external env server was stopped during sample()."))
        self.loop.call_later(0.05, self.loop.stop)

    # -- sampling (caller's thread) ----------------------------------------------------------------
    def sample(
        self, state: dict[str, Any] | None, target: int, explore: bool, timeout_s: float | None
    ) -> SampleResult:
        """Open the gate with ``state``'s weights until ``target`` steps arrived; the batch."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self._begin_sample, state, target, explore, future)
        try:
            return future.result(timeout=timeout_s or None)
        except concurrent.futures.TimeoutError:
            aborted: concurrent.futures.Future = concurrent.futures.Future()
            self.loop.call_soon_threadsafe(self._abort_sample, future, aborted)
            stats = aborted.result(timeout=30)
            if future.done() and not future.cancelled():
                return future.result()
            raise EnvError(
                f"External env server {self.host}:{self.port} waited {timeout_s:g} s for clients to deliver "
                f"{target} steps; {stats['clients']} clients are connected, {stats['ready']} steps of ended "
                f"episodes or cut pieces are ready and {stats['live']} more are in "
                f"{stats['running']} running training episodes (all kept for the next sample). Start more "
                "clients, or raise external sample_timeout_s (0 waits forever)"
                + (
                    "; in complete_episodes mode lower external drain_timeout_s below sample_timeout_s so "
                    "episodes that do not end are dropped instead of holding the sample."
                    if self.complete_episodes
                    else "."
                )
            ) from None

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's thread and return its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except Exception as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=60)

    def stats(self) -> dict[str, Any]:
        """Server counters (thread-safe): connections, errors by code, lost episodes and steps."""
        return self.call(self._stats)

    def _stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "host": self.host,
            "port": self.port,
            "clients": len(self.connections),
            "connections_total": c.connections_total,
            "actions_served": c.actions_served,
            "ticks": c.ticks,
            "episodes_finished": c.episodes_finished,
            "episodes_uploaded": c.episodes_uploaded,
            "lost_episodes": c.lost_episodes,
            "lost_steps": c.lost_steps,
            "abandoned_episodes": c.abandoned_episodes,
            "unauthenticated": len(self.unauthenticated),
            "evicted_handshakes": c.evicted_handshakes,
            "internal_errors": c.internal_errors,
            "peak_outbound_bytes": c.peak_outbound_bytes,
            "errors": dict(c.errors),
            "gate": self.gate,
            "buffered_steps": self._ready_steps + self._live_steps,
        }

    # -- the gate (loop thread) ----------------------------------------------------------------------
    def _begin_sample(
        self, state: dict[str, Any] | None, target: int, explore: bool, future: concurrent.futures.Future
    ) -> None:
        try:
            self.backend.set_state(state)
        except Exception as exc:
            future.set_exception(exc)
            return
        self._future = future
        self.target = max(1, int(target))
        self.explore = explore
        self._sample_start = time.perf_counter()
        self.gate = OPEN
        self._release_held()
        self._check_target()

    def _abort_sample(self, future: concurrent.futures.Future, aborted: concurrent.futures.Future) -> None:
        if self._future is future and not future.done():
            self.gate = CLOSED
            self._future = None
            future.cancel()
        aborted.set_result(
            {
                "clients": len(self.clients),
                "ready": self._ready_steps,
                "live": self._live_steps,
                "running": self._live_training_episodes,
            }
        )

    def _release_held(self) -> None:
        held, self._held = self._held, deque()
        for item in held:
            kind, connection = item[0], item[1]
            if connection.closed:
                continue
            if kind == "action":
                self._queue_action(_Action(connection, item[2], item[3]))
            elif kind == "upload":
                self._queue_upload(connection, item[2])
            else:
                self._queue_start(connection, *item[2:])

    def _check_target(self) -> None:
        total = self._ready_steps + self._live_steps
        if self.gate == OPEN and total >= self.target:
            if not self.complete_episodes:
                self._cut()
                return
            self.gate = DRAINING  # no new episodes; wait for the running ones to end
            self._drain_since = time.monotonic()
        if self.gate == DRAINING:
            if total < self.target:  # a client left and took its steps with it: collect more
                self.gate = OPEN
                self._release_held()
            elif self._live_training_episodes == 0:
                self._cut()

    def _cut(self) -> None:
        """Close the gate and hand the delivered segments to the waiting ``sample()``."""
        if not self.complete_episodes:
            for connection in self.connections:
                for episode in connection.episodes.values():
                    if episode.training and episode.steps:
                        self._deliver(steps_to_segment(episode.steps, terminated=False, truncated=True))
                        self._live_steps -= len(episode.steps)
                        episode.steps = []
        self.gate = CLOSED
        future, self._future = self._future, None
        result = SampleResult(
            data=concat_segments(self._ready),
            num_steps=self._ready_steps,
            returns=self._returns,
            lengths=self._lengths,
            connector_deltas=self.backend.pop_deltas(),
            weights_version=self.backend.weights_version,
            seconds=time.perf_counter() - self._sample_start,
        )
        self._ready, self._ready_steps, self._returns, self._lengths = [], 0, [], []
        if future is not None and not future.done():
            future.set_result(result)

    def _deliver(self, segment: dict[str, Any]) -> None:
        self._ready.append(segment)
        self._ready_steps += int(segment["next"]["reward"].shape[0])

    # -- connections (loop thread) --------------------------------------------------------------------
    def _on_connect(self, connection: _Connection) -> None:
        self.counters.connections_total += 1
        if len(self.clients) >= self.config.max_clients:
            connection.fail(
                proto.TOO_MANY_CLIENTS,
                f"The server serves at most {self.config.max_clients} clients at once.",
            )
            return
        self.connections.add(connection)
        self.unauthenticated[connection] = None
        if len(self.unauthenticated) > self.config.max_unauthenticated:
            # Make room by closing the socket that has waited longest for its hello: a client that
            # says hello at once is never the oldest, idle sockets reopened by an attacker are.
            oldest = next(iter(self.unauthenticated))
            self.counters.evicted_handshakes += 1
            oldest.fail(
                proto.TOO_MANY_CLIENTS,
                f"More than {self.config.max_unauthenticated} connections are waiting for their hello; "
                "the one that waited longest is closed. Send hello right after connecting.",
            )
            self.unauthenticated.pop(oldest, None)

    def _on_disconnect(self, connection: _Connection, truncated: bool) -> None:
        self.connections.discard(connection)
        self.unauthenticated.pop(connection, None)
        self.clients.discard(connection)
        if truncated:
            self.counters.errors["truncated_frame"] += 1
            log.warning(
                "External env client %s (%s) disconnected inside a frame.", connection.id, connection.peer
            )
        for episode in connection.episodes.values():
            if episode.training:
                self._live_steps -= len(episode.steps)
                self._live_training_episodes -= 1
                self.counters.lost_episodes += 1
                self.counters.lost_steps += len(episode.steps) + (episode.pending is not None)
        connection.episodes.clear()
        self._check_target()

    def _sweep(self) -> None:
        """Close connections that kept the server waiting for a frame (or for reading its replies)
        too long; drop running episodes that hold a complete_episodes sample too long."""
        now = time.monotonic()
        for connection in list(self.connections):
            if connection.closed:
                continue
            if connection.write_paused and now - connection.write_paused_since > self.config.timeout_s:
                connection.fail(
                    proto.TIMEOUT,
                    f"The client left {connection.transport.get_write_buffer_size()} bytes of replies unread "
                    f"for {self.config.timeout_s:g} s.",
                )
                continue
            if connection.busy:
                continue
            if connection.authenticated:
                limit = self.config.timeout_s
                what = "the next complete frame"
            else:
                limit = self.config.handshake_timeout_s
                what = "a valid hello"
            if now - connection.idle_since > limit:
                connection.fail(proto.TIMEOUT, f"No {what} within {limit:g} s.")
        if self.gate == DRAINING and now - self._drain_since > self.config.drain_timeout_s:
            self._abandon_running_episodes()
        config = self.config
        interval = min(1.0, config.timeout_s / 4, config.handshake_timeout_s / 4, config.drain_timeout_s / 4)
        self.loop.call_later(interval, self._sweep)

    def _abandon_running_episodes(self) -> None:
        """complete_episodes: the running episodes did not end within drain_timeout_s. They stop
        being training episodes (their clients keep being served, nothing of them is learned
        from), so the sample goes on with the episodes that did end."""
        for connection in self.connections:
            for episode in connection.episodes.values():
                if not episode.training:
                    continue
                self._live_steps -= len(episode.steps)
                self._live_training_episodes -= 1
                self.counters.abandoned_episodes += 1
                self.counters.lost_steps += len(episode.steps) + (episode.pending is not None)
                log.warning(
                    "External env client %s (%s): episode %r still running %g s after the sample had "
                    "enough steps (%d so far); it is not learned from (drain_timeout_s).",
                    connection.id,
                    connection.peer,
                    episode.episode_id,
                    self.config.drain_timeout_s,
                    episode.length,
                )
                episode.training = False
                episode.steps = []
        self._check_target()

    def _dispatch(self, connection: _Connection, message: dict[str, Any]) -> None:
        kind = message["type"]
        try:
            if not connection.authenticated:
                if kind != proto.HELLO:
                    raise ProtocolError(proto.HANDSHAKE_REQUIRED, "The first message must be a 'hello'.")
                self._hello(connection, message)
                return
            handler = self._handlers.get(kind)
            if handler is None:
                raise ProtocolError(
                    proto.UNKNOWN_MESSAGE_TYPE,
                    f"Unknown message type {kind!r}. Choices: {', '.join(proto.REQUEST_TYPES)}.",
                )
            handler(connection, message)
        except ProtocolError as exc:
            connection.fail(exc.code, exc.message)
        except ConfigError as exc:
            connection.fail(proto.BAD_REQUEST, str(exc))
        except Exception as exc:
            # Every check of a message runs before anything changes state, so an exception here was
            # raised by the message's content (a value no check foresaw): the client's fault,
            # answered bad_request. Logged with its traceback so a real server bug stays visible.
            self.counters.internal_errors += 1
            log.warning(
                "External env server: a %r message raised; answered bad_request.", kind, exc_info=True
            )
            connection.fail(proto.BAD_REQUEST, f"Invalid {kind!r} message: {type(exc).__name__}: {exc}")

    # -- messages (loop thread) -----------------------------------------------------------------------
    def _hello(self, connection: _Connection, message: dict[str, Any]) -> None:
        token = message.get("token")
        # Constant-time comparison: the reply time must not reveal how much of a guess was right.
        # surrogatepass: a JSON token may hold a lone UTF-16 surrogate, which strict UTF-8 refuses.
        given = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else b""
        if not hmac.compare_digest(given, self._token):
            raise ProtocolError(proto.UNAUTHORIZED, "Missing or wrong token.")
        version = message.get("protocol_version")
        if isinstance(version, bool) or version not in proto.SUPPORTED_VERSIONS:
            raise ProtocolError(
                proto.UNSUPPORTED_VERSION,
                f"Protocol version {version!r} is not supported; this server speaks "
                f"{list(proto.SUPPORTED_VERSIONS)}.",
            )
        if len(self.clients) >= self.config.max_clients:
            raise ProtocolError(
                proto.TOO_MANY_CLIENTS,
                f"The server serves at most {self.config.max_clients} clients at once.",
            )
        connection.authenticated = True
        self.unauthenticated.pop(connection, None)
        self.clients.add(connection)
        connection.reader.max_frame_bytes = self.config.max_frame_bytes
        connection.reply(
            {
                "type": proto.WELCOME,
                "protocol_version": proto.PROTOCOL_VERSION,
                "server": f"lightning-rl {__version__}",
                "session_id": connection.id,
                "weights_version": self.backend.weights_version,
                "batch_mode": self.config.batch_mode,
                "max_frame_bytes": self.config.max_frame_bytes,
                "timeout_s": self.config.timeout_s,
            }
        )

    def _hello_again(self, connection: _Connection, message: dict[str, Any]) -> None:
        raise ProtocolError(proto.BAD_REQUEST, "This connection is authenticated already.")

    def _get_config(self, connection: _Connection, message: dict[str, Any]) -> None:
        connection.reply({**self.backend.config_message(), "batch_mode": self.config.batch_mode})

    def _ping(self, connection: _Connection, message: dict[str, Any]) -> None:
        connection.reply({"type": proto.PONG, "weights_version": self.backend.weights_version})

    def _episode(self, connection: _Connection, message: dict[str, Any]) -> LiveEpisode:
        episode_id = proto.require(message, "episode_id", str)
        episode = connection.episodes.get(episode_id)
        if episode is None:
            raise ProtocolError(
                proto.UNKNOWN_EPISODE,
                f"No running episode {episode_id!r} on this connection; start it first.",
            )
        return episode

    def _start_episode(self, connection: _Connection, message: dict[str, Any]) -> None:
        episode_id = proto.require(message, "episode_id", str, optional=True) or uuid.uuid4().hex
        if len(episode_id) > MAX_EPISODE_ID_LENGTH:
            raise ProtocolError(
                proto.BAD_REQUEST, f"episode_id is longer than {MAX_EPISODE_ID_LENGTH} characters."
            )
        if episode_id in connection.episodes:
            raise ProtocolError(proto.BAD_REQUEST, f"Episode {episode_id!r} is running already.")
        if len(connection.episodes) >= MAX_EPISODES_PER_CONNECTION:
            raise ProtocolError(
                proto.BAD_REQUEST,
                f"A connection may run at most {MAX_EPISODES_PER_CONNECTION} episodes at once.",
            )
        training = proto.flag(message, "training_enabled", True)
        explore = proto.flag(message, "explore", True)
        connection.defer()
        self._queue_start(connection, episode_id, training, explore)

    def _queue_start(self, connection: _Connection, episode_id: str, training: bool, explore: bool) -> None:
        if self.complete_episodes and training and self.gate != OPEN:
            self._held.append(("start", connection, episode_id, training, explore))
            return
        connection.episodes[episode_id] = LiveEpisode(episode_id, training=training, explore=explore)
        if training:
            self._live_training_episodes += 1
        connection.reply({"type": proto.EPISODE_STARTED, "episode_id": episode_id})

    def _get_action(self, connection: _Connection, message: dict[str, Any]) -> None:
        episode = self._episode(connection, message)
        reward = self._reward(message, episode)
        observation = self.backend.decode_observation(proto.require(message, "observation", object))
        episode.reward_since_action += reward
        episode.total_return += reward
        connection.defer()
        self._queue_action(_Action(connection, episode, observation))

    def _queue_action(self, action: _Action) -> None:
        # Only training steps wait for the next sample's weights; the rest is served at once.
        if self.gate == CLOSED and action.episode.training:
            self._held.append(("action", action.connection, action.episode, action.observation))
            return
        self._pending.append(action)
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        """One batched forward pass for every action request that arrived since the last tick."""
        self._tick_scheduled = False
        batch, self._pending = [a for a in self._pending if not a.connection.closed], []
        if not batch:
            return
        if self.gate == CLOSED:  # the sample ended before this tick: training steps get the next weights
            for action in batch:
                if action.episode.training:
                    self._queue_action(action)
            batch = [a for a in batch if not a.episode.training]
            if not batch:
                return
        groups: dict[tuple[bool, bool], list[_Action]] = {}
        for action in batch:
            key = (self.explore and action.episode.explore, action.episode.training)
            groups.setdefault(key, []).append(action)
        try:
            for (explore, training), actions in groups.items():
                self._serve(actions, explore, training)
        except Exception as exc:
            log.exception("External env server: inference failed")
            for action in batch:
                action.connection.fail(proto.SERVER_ERROR, f"Inference failed: {type(exc).__name__}: {exc}")
            self.gate = CLOSED
            future, self._future = self._future, None
            if future is not None and not future.done():
                future.set_exception(exc)  # the learner sees the failure, like an env that raised
            return
        self.counters.ticks += 1
        self.counters.actions_served += len(batch)
        self._check_target()

    def _serve(self, actions: list[_Action], explore: bool, training: bool) -> None:
        backend = self.backend
        module_obs = backend.to_module([a.observation for a in actions], update=training)
        out, env_actions = backend.act(module_obs, explore)
        extra_keys = [k for k in out if k != "action"]
        version = backend.weights_version
        plain = isinstance(module_obs, torch.Tensor)
        for index, action in enumerate(actions):
            episode = action.episode
            observation = module_obs[index] if plain else row(module_obs, index)
            if episode.pending is None:
                # Rewards before the first action belong to no step: not learned, not in the return.
                episode.total_return -= episode.reward_since_action
                episode.reward_since_action = 0.0
            elif episode.close_pending(observation) is not None and episode.training:
                self._live_steps += 1
            episode.pending = (observation, out["action"][index], {k: out[k][index] for k in extra_keys})
            episode.length += 1
            action.connection.reply(
                {
                    "type": proto.ACTION,
                    "episode_id": episode.episode_id,
                    "action": backend.wire_action(env_actions[index]),
                    "weights_version": version,
                }
            )

    def _reward(self, message: dict[str, Any], episode: LiveEpisode) -> float:
        """The message's reward, checked alone and added to the step's reward so far: both must be
        finite in float32 and within max_abs_reward (else bad_request; the episode is dropped)."""
        limit = self.config.max_abs_reward
        reward = proto.number(message, "reward", limit=limit)
        bound = proto.FLOAT32_MAX if limit is None else min(limit, proto.FLOAT32_MAX)
        if not abs(episode.reward_since_action + reward) <= bound:
            raise ProtocolError(
                proto.BAD_REQUEST,
                f"The reward of one step (summed over log_returns) must stay within {bound:g}; "
                f"it would be {episode.reward_since_action + reward:g}.",
            )
        return reward

    def _log_returns(self, connection: _Connection, message: dict[str, Any]) -> None:
        episode = self._episode(connection, message)
        if "reward" not in message:
            raise ProtocolError(proto.BAD_REQUEST, "log_returns needs the field 'reward'.")
        reward = self._reward(message, episode)
        episode.reward_since_action += reward
        episode.total_return += reward
        connection.reply({"type": proto.OK})

    def _end_episode(self, connection: _Connection, message: dict[str, Any]) -> None:
        episode = self._episode(connection, message)
        reward = self._reward(message, episode)
        observation = self.backend.decode_observation(proto.require(message, "observation", object))
        truncated = proto.flag(message, "truncated", False)
        terminated = proto.flag(message, "terminated", not truncated)
        if not (terminated or truncated):
            raise ProtocolError(
                proto.BAD_REQUEST, "An episode ends terminated or truncated; both flags are false."
            )
        episode.reward_since_action += reward
        episode.total_return += reward
        del connection.episodes[episode.episode_id]
        if episode.training:
            if episode.pending is not None:
                final = row(self.backend.to_module([observation], update=True), 0)
                episode.close_pending(final)
                self._live_steps += 1
            self._live_training_episodes -= 1
            self._live_steps -= len(episode.steps)
            if episode.steps:
                self._deliver(steps_to_segment(episode.steps, terminated=terminated, truncated=truncated))
            if episode.length:
                self._returns.append(episode.total_return)
                self._lengths.append(episode.length)
                self.counters.episodes_finished += 1
        connection.reply(
            {
                "type": proto.EPISODE_ENDED,
                "episode_id": episode.episode_id,
                "num_steps": episode.length,
                "weights_version": self.backend.weights_version,
            }
        )
        self._check_target()

    def _upload_episodes(self, connection: _Connection, message: dict[str, Any]) -> None:
        episodes = proto.require(message, "episodes", list)
        if not episodes or len(episodes) > MAX_EPISODES_PER_UPLOAD:
            raise ProtocolError(
                proto.BAD_REQUEST,
                f"An upload carries 1 to {MAX_EPISODES_PER_UPLOAD} episodes, got {len(episodes)}.",
            )
        training = proto.flag(message, "training_enabled", True)
        decoded = [
            self.backend.decode_upload(
                episode, training, self.config.max_abs_reward, self.config.max_abs_log_prob
            )
            for episode in episodes
        ]
        connection.defer()
        self._queue_upload(connection, decoded)

    def _queue_upload(self, connection: _Connection, episodes: list[UploadedEpisode]) -> None:
        if self.gate == CLOSED and any(episode.training for episode in episodes):
            self._held.append(("upload", connection, episodes))
            return
        steps = 0
        for episode in episodes:
            if episode.training:
                self._deliver(self.backend.upload_segment(episode))
                self._returns.append(float(episode.rewards.sum()))
                self._lengths.append(episode.length)
            steps += episode.length
        self.counters.episodes_uploaded += len(episodes)
        connection.reply(
            {
                "type": proto.EPISODES_ACCEPTED,
                "num_episodes": len(episodes),
                "num_steps": steps,
                "weights_version": self.backend.weights_version,
            }
        )
        self._check_target()

    def _get_model(self, connection: _Connection, message: dict[str, Any]) -> None:
        """Export on the worker thread (an ONNX export takes tens of milliseconds to seconds, which
        would stall every client's actions on this thread); once per weights version and format:
        concurrent requests for the same one wait for the same export."""
        fmt = proto.require(message, "format", str, optional=True) or "onnx"
        cached = self.backend.cached_model(fmt)
        if cached is not None:
            connection.reply(_model_message(fmt, *cached))
            return
        key = (fmt, self.backend.weights_version)
        job = None if key in self._exports else self.backend.model_job(fmt)  # may raise bad_request
        connection.defer()
        waiting = self._exports.setdefault(key, [])
        waiting.append(connection)
        if job is not None:
            future = self._executor.submit(job)
            future.add_done_callback(lambda done: self._call_from_worker(self._model_done, key, done))

    def _call_from_worker(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            self.loop.call_soon_threadsafe(fn, *args)

    def _model_done(self, key: tuple[str, int], done: concurrent.futures.Future) -> None:
        waiting = self._exports.pop(key, [])
        fmt, version = key
        try:
            data, metadata = done.result()
        except ConfigError as exc:
            for connection in waiting:
                connection.fail(proto.BAD_REQUEST, str(exc))
            return
        except Exception as exc:
            log.exception("External env server: exporting the %s model failed", fmt)
            for connection in waiting:
                connection.fail(proto.SERVER_ERROR, f"Model export failed: {type(exc).__name__}: {exc}")
            return
        self.backend.store_model(fmt, version, data, metadata)
        for connection in waiting:
            connection.reply(_model_message(fmt, data, metadata))

    def _get_weights(self, connection: _Connection, message: dict[str, Any]) -> None:
        connection.reply(self.backend.weights_message(binary=connection.encoding == proto.MSGPACK))


def _model_message(fmt: str, data: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": proto.MODEL,
        "format": fmt,
        "weights_version": metadata["weights_version"],
        "metadata": metadata,
        "data": data,
    }
