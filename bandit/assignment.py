"""Deterministic assignment of units to buckets: the hash every layer uses.

A layer splits its units into ``BUCKETS`` (10,000) buckets by a stable hash of the layer's salt
and the unit id, and gives disjoint bucket ranges to its experiments, so a unit is in at most
one experiment of a layer; layers with different salts split units independently.

The function, exactly (so that an SDK in another language computes the same bucket):

    bucket(salt, unit) = uint64_be(SHA-256(utf8(salt + "." + unit))[0:8]) mod 10000

that is, the first 8 bytes of the SHA-256 digest of the UTF-8 bytes of the salt, a full stop
and the unit id, read as a big-endian unsigned 64-bit integer, modulo 10,000 (the construction
Statsig documents for its layers). Test vectors (``GOLDEN``) are checked in the tests against
an independent SHA-256.

2^64 is not a multiple of 10,000: the buckets below 2^64 mod 10,000 = 1,616 are more likely by
one part in 1.8e15, far below anything a test of uniformity can see.

A fixed experiment (an A/B test) gives a unit its arm by a second hash, salted by the
experiment, read as a fraction of 2^64 so that an arm's chance is its weight exactly (not
rounded to buckets):

    arm_point(experiment, unit) = (uint64_be(SHA-256(utf8("arm." + experiment + "." +
                                   unit))[0:8]) >> 11) / 2^53

(the top 53 bits: a double in [0, 1), exactly)
and the unit's arm is the first active arm whose cumulative normalised weight exceeds it
(``ARM_GOLDEN``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["ARM_GOLDEN", "BUCKETS", "GOLDEN", "arm_point", "arm_points", "bucket", "buckets"]

#: Buckets per layer.
BUCKETS = 10_000

#: (salt, unit, bucket) test vectors of ``bucket``, computed with OpenSSL
#: (``printf '%s' "$salt.$unit" | openssl dgst -sha256``, first 16 hex digits mod 10000).
GOLDEN: tuple[tuple[str, str, int], ...] = (
    ("homepage", "user-1", 4562),
    ("homepage", "user-2", 698),
    ("checkout-layer", "8f14e45f-ceea-467f-a0e6-7e6a0b0c5d2e", 6426),
    ("s", "", 314),
    ("layer", "ünïcødé", 5796),
)


def bucket(salt: str, unit: str) -> int:
    """The unit's bucket in the layer salted ``salt``: 0 to ``BUCKETS - 1``."""
    digest = hashlib.sha256(f"{salt}.{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def buckets(salt: str, units: Iterable[str]) -> list[int]:
    """``bucket`` of each unit, in order."""
    prefix = f"{salt}.".encode()
    sha256 = hashlib.sha256
    from_bytes = int.from_bytes
    return [from_bytes(sha256(prefix + unit.encode()).digest()[:8], "big") % BUCKETS
            for unit in units]


#: (experiment, unit, first 16 hex digits of the digest) test vectors of ``arm_point``, from
#: OpenSSL (``printf '%s' "arm.$experiment.$unit" | openssl dgst -sha256``).
ARM_GOLDEN: tuple[tuple[str, str, str], ...] = (
    ("ab-test", "user-1", "23ed0a9730c6da2e"),
    ("checkout-colour", "user-2", "b2ddbc3083452ccf"),
    ("x", "ünïcødé", "a282b884989c357e"),
)


def arm_point(experiment: str, unit: str) -> float:
    """The unit's point in [0, 1) for a fixed experiment's arms."""
    digest = hashlib.sha256(f"arm.{experiment}.{unit}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) * 2.0**-53


def arm_points(experiment: str, units: Iterable[str]) -> list[float]:
    """``arm_point`` of each unit, in order."""
    prefix = f"arm.{experiment}.".encode()
    sha256 = hashlib.sha256
    from_bytes = int.from_bytes
    scale = 2.0**-53
    return [(from_bytes(sha256(prefix + unit.encode()).digest()[:8], "big") >> 11) * scale
            for unit in units]
