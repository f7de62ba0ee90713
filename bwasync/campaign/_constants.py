"""Every tunable of the campaign layer, with the reason for its default."""

from __future__ import annotations

from .._constants import DEFAULT_TIMEOUT

# --- Inputs ----------------------------------------------------------------------------------

#: Bytes of the input file hashed at each end to recognise it on resume. Reading 2 MiB is
#: instant even for a multi-gigabyte file, and together with the exact size it catches any edit
#: that adds, removes or rewrites rows near either end (which is what editing a list does).
FINGERPRINT_BYTES = 1024 * 1024
#: Longest row key accepted. The tag is ``<campaign id>:<key>`` and Bandwidth allows 1024
#: characters; 256 leaves ample room for any campaign id while allowing UUIDs, hashes and
#: compound keys.
MAX_KEY_LENGTH = 256
#: Rows whose keys are checked for duplicates at once by a reader that reports them (a dry
#: run): one SQLite statement per batch instead of one per row; the reader reads that far ahead.
KEY_CHECK_BATCH = 1000

# --- Journal ---------------------------------------------------------------------------------

#: Rows a load-pass batch should hold. One transaction per batch: a few hundred rows make the
#: commit cost negligible (a WAL commit is ~0.1 ms), and the last batch, whose write nothing
#: overlaps (each batch is written while the next one is prepared), stays short.
LOAD_BATCH = 500
#: Rows the load pass prepares between two turns given to the event loop. Preparing is plain
#: Python (~50 µs a row): without turns the previous batch's write would not even start before
#: the next batch is ready, and nothing else on the loop would run for a tenth of a second.
LOAD_YIELD_ROWS = 100
#: Rows the load pass prepares between two turns given to the journal's writer thread while it
#: writes a batch (``Journal.give_turn``): ~1 ms of preparing, so that each of the write's SQLite
#: calls waits about that long for the GIL, not the interpreter's switch interval (5 ms).
LOAD_TURN_ROWS = 25
#: Batches the load pass may have queued for writing while it prepares the next one: the writer
#: goes from one to the next without waiting for the loop, and the loop waits only when it is
#: that far ahead.
LOAD_WRITES_AHEAD = 2
assert LOAD_YIELD_ROWS % LOAD_TURN_ROWS == 0, "the load pass yields to the loop on a turn row"
#: Rows fetched per page by the journal's iterators: bounds memory whatever the campaign size.
PAGE_SIZE = 1000
#: Seconds a recorded result may wait before it is committed when no mark is flowing (during a
#: run, results ride along with the next mark's commit, within a millisecond or so). After a
#: crash, an uncommitted result leaves its row ``in_flight``, to be reconciled: short enough
#: that few rows are affected, long enough to batch thousands of results per commit.
RESULT_FLUSH_INTERVAL = 0.05
#: Seconds between moves of a send pass's recorded end (for the report's throughput) while
#: results are recorded; a flush and the close move it too. Moving it with every group of
#: results was one more SQLite call, and GIL hand-over, per commit; a crash loses at most this
#: much of the pass's measured time.
SENDING_TOUCH_INTERVAL = 1.0
#: Queued items applied in one transaction at most. Bounds a transaction's duration (and so
#: the latency of the marks waiting for it) under a flood.
MAX_TRANSACTION_ITEMS = 5000
#: Milliseconds SQLite waits for a lock held by another connection (an inspecting ``sqlite3``
#: shell, a checkpoint) before failing.
BUSY_TIMEOUT_MS = 5000

# --- Callback receiver -----------------------------------------------------------------------

#: Largest callback body accepted. Bandwidth batches events into one array; 1 MiB holds
#: thousands of them.
DEFAULT_MAX_BODY = 1024 * 1024
#: Seconds the receiver gives the journal to record a POST's events. Bandwidth wants a 2xx
#: within 10 s and retries otherwise, so we answer 503 well before that rather than time out.
CALLBACK_HANDLER_TIMEOUT = 5.0
#: Event identities (message id, recipient, type) remembered to drop duplicates in memory. The
#: journal is idempotent anyway; this only saves a round trip for Bandwidth's retries.
DEDUPE_CAPACITY = 100_000

# --- Runner ----------------------------------------------------------------------------------

#: Results the error-rate guard looks back over. 200 is a few seconds of a busy run: long enough
#: that a handful of bad numbers cannot trip it, short enough to react to an outage at once.
ERROR_RATE_WINDOW = 200
#: Results needed before the guard may trip, so that the first few failures of a run (two bad
#: rows out of three) do not pause it.
ERROR_RATE_MIN_SAMPLE = 50
#: Default ``max_error_rate``: pause when more than half of the recent sends failed. Per-row
#: problems (a bad number, an opted-out handset) stay far below it; an outage, a revoked
#: credential or a suspended sender goes far above it, and pausing then saves the rest of the file
#: from being burnt through as ``failed``.
DEFAULT_MAX_ERROR_RATE = 0.5
#: Default settle window: the request timeout. A request the dead run wrote is answered (or
#: abandoned by its own client) within it, so after it Bandwidth's list shows what it accepted.
DEFAULT_SETTLE = DEFAULT_TIMEOUT
#: Seconds between looks at the journal while waiting for delivery receipts (only when new
#: callbacks were recorded since the last look: a look is one aggregate query).
DELIVERY_POLL_INTERVAL = 0.5
#: Rows reconciled per batch (one page of the journal; the list queries run per batch).
RECONCILE_BATCH = 1000
#: ``retry_ambiguous`` looks ambiguous rows up once more before resending them, one list query
#: per recipient; above this many (an outage's worth) that would take hours at Bandwidth's 3,500
#: queries per 5 minutes, so they are resent without it (as the user asked), with a note.
RECONCILE_AMBIGUOUS_MAX = 2000

# --- Reconciliation --------------------------------------------------------------------------

#: Seconds a list result may appear to precede the row's mark (clocks of this machine and of
#: Bandwidth disagree a little). Small on purpose: a wider window admits more unrelated messages.
CLOCK_MARGIN = 10.0
#: List queries run at once. Bandwidth allows 3,500 list requests per 5 minutes per IP; a few
#: concurrent queries reconcile a full ``concurrency`` of rows in seconds without nearing it.
LIST_CONCURRENCY = 4
