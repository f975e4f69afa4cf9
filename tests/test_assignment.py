"""The layer hash (``bandit.assignment``): its documented vectors, an independent SHA-256,
uniformity over a million units and independence across salts."""

from __future__ import annotations

import struct

import numpy as np
import scipy.stats

from bandit.assignment import ARM_GOLDEN, BUCKETS, GOLDEN, arm_point, arm_points, bucket, buckets


def _sha256(message: bytes) -> bytes:
    """FIPS 180-4 SHA-256, written out: the check on hashlib's answers, not a second call."""
    primes = [p for p in range(2, 312) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
    # The constants: fractional parts of the primes' cube and square roots (the "abc" vector
    # below confirms doubles carry them exactly enough).
    rounds = [int((p ** (1 / 3) % 1) * 2 ** 32) for p in primes[:64]]
    state = [int((p ** 0.5 % 1) * 2 ** 32) for p in primes[:8]]
    padded = message + b"\x80" + b"\x00" * ((55 - len(message)) % 64) + struct.pack(
        ">Q", 8 * len(message))
    mask = 0xFFFFFFFF

    def rotr(x: int, n: int) -> int:
        return ((x >> n) | (x << (32 - n))) & mask

    for start in range(0, len(padded), 64):
        w = list(struct.unpack(">16I", padded[start:start + 64]))
        for i in range(16, 64):
            s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w.append((w[i - 16] + s0 + w[i - 7] + s1) & mask)
        a, b, c, d, e, f, g, h = state
        for i in range(64):
            t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g))
                  + rounds[i] + w[i]) & mask
            t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & mask
            a, b, c, d, e, f, g, h = (t1 + t2) & mask, a, b, c, (d + t1) & mask, e, f, g
        state = [(x + y) & mask for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True)]
    return b"".join(struct.pack(">I", x) for x in state)


def test_the_documented_vectors_hold_and_an_independent_sha256_agrees() -> None:
    assert _sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")  # FIPS 180-2
    for salt, unit, expected in GOLDEN:
        assert bucket(salt, unit) == expected
        independent = int.from_bytes(_sha256(f"{salt}.{unit}".encode())[:8], "big") % BUCKETS
        assert independent == expected
    rng = np.random.default_rng(1)
    for _ in range(200):
        unit = "".join(chr(c) for c in rng.integers(32, 0x2FF, size=int(rng.integers(0, 40))))
        assert bucket("salt", unit) == int.from_bytes(
            _sha256(f"salt.{unit}".encode())[:8], "big") % BUCKETS
    assert buckets("homepage", ["user-1", "user-2"]) == [4562, 698]


def test_a_million_units_fill_the_buckets_uniformly() -> None:
    """Pearson's chi-square over 10,000 buckets (9,999 degrees of freedom) for 10^6 unit ids:
    p above 0.001, a bound a uniform hash fails once in a thousand seeds; the test is seeded,
    so it cannot flake."""
    counts = np.bincount(buckets("layer-a", (f"user-{i}" for i in range(1_000_000))),
                         minlength=BUCKETS)
    assert scipy.stats.chisquare(counts).pvalue > 0.001


def test_two_salts_split_units_independently() -> None:
    """The 10 x 10 table of deciles in two layers, over 10^5 units: chi-square test of
    independence, p above 0.001."""
    units = [f"u{i}" for i in range(100_000)]
    first = np.asarray(buckets("layer-a", units)) // 1000
    second = np.asarray(buckets("layer-b", units)) // 1000
    table = np.zeros((10, 10))
    np.add.at(table, (first, second), 1)
    assert scipy.stats.chi2_contingency(table).pvalue > 0.001


def test_arm_points_match_openssl_and_an_independent_sha256() -> None:
    """A fixed experiment's arm hash: the vectors' digests came from OpenSSL, and the point is
    their top 53 bits over 2^53, recomputed here with the SHA-256 written out above."""
    for experiment, unit, digest in ARM_GOLDEN:
        independent = _sha256(f"arm.{experiment}.{unit}".encode())[:8]
        assert independent.hex() == digest
        expected = (int(digest, 16) >> 11) / 2**53
        assert arm_point(experiment, unit) == expected
        assert 0.0 <= expected < 1.0
    assert arm_points("ab-test", ["user-1", "user-2"]) == [
        arm_point("ab-test", "user-1"), arm_point("ab-test", "user-2")]


def test_arm_points_are_uniform_and_independent_of_the_layer_bucket() -> None:
    """10^5 points in 100 equal bins (chi-square, p above 0.001), and their deciles against the
    layer's bucket deciles for the same units (test of independence, p above 0.001): a unit's
    arm tells nothing of its range in the layer, even with the experiment's id as the salt."""
    units = [f"u{i}" for i in range(100_000)]
    points = np.asarray(arm_points("ab-test", units))
    assert scipy.stats.chisquare(np.bincount((points * 100).astype(int),
                                             minlength=100)).pvalue > 0.001
    table = np.zeros((10, 10))
    np.add.at(table, (np.asarray(buckets("ab-test", units)) // 1000,
                      (points * 10).astype(int)), 1)
    assert scipy.stats.chi2_contingency(table).pvalue > 0.001
