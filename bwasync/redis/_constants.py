"""Tunables of the shared (Redis) rate limiter, each with the reason for its default."""

from __future__ import annotations

#: Default key prefix. Every limiter with the same namespace and account shares one budget.
DEFAULT_NAMESPACE = "bwasync"

#: A lease covers about this many seconds of this worker's recent demand. Leasing turns one
#: round trip per message into one per lease: at 100 ms, a worker sending 1,000 segments/s pays
#: a round trip per ~100 segments, while the capacity a worker can hold unspent stays a tenth
#: of a second of its own traffic.
LEASE_SECONDS = 0.1
#: Upper bound on one lease (segments), whatever the demand: a worker never takes more than this
#: from the shared bucket at once, so a burst of demand in one worker cannot drain the bucket
#: ahead of the others by more than this.
MAX_LEASE = 500.0
#: A leased segment must be spent within this many seconds of its grant, else it is dropped
#: locally (and given back with the next lease). A segment is counted in the shared bucket when
#: it is leased, so one spent late shifts traffic later by at most this: the overshoot of any
#: 1-s window is bounded by rate × LEASE_TTL beyond the bucket's own rate + burst bound.
LEASE_TTL = 0.25
#: Window (seconds) over which a worker measures its own demand to size its next lease.
DEMAND_WINDOW = 1.0

#: A limiter counts as live for this many seconds after its last contact with Redis. Long enough
#: that a worker sending steadily never drops out between leases; short enough that a dead
#: worker stops counting (for the fallback share) within seconds.
LIVE_TTL = 3.0

#: A worker replays what it saw (sends, answers) on the shared controller at most this often
#: (seconds); a 429 is replayed at once. A sync is two round trips (read, compare-and-set). The
#: controller measures the accepted rate over one-second windows and regrows in 0.1-s steps, so
#: a quarter second of delay costs little, while each worker adds at most 8 round trips/s.
SHARED_SYNC_INTERVAL = 0.25
#: Compare-and-set attempts for one sync before giving its events up (other workers' syncs won
#: every time: the controller then has their, similar, picture of the account).
CAS_ATTEMPTS = 5

#: While Redis is unreachable, try it again at most this often (seconds).
RECONNECT_INTERVAL = 1.0
#: Socket and connect timeouts (seconds) for a client the limiter builds from a URL: a Redis
#: that hangs must not hold every send for the default (no timeout); the fallback takes over.
REDIS_TIMEOUT = 1.0

#: Slack (seconds) when comparing times in the scripts (float rounding of sums of intervals).
EPSILON = 1e-6

# --- Shared campaigns -----------------------------------------------------------------------

#: Seconds a row's queue entry must sit idle before another worker takes it over (XAUTOCLAIM).
#: A live worker refreshes its entries every third of this, so only a dead (or frozen) worker's
#: go idle; a dead worker's rows wait this long. Long enough that a worker's event loop stalling
#: (a GC pause, a swapped-out machine) for a good part of it is not taken for death.
DEFAULT_CLAIM_IDLE = 30.0
#: Longest an idle worker waits on the queue (seconds) before looking again for entries gone
#: idle and for the campaign's completion: one blocking read, woken at once by a new row.
CLAIM_POLL = 0.2
#: How long a worker keeps trying to reach Redis again after it failed under it (seconds),
#: before it gives up (exit non-zero; what it could not record is reconciled by the next run).
REDIS_OUTAGE = 60.0
#: Between two attempts to reach Redis during an outage (seconds).
REDIS_RETRY_INTERVAL = 0.2
