"""Alert episodes shared by every process: one alert per episode, whichever process sees it.

An episode of a condition (a failing sample ratio, stalled rewards, a winner called) begins
when a process first sees the condition hold and ends when one sees it clear. Its state is one
hash per experiment and kind (``bandit.store.keys.alert_episode``), changed only by the two
scripts below, so two processes that look at once agree on one episode and one of them
delivers it: a *lease* (server time) marks the process delivering, and ``d:<target>`` fields
the webhooks that acknowledged it. A delivery that failed releases the lease, so the next
check of any process tries again; a process that dies mid-delivery holds it until it expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bandit.store.connection import Client
from bandit.store.keys import Keys, alert_episode
from bandit.store.runner import ScriptRunner

# What a process saw of one condition of one experiment.
# KEYS[1] = `P:{E}:alert:<kind>`, KEYS[2] = `P:{E}:meta`.
# ARGV[1] = the subject ('' when the condition does not hold; for a winner call the arm, else
#           '1'), ARGV[2] = an id for the episode should one begin, ARGV[3] = the lease in
#           seconds, ARGV[4..] = the webhook targets this process delivers to.
# Returns {-1} (the experiment is archived or gone: the state is dropped), {0} (nothing to
# do), {2, episode} (the episode ended), or {1, episode, since, began, target...}: deliver the
# episode to those targets (the ones that have not acknowledged it), under a lease taken now.
OBSERVE = r"""
local archived = redis.call('HGET', KEYS[2], 'archived')
if not archived or archived == '1' then
  redis.call('DEL', KEYS[1])
  return {-1}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function fmt(x) return string.format('%.17g', x) end
local current = redis.call('HMGET', KEYS[1], 'episode', 'subject', 'since', 'lease')
if ARGV[1] == '' then
  if current[1] then
    redis.call('DEL', KEYS[1])
    return {2, current[1]}
  end
  return {0}
end
local began = 0
if not current[1] or current[2] ~= ARGV[1] then
  -- A new episode, or another winner: the previous call's episode ends with it.
  redis.call('DEL', KEYS[1])
  current = {ARGV[2], ARGV[1], fmt(now), '0'}
  redis.call('HSET', KEYS[1], 'episode', current[1], 'subject', current[2], 'since', current[3],
             'lease', current[4])
  began = 1
end
if tonumber(current[4]) > now then return {0} end
local pending = {}
for i = 4, #ARGV do
  if redis.call('HEXISTS', KEYS[1], 'd:' .. ARGV[i]) == 0 then
    pending[#pending + 1] = ARGV[i]
  end
end
if #pending == 0 then return {0} end
redis.call('HSET', KEYS[1], 'lease', fmt(now + tonumber(ARGV[3])))
return {1, current[1], current[3], began, unpack(pending)}
"""

# A delivery attempt finished: record the targets that acknowledged it, release the lease.
# KEYS[1] = `P:{E}:alert:<kind>`; ARGV[1] = the episode, ARGV[2..] = the targets delivered to.
# Returns 1, or 0 when that episode is no longer the current one (nothing is written).
DELIVERED = r"""
if redis.call('HGET', KEYS[1], 'episode') ~= ARGV[1] then return 0 end
local clock = redis.call('TIME')
for i = 2, #ARGV do
  redis.call('HSET', KEYS[1], 'd:' .. ARGV[i], clock[1])
end
redis.call('HSET', KEYS[1], 'lease', '0')
return 1
"""


@dataclass(frozen=True)
class Claim:
    """An episode this process is to deliver, to ``targets``, under the lease it now holds."""

    episode: str
    #: Server time the episode began.
    since: float
    #: Whether it began with this observation.
    began: bool
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Observed:
    """What an observation did: at most one of these is set."""

    claim: Claim | None = None
    #: The episode that ended.
    ended: str | None = None
    #: The experiment is archived or gone.
    gone: bool = False


class AlertEpisodes:
    def __init__(self, client: Client, prefix: str) -> None:
        self._prefix = prefix
        # Alert state is not worth waiting for replicas: a failover at worst sends an alert
        # again.
        self._scripts = ScriptRunner(client, wait_replicas=0, wait_timeout_ms=1000)
        self._observe = client.register_script(OBSERVE)
        self._delivered = client.register_script(DELIVERED)

    async def observe(self, experiment_id: str, kind: str, subject: str | None,
                      new_episode: str, lease_s: float,
                      targets: Sequence[str]) -> Observed:
        """Record whether ``kind``'s condition holds (``subject``; None: it does not)."""
        keys = Keys(self._prefix, experiment_id)
        (result,) = await self._scripts.run(
            [(self._observe, [alert_episode(keys, kind), keys.meta],
              [subject or "", new_episode, repr(lease_s), *targets])], wait=False)
        status = int(result[0])
        if status == -1:
            return Observed(gone=True)
        if status == 2:
            return Observed(ended=str(result[1]))
        if status == 1:
            return Observed(claim=Claim(str(result[1]), float(result[2]), result[3] == 1,
                                        tuple(str(t) for t in result[4:])))
        return Observed()

    async def delivered(self, experiment_id: str, kind: str, episode: str,
                        targets: Sequence[str]) -> bool:
        """Record the targets that acknowledged ``episode`` (none: it failed) and release the
        lease; False when the episode is no longer the current one."""
        keys = Keys(self._prefix, experiment_id)
        (result,) = await self._scripts.run(
            [(self._delivered, [alert_episode(keys, kind)], [episode, *targets])], wait=False)
        return bool(result == 1)
