"""Every Redis key the service uses, built in one place.

All keys of one experiment share the hash tag ``{<experiment id>}`` so that in a Redis Cluster
they live in one slot and every Lua script touching them runs on one shard. Experiment ids are
restricted to ``[a-z0-9][a-z0-9_.-]{0,63}``, so they can never contain ``{`` or ``}``.

Per experiment ``E`` (prefix ``P``, default ``bandit``):

========================  ======  ==========================================================
key                       type    contents
========================  ======  ==========================================================
``P:{E}:meta``            hash    ``config`` (JSON), ``version``, ``reward``, ``half_life``,
                                  ``archived``
``P:{E}:stats``           hash    posterior sufficient statistics per arm index ``i``:
                                  ``i:s`` ``i:f`` (bernoulli) or ``i:w`` ``i:m`` ``i:q``
                                  (gaussian), or ``i:x`` (contextual: the regression's sums
                                  as little-endian doubles), ``i:n`` raw count, ``i:t``
                                  last decay time;
                                  ``rev`` bumped on every change
``P:{E}:served``          hash    decisions served per arm index (flushed by each process)
``P:{E}:draws``           hash    the sample-ratio test's sums, per arm index ``i``: ``i:o``
                                  fresh random draws that chose the arm, ``i:e`` the sum of
                                  the arm's propensity over every fresh draw, ``i:v`` the sum
                                  of ``p(1-p)`` (flushed by each process with ``served``)
``P:{E}:segments``        hash    contextual decisions served per segment and arm index:
                                  field ``<feature>=<value>\x1f<arm index>`` (one per
                                  categorical feature of the model; flushed with ``served``)
``P:{E}:units``           hash    sticky unit (``unit``, or ``unit\x1fk=K`` for a slate) ->
                                  ``arm indices|propensity|position propensities``
``P:{E}:audit``           list    configuration changes, oldest first (JSON entries), kept for
                                  the experiment's life
``P:{E}:history``         list    ``time|sample JSON``: allocation and posteriors over time,
                                  one per history interval, the newest ``history_max_samples``
``P:{E}:history:fine``    list    the same, one per ``history_fine_interval_s``, kept for
                                  ``history_fine_window_s`` (absent when that is off)
``P:{E}:dedup:<w>:<n>``  set     reward-event ids seen in the n-th time bucket of width w ms
                                  (a quarter of the dedup window), and ``@<decision>:<arm>``
                                  for each decision rewarded; expires 5 buckets later
``P:{E}:log``             stream  the decision log (``bandit.serving.decision_log``): entries
                                  ``n`` (records) and ``d`` (decision records) or ``r``
                                  (reward records), their lines tab-separated
``P:{E}:log:index``       list    ``<entry id>|<n>`` per log entry, oldest first (trimming
                                  reads this, never the records)
``P:{E}:log:stats``       hash    ``records`` kept, ``trimmed``, ``dropped`` (by process
                                  buffers), the retention ``max_age_ms`` / ``max_records``
``P:{E}:dec:<decision>``  string  pending provisional decision: ``arm|served at``, then
                                  ``c`` once converted; expires after the attribution window
``P:{E}:ack``             string  written before each ``WAIT`` when writes wait for replicas
                                  (``redis_wait_replicas``), so the wait covers every earlier
                                  write of the shard
``P:{E}:notified``        string  set for 100 ms after a change was published on
                                  ``P:changes`` (holds back further messages meanwhile)
``P:experiment-index``    zset    ids of all experiments, score 0, for paged listing in id
                                  order (not slot-local); the set ``P:experiments`` of earlier
                                  versions is merged into it when a process starts
``P:changes``             pubsub  a channel: ids of experiments that changed, published by the
                                  scripts (``bandit.serving.changes``)
``P:dedup-window``        string  the dedup window (seconds) every process must share, set
                                  by the first process (``RedisStore.agree_dedup_window``)
``P:signing-key``         string  the secret that signs decision ids (``bandit.tokens``),
                                  created once by the first process that needs it
``P:{E}:alert:<kind>``    hash    the alert episode under way of one kind (``episode``,
                                  ``subject``, ``since``, ``lease``, ``d:<target>`` per
                                  webhook delivered to); deleted when the episode ends
                                  (``bandit.store.episodes``)
``P:{layers}:layer:<L>``  hash    layer ``L``: ``config`` (JSON: salt, default, ranges,
                                  version) and ``version`` (``bandit.layers``)
``P:{layers}:members:<L>`` set    the experiments layer ``L`` holds
``P:{layers}:audit:<L>``  list    layer ``L``'s changes, oldest first (JSON entries)
``P:{layers}:owners``     hash    experiment id -> the layer that holds it (one at most)
``P:{layers}:index``      zset    every layer id, score 0 (id order)
``P:{layers}:salts``      hash    salt -> the layer that hashes with it (one at most)
``P:{layers}:revision``   string  one more on every layer change (processes whose change
                                  feed is down poll it); a change also publishes ``@layers``
                                  on ``P:changes``
========================  ======  ==========================================================

Every layer key carries the hash tag ``{layers}``: layers are few and rarely written, and one
slot lets ``SAVE_LAYER`` check and write the owners of every experiment atomically.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key builder for one experiment."""

    prefix: str
    experiment: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{{{self.experiment}}}"

    @property
    def prefix_with_tag(self) -> str:
        """``P:{E}:``, from which the Lua scripts build dedup and decision keys."""
        return f"{self._base}:"

    @property
    def meta(self) -> str:
        return f"{self._base}:meta"

    @property
    def stats(self) -> str:
        return f"{self._base}:stats"

    @property
    def served(self) -> str:
        return f"{self._base}:served"

    @property
    def draws(self) -> str:
        return f"{self._base}:draws"

    @property
    def segments(self) -> str:
        return f"{self._base}:segments"

    @property
    def audit(self) -> str:
        return f"{self._base}:audit"

    @property
    def history(self) -> str:
        return f"{self._base}:history"

    @property
    def history_fine(self) -> str:
        return f"{self._base}:history:fine"

    @property
    def units(self) -> str:
        return f"{self._base}:units"

    @property
    def log(self) -> str:
        return f"{self._base}:log"

    @property
    def log_index(self) -> str:
        return f"{self._base}:log:index"

    @property
    def log_stats(self) -> str:
        return f"{self._base}:log:stats"

    def decision(self, decision_id: str) -> str:
        return f"{self._base}:dec:{decision_id}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of the experiment (used when deleting)."""
        return f"{self._base}:*"


def registry(prefix: str) -> str:
    """The sorted set of all experiment ids (score 0: ordered by id)."""
    return f"{prefix}:experiment-index"


def legacy_registry(prefix: str) -> str:
    """The unordered set of all experiment ids that earlier versions kept."""
    return f"{prefix}:experiments"


def changes(prefix: str) -> str:
    """The pub/sub channel on which the scripts name the experiments they changed."""
    return f"{prefix}:changes"


def signing_key(prefix: str) -> str:
    """The shared secret of decision-id signatures."""
    return f"{prefix}:signing-key"


def dedup_window(prefix: str) -> str:
    """The dedup window every process of the deployment uses."""
    return f"{prefix}:dedup-window"


def alert_episode(keys: Keys, kind: str) -> str:
    """The alert episode of one kind of an experiment (``bandit.store.episodes``)."""
    return f"{keys.prefix_with_tag}alert:{kind}"


@dataclass(frozen=True)
class LayerKeys:
    """The keys of one layer. Every layer key carries the hash tag ``{layers}``: layers are
    few and rarely written, and one slot lets a script keep each experiment in one layer."""

    prefix: str
    layer: str

    @property
    def config(self) -> str:
        return f"{self.prefix}:{{layers}}:layer:{self.layer}"

    @property
    def members(self) -> str:
        return f"{self.prefix}:{{layers}}:members:{self.layer}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:{{layers}}:audit:{self.layer}"

    @property
    def owners(self) -> str:
        """Experiment id -> the layer that holds it."""
        return f"{self.prefix}:{{layers}}:owners"

    @property
    def index(self) -> str:
        """Every layer id (score 0: in id order)."""
        return f"{self.prefix}:{{layers}}:index"

    @property
    def salts(self) -> str:
        """Salt -> the layer that hashes with it (one layer per salt)."""
        return f"{self.prefix}:{{layers}}:salts"

    @property
    def revision(self) -> str:
        """The layers' change counter: one more on every layer change."""
        return f"{self.prefix}:{{layers}}:revision"
