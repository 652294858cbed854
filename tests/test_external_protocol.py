"""The wire format: frames, incremental parsing, arrays decoded against their spaces."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_rl.envs.external import protocol as proto
from lightning_rl.envs.external.protocol import FrameReader, ProtocolError


@pytest.mark.parametrize("encoding", [proto.JSON, proto.MSGPACK])
def test_a_frame_is_a_length_an_encoding_byte_and_a_body(encoding):
    message = {"type": "ping", "n": 3, "x": [1.5, 2]}
    frame = proto.encode_frame(message, encoding)
    length, code = struct.unpack(">IB", frame[:5])
    assert (length, code) == (len(frame) - 5, encoding)
    reader = FrameReader()
    reader.feed(frame)
    assert reader.next_message() == (message, encoding)
    assert reader.next_message() is None


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_frames_parse_the_same_however_the_bytes_are_split(cuts):
    messages = [{"type": "get_action", "i": i, "data": bytes(range(i))} for i in range(5)]
    stream = b"".join(proto.encode_frame(m, proto.MSGPACK) for m in messages)
    reader = FrameReader()
    parsed = []
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(points):
        reader.feed(stream[start:end])
        while (item := reader.next_message()) is not None:
            parsed.append(item[0])
    assert parsed == messages


def test_oversized_frames_are_refused_from_the_header_alone():
    reader = FrameReader(max_frame_bytes=100)
    reader.feed(struct.pack(">IB", 101, proto.JSON))
    with pytest.raises(ProtocolError) as info:
        reader.next_message()
    assert info.value.code == proto.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (struct.pack(">IB", 2, 9) + b"{}", proto.BAD_FRAME),
        (struct.pack(">IB", 3, proto.JSON) + b"{x}", proto.BAD_FRAME),
        (struct.pack(">IB", 4, proto.JSON) + b"[1] ", proto.BAD_FRAME),
        (struct.pack(">IB", 13, proto.JSON) + b'{"type": 3}  ', proto.BAD_FRAME),
    ],
)
def test_undecodable_bodies_are_protocol_errors(frame, code):
    reader = FrameReader()
    reader.feed(frame)
    with pytest.raises(ProtocolError) as info:
        reader.next_message()
    assert info.value.code == code


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "bool"])
@pytest.mark.parametrize("binary", [True, False])
def test_packed_arrays_round_trip_as_little_endian_bytes(dtype, binary):
    array = (np.arange(12).reshape(3, 4) % 2).astype(dtype)
    packed = proto.pack_array(array, binary)
    assert packed["shape"] == [3, 4] and packed["dtype"] == dtype
    restored = proto.unpack_array(packed)
    assert restored.dtype == array.dtype and np.array_equal(restored, array)
    restored[0, 0] = 1  # writable: no view into the message body


def test_big_endian_arrays_are_sent_little_endian():
    array = np.arange(3, dtype=">f4")
    packed = proto.pack_array(array)
    assert packed["data"] == np.arange(3, dtype="<f4").tobytes()


def test_values_decode_against_their_space_in_every_wire_form():
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    as_list = proto.decode_value([0.5, -0.5], box)
    as_bytes = proto.decode_value(proto.pack_array(np.array([0.5, -0.5], np.float32)), box)
    assert as_list.dtype == np.float32 and np.array_equal(as_list, as_bytes)
    dict_space = spaces.Dict({"pos": box, "mode": spaces.Discrete(3)})
    decoded = proto.decode_value({"pos": [0, 1], "mode": 2}, dict_space)
    assert decoded["mode"] == 2 and decoded["pos"].shape == (2,)
    batch = proto.decode_batch([{"pos": [0, 1], "mode": 2}, {"pos": [1, 1], "mode": 0}], dict_space, "obs")
    assert batch["pos"].shape == (2, 2) and batch["mode"].tolist() == [2, 0]
    tuple_space = spaces.Tuple([spaces.Discrete(2), box])
    assert proto.decode_value([1, [0, 0]], tuple_space)[0] == 1


@pytest.mark.parametrize(
    ("value", "space", "fragment"),
    [
        ([1, 2, 3], spaces.Box(-1, 1, (2,)), "shape"),
        ([0.0, float("inf")], spaces.Box(-1, 1, (2,)), "non-finite"),
        (5, spaces.Discrete(3), "outside"),
        (1.5, spaces.Discrete(3), "whole numbers"),
        ({"pos": [0, 0]}, spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "m": spaces.Discrete(2)}), "lacks"),
        ({"dtype": "complex64", "shape": [2], "data": b""}, spaces.Box(-1, 1, (2,)), "dtype"),
        ({"dtype": "float32", "shape": [2], "data": "%%%"}, spaces.Box(-1, 1, (2,)), "base64"),
        ("text", spaces.Box(-1, 1, (2,)), "numbers"),
    ],
)
def test_values_that_do_not_fit_name_the_problem(value, space, fragment):
    with pytest.raises(ProtocolError) as info:
        proto.decode_value(value, space)
    assert info.value.code == proto.BAD_REQUEST
    assert fragment in info.value.message
