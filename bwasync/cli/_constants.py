"""Every default of the command-line interface, in one place, with the reason for it."""

from __future__ import annotations

# --- The identity an emulator run uses (``--emulator``, ``bwasync emulator``, ``bwasync demo``) --
# The values of Bandwidth's own documentation examples, so the output reads like the docs.

#: Account id the emulator accepts when none is given.
EMULATOR_ACCOUNT_ID = "9900000"
#: Basic-auth username and password the in-process emulator expects when none are given.
EMULATOR_USERNAME = "emulator"
EMULATOR_PASSWORD = "emulator-secret"
#: Application id used when none is given (the one in Bandwidth's "send a message" example).
EMULATOR_APPLICATION_ID = "93de2206-9669-4e07-948d-329f4b722ee2"
#: Sending number used when none is given (Bandwidth's docs: from +12345678901).
EMULATOR_NUMBER = "+12345678901"

# --- Output ------------------------------------------------------------------------------------

#: Width of rich output written to a pipe or file (no terminal to measure) when ``COLUMNS`` is
#: unset. Rich's own 80 folds the demo's tables (29-character message ids); logs and CI
#: consoles are wider than that.
PIPE_WIDTH = 120
#: Below this many columns the callback table drops the ``message-`` prefix of types and moves
#: error descriptions to a legend, to fit an 80-column terminal without cutting ids.
WIDE_TABLE = 100

# --- ``bwasync emulator`` ----------------------------------------------------------------------

#: Loopback only by default: the emulator has no TLS and accepts made-up credentials.
EMULATOR_HOST = "127.0.0.1"
#: Port of the standalone emulator; 0 picks a free one (the URL line says which).
EMULATOR_PORT = 3000

# --- ``bwasync demo examples`` -----------------------------------------------------------------

#: Answer latency of the demo's emulator: ``latency`` plus up to ``jitter`` seconds, so creates
#: take 50-150 ms like Bandwidth's production API does from a nearby data centre.
DEMO_LATENCY = 0.05
DEMO_JITTER = 0.10
#: Share of recipients whose delivery succeeds; the rest get a ``message-failed`` callback with
#: a carrier error code, so the demo shows both outcomes.
DEMO_P_DELIVERED = 0.8
#: Seconds between a message's lifecycle events (sending -> sent -> delivered). Long enough to
#: see the order in which they arrive, short enough for the whole demo to take a second or two.
DEMO_CALLBACK_DELAY = 0.2
#: Seed of the demo's emulator, chosen so that a default run shows at least one failed delivery
#: (any other value, or ``--seed none``, gives another draw).
DEMO_SEED = 4
#: Seconds to wait for every expected status callback before reporting the missing ones.
DEMO_CALLBACK_TIMEOUT = 15.0
