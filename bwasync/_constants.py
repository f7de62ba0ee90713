"""Every tunable of bwasync, in one place, with the reason for its default.

Public defaults are re-exported from :mod:`bwasync`.
"""

from __future__ import annotations

# --- Endpoints -------------------------------------------------------------------------------

#: Bandwidth's production messaging base URL (the spec's ``servers`` entry).
DEFAULT_BASE_URL = "https://messaging.bandwidth.com/api/v2"
#: OAuth2 client-credentials token endpoint.
DEFAULT_TOKEN_URL = "https://api.bandwidth.com/api/v1/oauth2/token"

# --- Bandwidth's documented limits (BANDWIDTH.md) ---------------------------------------------

MAX_TEXT_LENGTH = 2048
MAX_RECIPIENTS = 10
MAX_MEDIA = 10
MAX_MEDIA_URL_LENGTH = 4096
MAX_TAG_LENGTH = 1024
MAX_SENDER_ID_LENGTH = 11

# --- Transport -------------------------------------------------------------------------------

#: Whole-request timeout in seconds. Bandwidth answers a create in well under a second; 30 s
#: leaves room for a congested queue without letting a hung connection hold a slot forever.
DEFAULT_TIMEOUT = 30.0
#: Connect timeout. A connect that has not finished cannot have sent anything, so failing it
#: early is always safe to retry.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds an idle pooled connection is kept. Below the ~60 s idle timeout of the load
#: balancers in front of Bandwidth, so we close first rather than write into a connection the
#: server is closing (which would make a send ambiguous).
DEFAULT_KEEPALIVE_TIMEOUT = 15.0
#: DNS answers cached this long (seconds); one name is resolved for the whole run.
DEFAULT_DNS_TTL = 300

# --- Concurrency and rate --------------------------------------------------------------------

#: Requests in flight at once. At Bandwidth-like latencies (~100 ms) 100 in flight allows
#: ~1,000 messages/s, above most accounts' dequeue rate, while keeping the client's per-request
#: cost near its low-concurrency figure (see PERFORMANCE notes in the README).
DEFAULT_CONCURRENCY = 100
#: Spare workers a ``send_many`` run may start per place while inputs wait out a retry backoff or
#: a Retry-After (they give their place back meanwhile). At 2,000 msg/s with 3% of requests
#: answered 429 and ``Retry-After: 1``, ~60 of 100 places would otherwise sleep; one spare per
#: place covers that with room to spare, and bounds the inputs a run holds at twice its
#: concurrency whatever the server does.
RETRY_SLEEPERS_PER_SLOT = 1
#: Burst allowed by the account limiter, in seconds of rate. One second matches how Bandwidth
#: states limits (segments per second) without letting a backlog flush all at once.
DEFAULT_BURST_SECONDS = 1.0
#: Multiplicative decrease on a 429: the queue is full, so halve (TCP-style AIMD).
RATE_DECREASE_FACTOR = 0.5
#: Additive increase after success, as a fraction of the ceiling regained per second: ~20 s from
#: half rate back to full, slow enough not to refill a queue that just overflowed.
RATE_INCREASE_PER_SECOND = 0.025
#: The adaptive rate never drops below this (segments/s): Bandwidth's smallest account rate.
MIN_RATE = 1.0
#: A Retry-After larger than this (seconds) is capped: we would rather ask again than stall a
#: campaign for the 300 s the list endpoint may announce.
MAX_RETRY_AFTER = 60.0

# --- Retry -----------------------------------------------------------------------------------

#: Total attempts per message, first one included. Four attempts with the backoff below span
#: ~7 s: enough to ride out a load-balancer blip, short enough to surface a real outage.
DEFAULT_MAX_ATTEMPTS = 4
#: First backoff (seconds); doubles per attempt.
INITIAL_RETRY_DELAY = 0.5
#: Backoff ceiling (seconds).
MAX_RETRY_DELAY = 8.0
#: Overall deadline per message across all attempts (seconds). A message that has not gone out
#: within two minutes is better reported than kept waiting.
DEFAULT_DEADLINE = 120.0

# --- OAuth2 ----------------------------------------------------------------------------------

#: Refresh a token this many seconds before it expires, so no request carries a token that
#: expires in flight.
TOKEN_REFRESH_MARGIN = 60.0

# --- Rate limiting (added) -------------------------------------------------------------------

#: 429s arriving within this many seconds of a rate cut (or before a Retry-After pause ends) are
#: one rate-limit episode and cut the rate only once. They answer requests sent before the cut
#: (one round trip, ~100 ms at Bandwidth's latency); a second covers slow round trips and a full
#: one-second burst at the old rate, while a queue that stays full is still cut again each second.
RATE_LIMIT_EPISODE = 1.0
#: Window (seconds) over which the limiter measures the rate it actually admitted; the estimate
#: covers the last one to two windows. An unthrottled limiter starts throttling on its first 429
#: at RATE_DECREASE_FACTOR times this measurement. One second matches how Bandwidth states
#: limits and is long enough to smooth a burst, short enough to reflect the current load.
ACHIEVED_RATE_WINDOW = 1.0
#: Additive increase is applied at most this often (seconds). Each step re-times every waiter,
#: and the rate gained in 100 ms is a fraction of a percent, so finer steps would only cost CPU.
RATE_ADJUST_INTERVAL = 0.1
#: Idle per-sender buckets are swept this often (seconds). A sweep walks every bucket, so it runs
#: rarely; a bucket that has refilled holds no state (a full bucket is a fresh one), so dropping
#: it never changes admission, only memory: a run over a million numbers keeps only the buckets
#: used in the last sweep interval.
SENDER_BUCKET_SWEEP_INTERVAL = 10.0
