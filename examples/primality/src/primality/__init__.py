"""Primality for 64-bit integers: a dependency wheel of the primes example.

Only the job scripts import it, on the workers; the server-side handler does
not. It travels to the workers as a dependency wheel of the package.
"""

from __future__ import annotations

import math

__all__ = ["count_primes", "is_prime", "primes_in"]

_SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
# These bases make Miller-Rabin deterministic for every n < 3.3e24, so for all 64-bit ints.
_BASES = _SMALL_PRIMES


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for ``n < 2**64`` (and far beyond)."""
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def primes_in(lo: int, hi: int) -> list[int]:
    """The primes ``p`` with ``lo <= p < hi``, by a segmented sieve."""
    lo = max(lo, 2)
    if hi <= lo:
        return []
    root = math.isqrt(hi - 1)
    base = bytearray([1]) * (root + 1)
    base[:2] = b"\x00\x00"
    for i in range(2, math.isqrt(root) + 1):
        if base[i]:
            base[i * i :: i] = bytes(len(range(i * i, root + 1, i)))
    segment = bytearray([1]) * (hi - lo)
    for p in (i for i, flag in enumerate(base) if flag):
        start = max(p * p, (lo + p - 1) // p * p)
        segment[start - lo :: p] = bytes(len(range(start, hi, p)))
    return [lo + i for i, flag in enumerate(segment) if flag]


def count_primes(lo: int, hi: int) -> int:
    """How many primes ``p`` satisfy ``lo <= p < hi``."""
    return len(primes_in(lo, hi))
