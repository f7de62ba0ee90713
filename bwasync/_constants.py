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
#: The client starts with a probe round of this many requests (or its concurrency, if smaller),
#: answered before any other request leaves (``Gate(first_round=...)`` in bwasync/_pipeline.py).
#: A queue that is already full refuses the whole round, and its 429s set the rate before more
#: requests follow: a round of the full concurrency cost 60 429s against a 40-message queue (the
#: emulator's 2 s of 20 seg/s) where this round costs 10. Small, so that it costs one round trip
#: of a few requests: a round of 1,000 (the concurrency) cost a latency-bound run 30 % of its steady
#: rate, the spread of 1,000 answers. Bandwidth's own queue holds 15 minutes of the account rate
#: (at least 900 messages), so a fresh account never refuses this round.
FIRST_ROUND_SIZE = 50
#: No taker waits on the first round longer than this (seconds): a round is answered within a
#: few round trips at Bandwidth's latency (~100-300 ms), and one hung request must not hold the
#: client back.
FIRST_ROUND_MAX = 1.0
#: Burst allowed by the account limiter, in seconds of rate. One second matches how Bandwidth
#: states limits (segments per second) without letting a backlog flush all at once.
DEFAULT_BURST_SECONDS = 1.0
#: After a cut the account bucket keeps what the old rate put in it, up to this many bursts of the
#: new rate (one burst: exactly full). The carried level pauses sending while a full queue drains
#: (the account rate halved mid-run: 6.7% of answers 429 after the change with it, 12.4% with
#: the bucket merely full); the cap keeps a deep cut (an estimate taken while the client stalled)
#: from pausing for old rate / new rate seconds (a cut from 160/s to 1.6/s paused for 100 s).
CUT_CARRY_BURSTS = 2.0
#: The adaptive rate never drops below this (segments/s): Bandwidth's smallest account rate.
MIN_RATE = 1.0
#: The smallest rate one may configure (segments/s): one segment a day. Below it a limiter
#: would hold the next send for longer than any run lasts, and at the very bottom of the float
#: range (``5e-324``) a segment's interval overflows to infinity and would admit everything.
MIN_CONFIGURED_RATE = 1 / 86_400
#: A Retry-After larger than this (seconds) is capped: we would rather ask again than stall a
#: campaign for the 300 s the list endpoint may announce. A Retry-After delays only the retry of
#: the request that carried it; it does not pause the account (see bwasync/_ratecontrol.py).
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

#: 429s arriving within this many seconds of a rate cut are one rate-limit episode and cut the rate
#: only once: they answer requests sent before the cut (one round trip, ~100-300 ms at Bandwidth's
#: latency). The cut is judged on the episode's second half, which only answers requests sent
#: after it, so the episode must be a few round trips long; one second is, and still lets a queue
#: that stays full be cut again each second.
RATE_LIMIT_EPISODE = 1.0
#: Window (seconds) over which the limiter measures what it admitted and what was accepted; an
#: estimate covers the last one to two windows. One second matches how Bandwidth states limits and
#: is long enough to smooth a burst, short enough to reflect the current load.
ACHIEVED_RATE_WINDOW = 1.0
#: On a 429 the rate is cut to this fraction of the rate the server accepted over the last second.
#: A full queue accepts exactly its dequeue rate, so sending 5 % below it drains the queue (and
#: stops the 429s) while costing at most 5 % of the throughput until the rate regrows.
RATE_DRAIN_FACTOR = 0.95
#: The cut, as a fraction of the rate being sent, when too few answers came back to measure the
#: accepted rate (botocore's adaptive mode and CUBIC use the same beta = 0.7).
RATE_CUT_FLOOR = 0.7
#: With Bandwidth's "Your allowed rate is N messages per minute" in the 429, the rate is cut to this
#: fraction of N: the figure is exact, and 2 % below it drains a full queue slowly while keeping
#: 98 % of the account's throughput.
RATE_HINT_FACTOR = 0.98
#: CUBIC's scale, relative to the last maximum: after a cut the rate is back at the maximum in
#: K = cbrt(depth / scale) seconds (2.2 s after a 5 % cut, 3.9 s after 30 %), stays near it, then
#: grows beyond it: +4 % two seconds later, +14 % after three, x2 after about 5.8 s. Slow near the
#: old maximum, so that a queue that drained a little below it refills without overshooting much
#: (a faster probe doubled the 429s in the simulated queue model); fast beyond it, so that a
#: raised limit is found within seconds.
RATE_CUBIC_SCALE = 0.005
#: Once regrown to the last maximum, the rate stays flat at it for this many seconds before CUBIC's
#: convex probe beyond it (rule 8 in bwasync/_ratecontrol.py): that maximum is what a full queue
#: accepted, and each probe above it refills the queue and costs a round of 429s. Measured against
#: the emulator's queue (200 seg/s, 2 s of queue, no rate hint): two probes in 16 s became one, and
#: the 429s after the first second halved. A raised limit is still found, 4 s later.
RATE_PLATEAU = 4.0
#: After a cut to Bandwidth's stated rate ("Your allowed rate is N messages per minute"), the rate
#: stays flat at N this long (seconds) before probing beyond it. N is the account's rate, not an
#: estimate: each probe above it refills the queue for one 429 and a cut (about one every 6 s with
#: ``RATE_PLATEAU``, a fifth of the 3 % budget of a 20-s run at 20 seg/s), and an account's rate is
#: raised rarely; a raised rate is still found within a minute.
RATE_HINT_PLATEAU = 30.0
#: The cut is judged on the answers that arrive from this fraction of the episode on: earlier ones
#: mostly answer requests sent before the cut (a round trip, ~100-300 ms at Bandwidth's latency).
#: A stale 429 counted as "after" can only make the judgment cut again, to the accepted rate of a
#: queue that was full, which is the account's rate anyway.
RATE_JUDGE_FROM = 0.25
#: A cut paid off when the 429 share in the second half of its episode is at most this fraction of
#: the share that caused it.
RATE_PAYOFF_SHARE = 0.5
#: A cut that did not lower the 429 share, although the client sent no faster than the server had
#: been accepting, shows 429s unrelated to the rate; that is believed only up to this share. More
#: 429s than this are treated as a full queue whatever else is seen.
RATE_NOISE_MAX_SHARE = 0.1
#: 429s while the share of the last one to two seconds is within this multiple of the learned
#: background share do not cut. Twice leaves room for the share's sampling noise.
RATE_NOISE_MARGIN = 2.0
#: The learned background share halves every this many seconds, so a limiter that once saw a flaky
#: load balancer does not tolerate a full queue's 429s for the rest of a long run.
RATE_NOISE_HALF_LIFE = 30.0
#: The odds below which a count of 429s is taken for more than chance: a cut is judged to have
#: paid off only if, had the share not changed, so few 429s would come less often than this; and
#: after a share of rate-independent 429s was learned, a sample cuts only if that share would put
#: as many 429s in it less often than this. One in a thousand: a cut is judged afresh at every
#: answer (one in a hundred still let a stray 429's cut be taken for paid off in simulation), and a
#: wrong "paid off" leaves a cut in force that the next stray 429 deepens.
RATE_EVIDENCE_ALPHA = 0.001
#: A cut that nothing shows was made against a full queue (no flood of 429s) goes no deeper than
#: ``RATE_CUT_FLOOR`` of the most the server accepted in one second over this many seconds (the
#: bandwidth filter of BBR, which keeps its maximum over ten round trips). The second before a 429
#: may read the client's own demand, not the account's: a run's tail of retries in backoff, a
#: service's quiet spell. Cut to that, the next burst of demand is held to it.
RATE_PEAK_WINDOW = 10.0
#: Rule 11: while nothing throttles and the client sends fewer than ``RATE_EARLY_SAMPLE`` segments a
#: second (a quiet spell), 429s cut only once this many came within ``RATE_PEAK_WINDOW`` seconds. At
#: a few messages a second one or two 429s are no evidence of a full queue (rule 4 wants
#: ``RATE_MIN_EVIDENCE`` of them too), and a cut to such a second holds the next burst there; a
#: queue that is really full at that rate answers 429 again and again.
RATE_QUIET_EVIDENCE = 3
#: An accepted rate measured from fewer accepted answers than this is not trusted for a cut.
RATE_MIN_SAMPLE = 5
#: While a cut's episode is still running, this many accepted answers and this many 429s in its second
#: half (a quarter-episode long at least) show a queue still full: the rate is cut again at once,
#: rather than at the episode's end. Twenty answers over a quarter of a second measure the accepted
#: rate well enough to cut to (five, at 20 seg/s, read 17.8 for 20 and held the run there). Also:
#: in the first second of a run, 429s cut only once this many have come (a full queue sends a
#: flood within milliseconds; stray 429s do not) and are more than ``RATE_NOISE_MAX_SHARE`` of the
#: answers.
RATE_EARLY_SAMPLE = 20
#: ... or, sooner, once ``RATE_FLOOD_SAMPLE`` 429s have come and they are more than
#: ``RATE_FLOOD_SHARE`` of the answers since the first of them: 429s mostly in a row. A full queue
#: answers every request sent after it filled 429 (the client's first round against a queue smaller
#: than the round: 8-10 in a row), while 3 % of rate-independent 429s put five among nine answers
#: about once in 20,000 tries.
RATE_FLOOD_SAMPLE = 5
#: Such a first cut (a flood in the first second) goes to this fraction of the accepted rate of
#: that second, which is mostly the queue's fill. The queue is full and holds at least what it
#: accepted: sending below its rate costs nothing until it empties, sending above costs a 429 per
#: message, so the first cut errs low and rule 9 measures the rate at the next overflow.
RATE_FLOOD_CUT = 0.5
RATE_FLOOD_SHARE = 0.5
#: A cut is judged "paid off" on an absence of 429s only once, had nothing changed, at least this many
#: 429s would have been expected among the answers counted, and judged "not paid off" only on at
#: least this many 429s; at low rates that takes longer.
RATE_MIN_EVIDENCE = 3.0
#: ... but never later than this many seconds after the cut (rates of a few messages per second);
#: a cut that nothing shows was needed by then is undone.
RATE_JUDGE_MAX = 5.0
#: Rule 9 (bwasync/_ratecontrol.py): the account's rate is measured as what the queue accepted
#: between two 429s (it was full at both). 429s closer together than this (seconds) are one
#: overflow; the first 429 after a longer quiet spell starts a new span from the last one before.
RATE_FULL_GAP = 1.0
#: ... and a span never reaches back further than this (seconds): the account's rate may have
#: changed since (Bandwidth raises limits rarely; the emulator's halved rate within seconds).
RATE_FULL_SPAN_MAX = 30.0
#: An overflow shows a full queue (and rule 9 believes the spans that end or start in it) once it
#: holds ``RATE_FLOOD_SAMPLE`` 429s and they are more than this share of its answers. A full queue
#: refuses whatever is sent above its rate (a cut 40 % above it: 29 %, the first round's flood:
#: nearly all); 3 % of rate-independent 429s put five among twenty answers about once in 2,500
#: overflows.
RATE_FULL_SHARE = 0.25
#: A span shorter than this (seconds), or with fewer accepted answers than ``RATE_DRAIN_SAMPLE``,
#: measures nothing: the count is exact to one message, so four answers can read 25 % off.
RATE_DRAIN_MIN_SPAN = 0.2
RATE_DRAIN_SAMPLE = 4
#: A measured drain replaces the cut in force only when it is this fraction below it: smaller
#: steps would re-time every waiter for nothing.
RATE_RECUT_MARGIN = 0.02
#: A drain measured over at least this many accepted answers is the account's rate to within 1 %:
#: the rate then holds at it for ``RATE_HINT_PLATEAU``, like a rate the server stated.
RATE_PRECISE_SAMPLE = 100
#: A limiter without a configured rate stops throttling once its regrown rate is this many times
#: both what is actually being sent and the last measured maximum: the limit no longer binds
#: (botocore caps its rate at twice the measured send rate for the same reason). The maximum is
#: needed too: a client whose requests sleep in retry backoff sends little for a while.
RATE_UNTHROTTLE_FACTOR = 2.0
#: The regrowing rate is stepped at most this often (seconds). Each step re-times every waiter,
#: and the rate gained in 100 ms is a fraction of a percent, so finer steps would only cost CPU.
RATE_ADJUST_INTERVAL = 0.1
#: Idle per-sender buckets are swept this often (seconds). A sweep walks every bucket, so it runs
#: rarely; a bucket that has refilled holds no state (a full bucket is a fresh one), so dropping
#: it never changes admission, only memory: a run over a million numbers keeps only the buckets
#: used in the last sweep interval.
SENDER_BUCKET_SWEEP_INTERVAL = 10.0

#: JSON nested deeper than this is refused before decoding (a 400, a ValidationError). Bandwidth's
#: bodies nest four levels at most (an array of events, the event, its message, its ``to`` list);
#: the bound keeps a hostile body's fate independent of the interpreter's recursion limit.
MAX_JSON_DEPTH = 32
