"""Helpers for the service's own child processes (the training job, the digit model's process)."""

import ctypes
import os
import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO

FRAME_HEADER = struct.Struct(">I")


def die_with_parent(parent_pid: int) -> None:
    """If the server is killed, this process dies with it instead of living on alone."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def encode_frame(message: Any) -> bytes:
    """A message between the server and its own child process: length, then pickle (trusted peers)."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> Any:
    return pickle.loads(payload)  # noqa: S301 - written by our own parent or child process


def read_frame(stream: BinaryIO) -> Any | None:
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (length,) = FRAME_HEADER.unpack(header)
    return decode_payload(stream.read(length))
