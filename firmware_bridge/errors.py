"""Exception types of the firmware bridge.

The decoder raises only :class:`ProtocolError`; the transports raise only :class:`TransportError`
(an unplugged adapter, a port that is busy or gone); the link raises :class:`LinkError` for a
request that was refused or never answered. Keeping the three apart lets the reader thread tell a
bad frame (count it, carry on) from a lost port (reconnect).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A frame that is not valid on the wire. ``kind`` names the check that failed."""

    #: the checks, in the order the decoder applies them (also the names of the error counters)
    KINDS = ("empty", "oversize", "cobs", "short", "crc", "version", "type", "payload")

    def __init__(self, kind: str, detail: str, *, seq: int | None = None, mtype: int | None = None) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown ProtocolError kind {kind!r}; allowed: {self.KINDS}")
        self.kind = kind
        # the header of a CRC-valid frame whose type is unknown ("type"): a controller answers an
        # acknowledged command type it lacks (0x10..0x1F) with NACK UNSUPPORTED and needs both
        self.seq = seq
        self.mtype = mtype
        super().__init__(f"{kind}: {detail}")


class TransportError(Exception):
    """The byte transport failed: port missing, busy (exclusive lock), unplugged or closed."""


class LinkError(Exception):
    """A link-level request failed: not connected, not acknowledged in time, or refused (NACK)."""
