"""The wire format shared by the external-env server and its clients (docs/external_env_protocol.md).

A frame is a 5-byte header, ``uint32`` body length (big-endian) and one encoding byte (1 =
JSON, 2 = msgpack), followed by the body: one map with a string ``"type"``. Control messages
are small and readable as JSON; observations, episodes and models travel as msgpack, where
arrays can be raw little-endian bytes described by dtype and shape. Both encodings are
accepted for every message, so a client in any language can start with JSON alone.

Arrays are decoded against the gymnasium space they must belong to, so the same plain values
(a number, a nested list, ``{"dtype", "shape", "data"}``) work for every space, and a value that
does not fit is rejected with one message naming the space.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np
from gymnasium import spaces

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
HEADER = struct.Struct(">IB")  # body length, encoding
HEADER_SIZE = HEADER.size
JSON, MSGPACK = 1, 2
ENCODINGS = {JSON: "json", MSGPACK: "msgpack"}
DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
# Until a connection's ``hello`` is accepted its frames may be this large at most: a hello is
# a few dozen bytes, so an unauthenticated peer can make the server buffer and decode only this.
PRE_AUTH_MAX_FRAME_BYTES = 4 * 1024
# Every number reaches the learner as float32: a value finite in float64 but above this
# (1e39) would become inf there, so the door checks against the float32 range.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Packed arrays: more axes or a longer axis than this is no observation, whatever the byte count.
MAX_ARRAY_NDIM = 32
MAX_ARRAY_DIM = 2**31 - 1

# Client -> server message types (each answered by exactly one frame).
HELLO = "hello"
GET_CONFIG = "get_config"
START_EPISODE = "start_episode"
GET_ACTION = "get_action"
LOG_RETURNS = "log_returns"
END_EPISODE = "end_episode"
GET_MODEL = "get_model"
GET_WEIGHTS = "get_weights"
UPLOAD_EPISODES = "upload_episodes"
PING = "ping"
REQUEST_TYPES = (
    HELLO,
    GET_CONFIG,
    START_EPISODE,
    GET_ACTION,
    LOG_RETURNS,
    END_EPISODE,
    GET_MODEL,
    GET_WEIGHTS,
    UPLOAD_EPISODES,
    PING,
)
# Server -> client reply types.
WELCOME = "welcome"
CONFIG = "config"
EPISODE_STARTED = "episode_started"
ACTION = "action"
OK = "ok"
EPISODE_ENDED = "episode_ended"
MODEL = "model"
WEIGHTS = "weights"
EPISODES_ACCEPTED = "episodes_accepted"
PONG = "pong"
ERROR = "error"

# Error codes (``{"type": "error", "code": ..., "message": ...}``; the server then closes).
BAD_FRAME = "bad_frame"
FRAME_TOO_LARGE = "frame_too_large"
HANDSHAKE_REQUIRED = "handshake_required"
UNAUTHORIZED = "unauthorized"
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
BAD_REQUEST = "bad_request"
UNKNOWN_EPISODE = "unknown_episode"
TIMEOUT = "timeout"
TOO_MANY_CLIENTS = "too_many_clients"
SERVER_ERROR = "server_error"
SERVER_CLOSING = "server_closing"


class ProtocolError(Exception):
    """A peer broke the protocol; ``code`` is the error code sent back before closing."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ServerError(ConnectionError):
    """The server answered with an error frame (client side)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"external env server error {code!r}: {message}")
        self.code = code


# -- frames ------------------------------------------------------------------------------------
def encode_frame(message: dict[str, Any], encoding: int = JSON) -> bytes:
    """One frame: header + body. Bytes values need msgpack (JSON carries them as base64)."""
    if encoding == MSGPACK:
        body = msgpack.packb(message, use_bin_type=True)
    elif encoding == JSON:
        body = json.dumps(message, separators=(",", ":"), default=_json_default).encode("utf-8")
    else:
        raise ValueError(f"Unknown encoding {encoding!r}; choices: {sorted(ENCODINGS)}")
    return HEADER.pack(len(body), encoding) + body


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def decode_body(encoding: int, body: bytes) -> dict[str, Any]:
    """A frame body -> the message map; :class:`ProtocolError` for anything else."""
    try:
        if encoding == JSON:
            message = json.loads(body.decode("utf-8"))
        elif encoding == MSGPACK:
            message = msgpack.unpackb(body, raw=False, strict_map_key=False)
        else:
            raise ProtocolError(BAD_FRAME, f"Unknown encoding byte {encoding}; use 1 (JSON) or 2 (msgpack).")
    except ProtocolError:
        raise
    except Exception as exc:  # json, msgpack and UTF-8 errors of every kind
        raise ProtocolError(BAD_FRAME, f"Undecodable {ENCODINGS[encoding]} body: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(BAD_FRAME, "A message must be a map with a string 'type'.")
    return message


class FrameReader:
    """Incremental frame parser: feed bytes as they arrive, take complete messages out.

    The length is checked against ``max_frame_bytes`` as soon as the header is in, so an
    oversized frame is refused before its body is buffered.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def next_message(self) -> tuple[dict[str, Any], int] | None:
        """The next complete message and its encoding, or None when more bytes are needed."""
        if len(self._buffer) < HEADER_SIZE:
            return None
        length, encoding = HEADER.unpack_from(self._buffer)
        if length > self.max_frame_bytes:
            raise ProtocolError(
                FRAME_TOO_LARGE, f"Frame of {length} bytes exceeds the limit of {self.max_frame_bytes} bytes."
            )
        if encoding not in ENCODINGS:
            raise ProtocolError(BAD_FRAME, f"Unknown encoding byte {encoding}; use 1 (JSON) or 2 (msgpack).")
        end = HEADER_SIZE + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER_SIZE:end])
        del self._buffer[:end]
        return decode_body(encoding, body), encoding


# -- arrays ------------------------------------------------------------------------------------
_DTYPES = {
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
}


_LITTLE_ENDIAN = {name: np.dtype(name).newbyteorder("<") for name in _DTYPES}


def pack_array(array: np.ndarray, binary: bool = True) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}``: raw little-endian C-order bytes (base64 text for JSON)."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    data = array.astype(dtype, copy=False).tobytes()
    return {
        "dtype": dtype.name,
        "shape": list(array.shape),
        "data": data if binary else base64.b64encode(data).decode("ascii"),
    }


def unpack_array(value: dict[str, Any], what: str = "array") -> np.ndarray:
    """The inverse of :func:`pack_array`; checks dtype, shape and byte count."""
    dtype_name = value.get("dtype")
    if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
        raise ProtocolError(BAD_REQUEST, f"{what}: dtype {dtype_name!r} is not one of {sorted(_DTYPES)}.")
    shape = value.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_ARRAY_NDIM
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_ARRAY_DIM for s in shape)
    ):
        raise ProtocolError(
            BAD_REQUEST,
            f"{what}: shape must be a list of at most {MAX_ARRAY_NDIM} integers in [0, {MAX_ARRAY_DIM}], "
            f"got {_preview(shape)}.",
        )
    data = value.get("data")
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except ValueError:
            raise ProtocolError(BAD_REQUEST, f"{what}: data string is not valid base64.") from None
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(
            BAD_REQUEST, f"{what}: data must be bytes (msgpack bin) or a base64 string (JSON)."
        )
    dtype = _LITTLE_ENDIAN[dtype_name]
    expected = dtype.itemsize
    for size in shape:
        expected *= size
    if len(data) != expected:
        raise ProtocolError(
            BAD_REQUEST,
            f"{what}: dtype {dtype_name} and shape {shape} need {expected} bytes, got {len(data)}.",
        )
    try:
        # A copy: frombuffer's view is read-only and would pin the whole message body.
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except ValueError as exc:  # e.g. an empty array with an absurd axis ("array is too big")
        raise ProtocolError(BAD_REQUEST, f"{what}: shape {shape} is not a usable array: {exc}") from None


def _as_array(value: Any, dtype: np.dtype, what: str) -> np.ndarray:
    if isinstance(value, dict):
        array = unpack_array(value, what)
    else:
        try:
            array = np.asarray(value)
        except Exception as exc:
            raise ProtocolError(BAD_REQUEST, f"{what} is not an array: {exc}") from None
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise ProtocolError(BAD_REQUEST, f"{what} must be numbers, got {_preview(value)}.")
    target = np.dtype(dtype)
    if array.dtype.kind == "f" and target.kind in "iub" and not np.array_equal(array, np.round(array)):
        raise ProtocolError(BAD_REQUEST, f"{what} must be whole numbers, got {_preview(value)}.")
    if target.kind in "iu" and array.size:
        # Converting would wrap around (300 -> 44 for uint8) or saturate: refuse instead.
        info = np.iinfo(target)
        with np.errstate(invalid="ignore"):
            inside = np.all(array >= info.min) and np.all(array <= info.max)
        if not inside:
            raise ProtocolError(BAD_REQUEST, f"{what} has values outside the range of {target.name}.")
    if target.kind == "f" and array.dtype.kind == "f" and array.size and not _float32_finite(array):
        # Checked before the conversion too: float16 spaces would hide 1e39 as inf, not NaN.
        raise ProtocolError(
            BAD_REQUEST, f"{what} has non-finite values (NaN, inf, or beyond float32's range 3.4e38)."
        )
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target, copy=False)


def _float32_finite(array: np.ndarray) -> bool:
    """Every element is finite once converted to float32 (the training dtype)."""
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.abs(array) <= FLOAT32_MAX))


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def decode_value(value: Any, space: spaces.Space, what: str = "observation") -> Any:
    """One observation (or action) of ``space`` from its wire form; ProtocolError if it does not fit."""
    return decode_batch(value, space, what, single=True)


def decode_batch(value: Any, space: spaces.Space, what: str, single: bool = False) -> Any:
    """A batch ``[T, *shape]`` of values of ``space`` (a list of single values, or one array).

    With ``single=True`` the value is one element (no leading batch axis).
    """
    lead: tuple[int, ...] = () if single else (-1,)
    if isinstance(space, spaces.Dict):
        if isinstance(value, dict) and not _is_packed_array(value):
            missing = [k for k in space.spaces if k not in value]
            if missing:
                raise ProtocolError(BAD_REQUEST, f"{what} lacks keys {missing} of the Dict space {space}.")
            return {k: decode_batch(value[k], s, f"{what}[{k!r}]", single) for k, s in space.spaces.items()}
        if not single and isinstance(value, list):
            items = [decode_batch(v, space, what, single=True) for v in value]
            return {k: np.stack([item[k] for item in items]) if items else np.empty(0) for k in space.spaces}
        raise ProtocolError(BAD_REQUEST, f"{what} must be a map for the Dict space {space}.")
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, list | tuple):
            raise ProtocolError(BAD_REQUEST, f"{what} must be a list for the Tuple space {space}.")
        if single:
            if len(value) != len(space.spaces):
                raise ProtocolError(
                    BAD_REQUEST,
                    f"{what} has {len(value)} parts, the Tuple space {space} has {len(space.spaces)}.",
                )
            return tuple(
                decode_batch(v, s, f"{what}[{i}]", True)
                for i, (v, s) in enumerate(zip(value, space, strict=True))
            )
        items = [decode_batch(v, space, what, single=True) for v in value]
        return tuple(np.stack([item[i] for item in items]) for i in range(len(space.spaces)))
    if isinstance(space, spaces.Box | spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
        dtype = np.dtype(space.dtype) if space.dtype is not None else np.dtype(np.int64)
        array = _as_array(value, dtype, what)
        shape = tuple(space.shape)
        expected_ndim = len(shape) + len(lead)
        if array.ndim != expected_ndim or array.shape[len(lead) :] != shape:
            want = ("[T, " + ", ".join(map(str, shape)) + "]") if lead else str(list(shape))
            raise ProtocolError(
                BAD_REQUEST, f"{what} has shape {list(array.shape)}, the space {space} needs {want}."
            )
        _check_range(array, space, what)
        return array
    raise ProtocolError(SERVER_ERROR, f"The space {space} has no wire form.")


def _check_range(array: np.ndarray, space: spaces.Space, what: str) -> None:
    """Reject what would poison a batched forward pass or the learner: NaN/inf floats and
    integers outside a discrete space (a one-hot of an out-of-range index raises)."""
    if array.dtype.kind == "f":
        if not _float32_finite(array):
            raise ProtocolError(
                BAD_REQUEST, f"{what} has non-finite values (NaN, inf, or beyond float32's range 3.4e38)."
            )
        return
    if isinstance(space, spaces.Discrete):
        low, high = int(space.start), int(space.start) + int(space.n) - 1
    elif isinstance(space, spaces.MultiDiscrete):
        low, high = np.asarray(space.start), np.asarray(space.start) + np.asarray(space.nvec) - 1
    elif isinstance(space, spaces.MultiBinary):
        low, high = 0, 1
    else:
        return
    if array.size and (np.any(array < low) or np.any(array > high)):
        raise ProtocolError(BAD_REQUEST, f"{what} has values outside the space {space}.")


def _is_packed_array(value: dict) -> bool:
    return set(value) == {"dtype", "shape", "data"}


def encode_value(value: Any, binary: bool) -> Any:
    """A (possibly nested) observation or action -> its wire form (arrays packed when binary)."""
    if isinstance(value, dict):
        return {str(k): encode_value(v, binary) for k, v in value.items()}
    if isinstance(value, tuple):
        return [encode_value(v, binary) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value.item()
        return pack_array(value, binary) if binary else value.tolist()
    return value


# -- field access --------------------------------------------------------------------------------
def require(
    message: dict[str, Any], name: str, kinds: type | tuple[type, ...], optional: bool = False
) -> Any:
    """A field of ``message`` of the given type(s); one ProtocolError naming it otherwise."""
    if name not in message or message[name] is None:
        if optional:
            return None
        raise ProtocolError(BAD_REQUEST, f"Message {message['type']!r} needs the field {name!r}.")
    value = message[name]
    if isinstance(value, bool) and bool not in _as_tuple(kinds):
        raise ProtocolError(BAD_REQUEST, f"Field {name!r} of {message['type']!r} must not be a boolean.")
    if not isinstance(value, kinds):
        names = ", ".join(k.__name__ for k in _as_tuple(kinds))
        raise ProtocolError(
            BAD_REQUEST, f"Field {name!r} of {message['type']!r} must be {names}, got {_preview(value)}."
        )
    return value


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def number(message: dict[str, Any], name: str, default: float = 0.0, limit: float | None = None) -> float:
    """A finite number field (finite in float32, the training dtype); ``|value| <= limit`` if given."""
    value = require(message, name, (int, float), optional=True)
    if value is None:
        return default
    try:
        value = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits
        raise ProtocolError(
            BAD_REQUEST, f"Field {name!r} of {message['type']!r} is too large: {_preview(value, 40)}."
        ) from None
    bound = FLOAT32_MAX if limit is None else min(limit, FLOAT32_MAX)
    if not abs(value) <= bound:
        raise ProtocolError(
            BAD_REQUEST,
            f"Field {name!r} of {message['type']!r} must be a finite number with magnitude at most "
            f"{bound:g}, got {value}.",
        )
    return value


def flag(message: dict[str, Any], name: str, default: bool) -> bool:
    value = require(message, name, bool, optional=True)
    return default if value is None else value


def numbers(
    values: Any, length: int, what: str, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """A list/array of ``length`` numbers (rewards, log-probs), finite in float32 and inside
    ``[low, high]`` where given (bounds beyond which a value cannot be legitimate)."""
    array = _as_array(values, np.dtype(np.float64), what).reshape(-1)
    if array.shape[0] != length:
        raise ProtocolError(BAD_REQUEST, f"{what} has {array.shape[0]} entries, expected {length}.")
    if not _float32_finite(array):
        raise ProtocolError(
            BAD_REQUEST,
            f"{what} must be finite numbers (in float32's range 3.4e38; NaN and inf are refused).",
        )
    low = -np.inf if low is None else low
    high = np.inf if high is None else high
    outside = (array < low) | (array > high)
    if np.any(outside):
        raise ProtocolError(
            BAD_REQUEST,
            f"{what} must lie in [{low:g}, {high:g}] (no legitimate value is outside); "
            f"got {float(array[np.argmax(outside)]):g}.",
        )
    return array


__all__: Sequence[str] = [
    "PROTOCOL_VERSION",
    "FrameReader",
    "ProtocolError",
    "ServerError",
    "decode_batch",
    "decode_value",
    "encode_frame",
    "encode_value",
    "pack_array",
    "unpack_array",
]
