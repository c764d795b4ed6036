"""CRC-32C (Castagnoli), the frame check of the protocol.

Why CRC-32C rather than CRC-16/CCITT (binascii.crc_hqx): a motor link runs for days at 1 kHz.
Errors that COBS turns into multi-byte garbage (a hit code byte or delimiter) pass a 16-bit check
1 time in 65,536, i.e. a wrong setpoint applied every few days on a marginal cable; with 32 bits
it is 1 in 4.3e9. CRC-32C keeps Hamming distance 6 up to 5,243 bits, longer than any message of
this protocol, and ARMv8 (CRC extension, Jetson) and SSE4.2 compute it in one instruction.

The host uses the `crc32c` package (hardware instructions where the CPU has them, a tested
software path elsewhere) rather than our own table: one fewer thing to get wrong. The
MicroPython firmware core (micropython/legato_fw.py) carries its own table, since the package
does not exist there; the tests check both against the standard check value.

Parameters (Rocksoft model): width 32, poly 0x1EDC6F41 (reflected 0x82F63B78), init 0xFFFFFFFF,
refin/refout true, xorout 0xFFFFFFFF, check("123456789") = 0xE3069283.
"""

from __future__ import annotations

from crc32c import crc32c as _crc32c


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data``; pass a previous result as ``crc`` to continue over several pieces."""
    return _crc32c(bytes(data), crc)
