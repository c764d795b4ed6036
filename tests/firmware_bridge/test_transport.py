"""The host's serial transport: a write that went out whole is never a timeout; a port that stops
draining is one, within the write timeout."""

from __future__ import annotations

import os

import pytest

from firmware_bridge.errors import TransportError
from firmware_bridge.ptyport import open_pty
from firmware_bridge.transport import SerialTransport


def test_a_write_that_went_out_whole_is_not_a_timeout_however_late_the_thread_ran() -> None:
    """Before: pyserial's timed write checked its deadline after os.write had written every byte,
    so a thread preempted past the 50 ms write timeout (a loaded machine: CI's failing
    `firmware ping`, "Write timeout") reported a lost port. A deadline already past when the
    write returns stands in for the preemption here."""
    pty = open_pty()
    t = SerialTransport(pty.path, write_timeout_s=1e-9)
    try:
        t.write(b"\x00frame\x00")
        assert os.read(pty.master, 64) == b"\x00frame\x00"
    finally:
        t.close()
        pty.close()


def test_a_port_that_stops_draining_fails_the_write_within_its_timeout() -> None:
    pty = open_pty()  # nobody reads the controller side: the pty's buffer fills
    t = SerialTransport(pty.path, write_timeout_s=0.05)
    try:
        with pytest.raises(TransportError, match=r"no room for \d+ of 65536 bytes within 50 ms"):
            for _ in range(64):  # a pty holds a few kB to a few tens of kB
                t.write(bytes(65536))
    finally:
        t.close()
        pty.close()


def test_a_closed_transport_raises_transport_error() -> None:
    pty = open_pty()
    t = SerialTransport(pty.path)
    t.close()
    try:
        with pytest.raises(TransportError, match="write to"):
            t.write(b"x")
    finally:
        pty.close()
