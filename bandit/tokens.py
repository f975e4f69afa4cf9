"""Signed decision ids: a reward can only name a decision this service really served.

A one-arm decision id is ``KIND ISSUED PROCESS COUNTER TAG`` in lower-case hex, with no
separators:

========  ===========  ==================================================================
part      width        meaning
========  ===========  ==================================================================
KIND      1            ``d`` one arm, ``p`` one arm served as a provisional failure
ISSUED    8            epoch seconds when it was served
PROCESS   10           random per service process (ids are unique without coordination)
COUNTER   1 to 16      the process's decision counter, no leading zeros (one spelling only)
TAG       16           SipHash-2-4 of (experiment, kind, process, counter, issued, arm)
========  ===========  ==================================================================

A ranked slate's id, kind ``r``, lists its arms: ``r ISSUED PROCESS COUNTER ARMS TAG``, with
the counter in exactly 12 hex digits and each arm index in exactly 3 (arms number at most
1000), so ``k = (length - 47) / 3``. Its tag chains SipHash over the arm indices too, so a
reward for a slate must name one of the arms the slate showed.

The tag is keyed with a secret every process shares (kept in Redis, created once), so only the
service can make a valid id, and a valid id names its experiment and its arm (or arms): a
reward for another experiment or arm, or for an id nobody served, is refused.

A contextual experiment's decision is also bound to the context it was decided for: its tag
is computed with the experiment word XORed with 63 bits of a hash of the feature vector
(``bandit.features.feature_hash``), so a reward whose context encodes to other features does
not verify, and the model is only ever updated with the features that were served.

Kind ``s``, the slate ids of earlier versions, did not list their arms (any arm of the
experiment was accepted); they are no longer issued, and are accepted with that rule only for
the rest of their life (the dedup window), so that a rolling upgrade loses no reward.

SipHash-2-4 is a keyed pseudo-random function designed as a MAC for short inputs (Aumasson and
Bernstein, 2012); in numba it costs tens of nanoseconds per decision, so a batch of 10000
decisions is signed in a fraction of a millisecond where HMAC-SHA256 from Python would take
about 10 ms.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from bandit.jit import jit

KINDS = "dpsr"
SLATE_ARM = 0xFFFF_FFFF
#: Hex digits of a slate id's counter and of each of its arm indices.
_SLATE_COUNTER_DIGITS, _SLATE_ARM_DIGITS = 12, 3
#: A slate id's length without its arms: kind, issued, process, counter, tag.
_SLATE_HEAD = 1 + 8 + 10 + _SLATE_COUNTER_DIGITS + 16
MAX_SLATE_ARM = 16**_SLATE_ARM_DIGITS - 1
#: Every id this module can issue (and the ``s`` slates of earlier versions), nothing else.
DECISION_ID_PATTERN = re.compile(
    r"[dps][0-9a-f]{18}[1-9a-f][0-9a-f]{16,31}|r[0-9a-f]{30}(?:[0-9a-f]{3})+[0-9a-f]{16}")
VALID, FORGED, EXPIRED = 0, 1, 2
#: Accepted clock difference between service hosts, in seconds.
CLOCK_SKEW_S = 300

U64 = npt.NDArray[np.uint64]


@jit
def _rotl(x: np.uint64, bits: np.uint64) -> np.uint64:
    return (x << bits) | (x >> (np.uint64(64) - bits))


@jit
def _rounds(v0: np.uint64, v1: np.uint64, v2: np.uint64, v3: np.uint64,
            times: int) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    for _ in range(times):
        v0 += v1
        v1 = _rotl(v1, np.uint64(13))
        v1 ^= v0
        v0 = _rotl(v0, np.uint64(32))
        v2 += v3
        v3 = _rotl(v3, np.uint64(16))
        v3 ^= v2
        v0 += v3
        v3 = _rotl(v3, np.uint64(21))
        v3 ^= v0
        v2 += v1
        v1 = _rotl(v1, np.uint64(17))
        v1 ^= v2
        v2 = _rotl(v2, np.uint64(32))
    return v0, v1, v2, v3


@jit
def siphash4(k0: np.uint64, k1: np.uint64, w0: np.uint64, w1: np.uint64, w2: np.uint64,
              w3: np.uint64) -> np.uint64:
    """SipHash-2-4 of the 32 bytes ``w0 w1 w2 w3`` (little-endian words)."""
    v0 = k0 ^ np.uint64(0x736F6D6570736575)
    v1 = k1 ^ np.uint64(0x646F72616E646F6D)
    v2 = k0 ^ np.uint64(0x6C7967656E657261)
    v3 = k1 ^ np.uint64(0x7465646279746573)
    for message in (w0, w1, w2, w3, np.uint64(32) << np.uint64(56)):
        v3 ^= message
        v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 2)
        v0 ^= message
    v2 ^= np.uint64(0xFF)
    v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 4)
    return v0 ^ v1 ^ v2 ^ v3


@jit
def _decision_tag(k0: np.uint64, k1: np.uint64, experiment: int,
                  process_kind: int | np.uint64, counter: int | np.uint64,
                  issued: int | np.uint64, arm: int) -> np.uint64:
    """What a decision's tag covers (signing and ``_verify`` both come here)."""
    return siphash4(k0, k1, np.uint64(experiment), np.uint64(process_kind),
                     np.uint64(counter),
                     (np.uint64(issued) << np.uint64(32)) | np.uint64(arm))


@jit
def _slate_tag(k0: np.uint64, k1: np.uint64, experiment: int, process_kind: int | np.uint64,
               counter: int | np.uint64, issued: int | np.uint64,
               arms: npt.NDArray[np.int64]) -> np.uint64:
    """A slate's tag: its decision tag, chained through SipHash with every arm index in order."""
    tag = _decision_tag(k0, k1, experiment, process_kind, counter, issued, SLATE_ARM)
    for arm in arms:
        tag = siphash4(k0, k1, tag, np.uint64(arm), np.uint64(arms.shape[0]), np.uint64(0))
    return tag


@jit
def _write_slate_ids(head: npt.NDArray[np.uint8], k0: np.uint64, k1: np.uint64,
                     experiment: int, process_kind: int, first: int, issued: int,
                     arms: npt.NDArray[np.int64], digits: npt.NDArray[np.uint8],
                     out: npt.NDArray[np.uint8]) -> None:
    """Row i of ``out``: the id of slate ``arms[i]`` with counter ``first + i``."""
    start = head.shape[0]
    k = arms.shape[1]
    for i in range(arms.shape[0]):
        out[i, :start] = head
        counter = first + i
        for d in range(12):
            out[i, start + 11 - d] = digits[(counter >> (4 * d)) & 15]
        position = start + 12
        for j in range(k):
            arm = arms[i, j]
            for d in range(3):
                out[i, position + 2 - d] = digits[(arm >> (4 * d)) & 15]
            position += 3
        tag = _slate_tag(k0, k1, experiment, process_kind, counter, issued, arms[i])
        for d in range(16):
            out[i, position + 15 - d] = digits[np.int64((tag >> np.uint64(4 * d))
                                                        & np.uint64(15))]


@jit
def decision_tags(k0: np.uint64, k1: np.uint64, experiment: int, process_kind: int,
                  counters: npt.NDArray[np.int64], issued: npt.NDArray[np.int64],
                  arms: npt.NDArray[np.int64]) -> U64:
    """The tag of each decision (see the module docstring for what it covers)."""
    out = np.empty(counters.shape[0], dtype=np.uint64)
    for i in range(counters.shape[0]):
        out[i] = _decision_tag(k0, k1, experiment, process_kind, counters[i], issued[i],
                               arms[i])
    return out


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@jit
def _write_ids(head: npt.NDArray[np.uint8], counters: npt.NDArray[np.int64], tags: U64,
               width: int, digits: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8]) -> None:
    """Row i of ``out``: ``head``, then counter i in ``width`` hex digits, then tag i in 16."""
    start = head.shape[0]
    for i in range(counters.shape[0]):
        out[i, :start] = head
        counter = counters[i]
        for d in range(width):
            out[i, start + width - 1 - d] = digits[(counter >> (4 * d)) & 15]
        tag = tags[i]
        for d in range(16):
            out[i, start + width + 15 - d] = digits[np.int64((tag >> np.uint64(4 * d))
                                                             & np.uint64(15))]


def _hex_width(value: int) -> int:
    return max(1, (value.bit_length() + 3) // 4)


@dataclass
class DecisionSigner:
    """Issues and checks decision ids for one process (``process``: its random 40 bits)."""

    key: bytes
    process: int
    _k0: np.uint64 = field(init=False)
    _k1: np.uint64 = field(init=False)
    _experiment_words: dict[str, int] = field(init=False, default_factory=dict)
    #: The next decision counter of this process.
    _counter: int = field(init=False, default=1)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the decision signing key needs at least 16 bytes")
        if not 0 <= self.process < 1 << 40:
            raise ValueError("process must be a 40-bit number")
        self._k0 = np.uint64(int.from_bytes(self.key[:8], "little"))
        self._k1 = np.uint64(int.from_bytes(self.key[8:16], "little"))
        self._head = f"{self.process:010x}"
        self._process_kind = {kind: self.process | index << 40
                              for index, kind in enumerate(KINDS)}

    def experiment_word(self, experiment_id: str) -> int:
        """63 bits of a hash of the id (numba takes the word as a signed 64-bit integer)."""
        word = self._experiment_words.get(experiment_id)
        if word is None:
            if len(self._experiment_words) > 100_000:
                self._experiment_words.clear()
            word = int.from_bytes(hashlib.blake2b(experiment_id.encode(), digest_size=8)
                                  .digest(), "little") >> 1
            self._experiment_words[experiment_id] = word
        return word

    def _counters(self, n: int) -> int:
        """The first of ``n`` fresh counters, all written with the same number of digits (a
        block that would cross into one more digit starts at the next power of 16)."""
        first = self._counter
        while _hex_width(first + n - 1) != _hex_width(first):
            first = 16 ** _hex_width(first)
        self._counter = first + n
        return first

    def sign_one(self, experiment_id: str, kind: str, issued: int, arm: int,
                 context: int = 0) -> str:
        """The id of one new decision: ``sign`` for one arm, without arrays (the hot path)."""
        counter = self._counter
        self._counter = counter + 1
        tag = _decision_tag(self._k0, self._k1, (self._experiment_words.get(experiment_id)
                            or self.experiment_word(experiment_id)) ^ context,
                            self._process_kind[kind], counter, issued, arm)
        # %-formatting: half the time of the equivalent f-string on this hot path.
        return "%s%08x%s%x%016x" % (kind, issued, self._head, counter, int(tag))  # noqa: UP031

    def sign(self, experiment_id: str, kind: str, issued: int,
             arms: npt.NDArray[np.int64] | list[int], context: int = 0) -> list[str]:
        """Ids for new decisions serving ``arms`` (arm indices; ``SLATE_ARM`` for slates),
        served at ``issued`` (epoch seconds); ``context``: a contextual decision's feature
        hash (``bandit.features.feature_hash``), which a reward must then match."""
        n = len(arms)
        if n == 1:
            return [self.sign_one(experiment_id, kind, issued, int(arms[0]), context)]
        first = self._counters(n)
        experiment = self.experiment_word(experiment_id) ^ context
        process_kind = self._process_kind[kind]
        head = f"{kind}{issued:08x}{self._head}"
        counters = np.arange(first, first + n, dtype=np.int64)
        tags = decision_tags(self._k0, self._k1, experiment, process_kind, counters,
                             np.full(n, issued, dtype=np.int64),
                             np.asarray(arms, dtype=np.int64))
        width = _hex_width(first)
        length = len(head) + width + 16
        out = np.empty((n, length), dtype=np.uint8)
        _write_ids(np.frombuffer(head.encode(), dtype=np.uint8), counters, tags, width,
                   _HEX_DIGITS, out)
        text = out.tobytes().decode("ascii")
        return [text[start:start + length] for start in range(0, n * length, length)]

    def sign_slates(self, experiment_id: str, issued: int,
                    slates: npt.NDArray[np.int64], context: int = 0) -> list[str]:
        """Ids for new ranked slates, one per row of ``slates`` (arm indices, in order)."""
        n, k = slates.shape
        if n == 0:
            return []
        if slates.min() < 0 or slates.max() > MAX_SLATE_ARM:
            raise ValueError(f"slate arm indices must lie in 0..{MAX_SLATE_ARM}")
        first = self._counter
        if first + n >= 16**_SLATE_COUNTER_DIGITS:
            raise OverflowError("the decision counter outgrew a slate id's 12 hex digits")
        self._counter = first + n
        head = f"r{issued:08x}{self._head}"
        length = _SLATE_HEAD + _SLATE_ARM_DIGITS * k
        out = np.empty((n, length), dtype=np.uint8)
        _write_slate_ids(np.frombuffer(head.encode(), dtype=np.uint8), self._k0, self._k1,
                         self.experiment_word(experiment_id) ^ context, self._process_kind["r"],
                         first,
                         issued, np.ascontiguousarray(slates, dtype=np.int64), _HEX_DIGITS, out)
        text = out.tobytes().decode("ascii")
        return [text[start:start + length] for start in range(0, n * length, length)]

    def verify(self, experiment_id: str, decision_ids: list[str], arms: list[int],
               now: float, max_age_s: float, contexts: list[int] | None = None) -> list[int]:
        """VALID, FORGED or EXPIRED for each id (which must match ``DECISION_ID_PATTERN``)
        as a decision of ``experiment_id`` for the arm index beside it (for a slate: one of
        the slate's arms) and, for a contextual experiment, the context hash beside it."""
        lengths = np.fromiter(map(len, decision_ids), dtype=np.int64, count=len(decision_ids))
        words = np.full(len(decision_ids), self.experiment_word(experiment_id), dtype=np.int64)
        if contexts is not None:
            words ^= np.asarray(contexts, dtype=np.int64)
        statuses = _verify(self._k0, self._k1, words,
                           np.frombuffer("".join(decision_ids).encode("ascii"), dtype=np.uint8),
                           lengths, np.asarray(arms, dtype=np.int64), now, max_age_s)
        return statuses.tolist()  # type: ignore[no-any-return]


@jit
def _hex_value(text: npt.NDArray[np.uint8], start: int, stop: int) -> np.uint64:
    value = np.uint64(0)
    for position in range(start, stop):
        character = text[position]
        digit = character - 48 if character <= 57 else character - 87  # 0-9, a-f
        value = (value << np.uint64(4)) | np.uint64(digit)
    return value


@jit
def _verify(k0: np.uint64, k1: np.uint64, experiments: npt.NDArray[np.int64],
            text: npt.NDArray[np.uint8],
            lengths: npt.NDArray[np.int64], arms: npt.NDArray[np.int64], now: float,
            max_age_s: float) -> npt.NDArray[np.int64]:
    """Statuses of the concatenated ids in ``text`` (each already matched the pattern)."""
    statuses = np.zeros(lengths.shape[0], dtype=np.int64)
    start = 0
    for i in range(lengths.shape[0]):
        experiment = experiments[i]
        stop = start + lengths[i]
        kind = text[start]
        # 'd', 'p', 's', 'r'
        kind_index = 0 if kind == 100 else (1 if kind == 112 else (2 if kind == 115 else 3))
        issued = _hex_value(text, start + 1, start + 9)
        process = _hex_value(text, start + 9, start + 19)
        process_kind = process | (np.uint64(kind_index) << np.uint64(40))
        tag = _hex_value(text, stop - 16, stop)
        if kind_index == 3:
            counter = _hex_value(text, start + 19, start + 31)
            k = (stop - 16 - (start + 31)) // 3
            slate = np.empty(k, dtype=np.int64)
            shown = False
            for j in range(k):
                slate[j] = np.int64(_hex_value(text, start + 31 + 3 * j, start + 34 + 3 * j))
                shown = shown or slate[j] == arms[i]
            valid = shown and _slate_tag(k0, k1, experiment, process_kind, counter, issued,
                                         slate) == tag
        else:
            counter = _hex_value(text, start + 19, stop - 16)
            arm = SLATE_ARM if kind_index == 2 else arms[i]
            valid = _decision_tag(k0, k1, experiment, process_kind, counter, issued,
                                  arm) == tag
        served = float(issued)
        if not valid or served > now + CLOCK_SKEW_S:
            statuses[i] = FORGED
        elif kind_index != 1 and now - served > max_age_s:
            statuses[i] = EXPIRED
        start = stop
    return statuses


def warm_up() -> None:
    signer = DecisionSigner(bytes(16), 1)
    for arms in ([1], [1, 2]):
        ids = signer.sign("warm-up", "d", 1, arms)
        signer.verify("warm-up", ids, arms, 1.0, 10.0)
    slates = signer.sign_slates("warm-up", 1, np.array([[1, 2]], dtype=np.int64))
    signer.verify("warm-up", slates, [2], 1.0, 10.0)


#: Characters of a slate's id (``r...``) that identify it (``decision_key``).
SLATE_KEY_LENGTH = _SLATE_HEAD - 16


def decision_key(decision_id: str) -> str:
    """What identifies a decision in the store's reward markers: the id itself, but for a
    slate only its unique head (kind, issued, process, counter), not its list of arms."""
    if decision_id[0] == "r":
        return decision_id[:SLATE_KEY_LENGTH]
    return decision_id
