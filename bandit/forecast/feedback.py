"""How rewards reach the replication loop's store: delays, updates, the SW-UCB window.

- A reward delayed by the environment waits in a binary min-heap on its arrival step
  (:func:`heap_push`, :func:`heap_pop`): integer columns ``H_*`` and a reward per entry.
- :func:`deliver` adds one observation to the store as the service's Lua does (Welford for
  Gaussian arms), weighted when forgetting back-dates it.
- :func:`slide_window` keeps SW-UCB's window of the last tau arrivals.
- :func:`mark` notes which arms' statistics changed, so a refresh of the policy's view copies
  only those (as the service's cache refreshes only what changed).
"""

from __future__ import annotations

import numba

from bandit.forecast.codes import SW_UCB
from bandit.jit import jit
from bandit.policy.layout import BERNOULLI, BoolArray, FloatArray, IntArray

__all__ = [
    "H_ARM",
    "H_ARRIVAL",
    "H_GENERATION",
    "H_SENT",
    "N_HEAP_COLUMNS",
    "deliver",
    "heap_pop",
    "heap_push",
    "mark",
    "slide_window",
]


# Pending delayed rewards: int columns of the heap.
H_ARRIVAL = 0
H_SENT = 1
H_ARM = 2
H_GENERATION = 3
N_HEAP_COLUMNS = 4


@jit
def heap_push(ints: IntArray, rewards: FloatArray, size: int, row: IntArray,
              reward: float) -> None:
    """Insert into a binary min-heap on ints[:, H_ARRIVAL] holding ``size`` entries."""
    i = size
    while i > 0:
        parent = (i - 1) // 2
        if ints[parent, H_ARRIVAL] <= row[H_ARRIVAL]:
            break
        ints[i] = ints[parent]
        rewards[i] = rewards[parent]
        i = parent
    ints[i] = row
    rewards[i] = reward


@jit
def heap_pop(ints: IntArray, rewards: FloatArray, size: int, row: IntArray) -> float:
    """Remove the earliest entry into ``row`` and return its reward; ``size`` is before removal."""
    row[:] = ints[0]
    reward = float(rewards[0])
    last = size - 1
    i = 0
    while True:
        child = 2 * i + 1
        if child >= last:
            break
        if child + 1 < last and ints[child + 1, H_ARRIVAL] < ints[child, H_ARRIVAL]:
            child += 1
        if ints[last, H_ARRIVAL] <= ints[child, H_ARRIVAL]:
            break
        ints[i] = ints[child]
        rewards[i] = rewards[child]
        i = child
    ints[i] = ints[last]
    rewards[i] = rewards[last]
    return reward


@numba.njit(inline="always")
def deliver(code: int, family: int, store: FloatArray, counts: FloatArray, arm: int,
            reward: float, weight: float) -> None:
    """Add one observation as the service's Lua does (Welford for Gaussian arms)."""
    counts[arm] += 1.0
    if code == SW_UCB:
        store[0, arm] += 1.0
        store[1, arm] += reward
    elif family == BERNOULLI:
        store[0, arm] += weight * reward
        store[1, arm] += weight * (1.0 - reward)
    else:
        total = store[0, arm] + weight
        if total > 0.0:
            delta = reward - store[1, arm]
            store[1, arm] += weight * delta / total
            store[2, arm] += weight * delta * (reward - store[1, arm])
            store[0, arm] = total


@numba.njit(inline="always")
def mark(changed: BoolArray, stack: IntArray, n_changed: int, k: int) -> int:
    """Note that arm k's statistics changed since the last refresh; returns the new count."""
    if not changed[k]:
        changed[k] = True
        stack[n_changed] = k
        n_changed += 1
    return n_changed


@jit
def slide_window(
    generation: IntArray, ring: FloatArray, ring_state: IntArray, store: FloatArray,
    changed: BoolArray, changed_stack: IntArray, n_changed: int, arm: int, reward: float,
) -> int:
    """SW-UCB: the oldest arrival leaves the window (unless its arm has retired since) and
    the new one enters; returns the new count of changed arms. deliver adds the new one."""
    window = ring.shape[0]
    head, size = ring_state[0], ring_state[1]
    if size == window:
        old = int(ring[head, 0])
        if ring[head, 1] == generation[old]:
            store[0, old] -= 1.0
            store[1, old] -= ring[head, 2]
            n_changed = mark(changed, changed_stack, n_changed, old)
        head = (head + 1) % window
        size -= 1
    slot = (head + size) % window
    ring[slot, 0] = arm
    ring[slot, 1] = generation[arm]
    ring[slot, 2] = reward
    ring_state[0], ring_state[1] = head, size + 1
    return n_changed

