"""Sequence-number arithmetic (RFC 1982 serial numbers) for the 16-bit header sequence.

``a`` is newer than ``b`` when it is ahead by 1..32767 modulo 65536; this makes 0 newer than
65535 (wraparound) and treats a difference of exactly 32768 as "not newer" (ambiguous: refused).
"""

from __future__ import annotations

SEQ_MOD = 1 << 16
SEQ_HALF = SEQ_MOD >> 1


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**16."""
    return (a + n) % SEQ_MOD


def seq_distance(newer: int, older: int) -> int:
    """Forward distance from ``older`` to ``newer`` in 0..65535."""
    return (newer - older) % SEQ_MOD


def seq_newer(a: int, b: int) -> bool:
    """True when ``a`` comes strictly after ``b`` in serial-number order."""
    return 0 < seq_distance(a, b) < SEQ_HALF
