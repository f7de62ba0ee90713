"""Every knob of the emulator, in one mutable dataclass.

Each field carries its command-line help (and how to parse it) in its ``metadata``, so the
``python -m bwasync.emulator`` parser is generated from this class and can never miss a knob.

The handlers read the config on every request, so a test may flip a knob mid-run::

    async with Emulator(username="u", password="p") as emu:
        emu.config.p_500 = 1.0      # from now on every create answers 500
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_FAILURE_CODES", "EmulatorConfig", "knob_fields"]

#: Carrier errors a failed delivery reports when none is configured: invalid destination,
#: carrier rejected, carrier spam filter, carrier service unavailable (one 5xxx a client may retry).
DEFAULT_FAILURE_CODES: tuple[int, ...] = (4720, 4750, 4770, 5600)
#: Carriers named in callbacks and list results, picked per recipient number (deterministically).
DEFAULT_CARRIERS: tuple[str, ...] = ("AT&T", "T-Mobile", "Verizon")


# --- argparse value parsers (kept here so the parser and the knobs cannot drift apart) --------


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() in ("", "none", "off") else parse(text)

    parse_optional.__name__ = f"optional {parse.__name__}"
    return parse_optional


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _rate_window(text: str) -> tuple[int, float]:
    """``N/SECONDS``: N requests per window of SECONDS."""
    count, _, window = text.partition("/")
    return int(count), float(window or "1")


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value} is not a probability in [0, 1]")
    return value


_probability.__name__ = "probability"
_rate_window.__name__ = "N/SECONDS"
_int_list.__name__ = "comma-separated integers"
_str_list.__name__ = "comma-separated list"


def _knob(default: Any, help: str, parse: Callable[[str], Any] | None = None, metavar: str | None = None) -> Any:
    metadata = {"help": help, "parse": parse, "metavar": metavar}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable knob defaults are not allowed; use a tuple")
    return field(default=default, metadata=metadata)


def _chance(default: float, help: str) -> Any:
    """A probability knob: parsed and bounded to [0, 1] by :func:`_probability`."""
    return _knob(default, help, _probability, "P")


@dataclass(slots=True, kw_only=True)
class EmulatorConfig:
    """The emulator's knobs. Mutable: handlers read it on every request.

    Probabilities are per create request (``p_*``) or per recipient (``p_delivered``), drawn
    from ``random.Random`` streams seeded from ``seed``, so a run is reproducible.
    """

    # --- credentials and account ----------------------------------------------------------
    username: str | None = _knob(
        None, "HTTP Basic username (API token). Unset: any Basic credentials are accepted.", str, "USER"
    )
    password: str | None = _knob(None, "HTTP Basic password (API secret).", str, "PASSWORD")
    account_id: str | None = _knob(
        None, "The only account id accepted in paths (others get 403). Unset: any account.", str, "ID"
    )
    client_id: str | None = _knob(
        None, "OAuth2 client id for the token endpoint. Unset: the Basic username.", str, "ID"
    )
    client_secret: str | None = _knob(
        None, "OAuth2 client secret for the token endpoint. Unset: the Basic password.", str, "SECRET"
    )
    token_ttl: float = _knob(3600.0, "Seconds an issued bearer token stays valid (expires_in).", float, "SECONDS")
    allowed_senders: Collection[str] | None = _knob(
        None, "Only these 'from' numbers/sender IDs may send (others get 403). Unset: any.", _str_list, "FROM,..."
    )

    # --- the account's message queue (Bandwidth's throughput model) -----------------------
    dequeue_rate: float | None = _knob(
        None,
        "Account dequeue rate in segments/s; the queue holds queue_seconds of it and a create that "
        "would overflow it gets 429. Unset: unlimited.",
        _optional(float),
        "SEGMENTS_PER_S",
    )
    queue_seconds: float = _knob(
        900.0, "Queue capacity in seconds of the dequeue rate (Bandwidth: 15 min).", float, "SECONDS"
    )
    retry_after_on_429: int | None = _knob(
        None, "Add this Retry-After (s) to the queue-full 429 (Bandwidth sends none).", _optional(int), "SECONDS"
    )

    # --- list and media endpoints -----------------------------------------------------------
    list_rate_limit: tuple[int, float] | None = _knob(
        None,
        "List-messages rate limit as N/SECONDS per source IP (Bandwidth: 3500/300); over it: 429 with Retry-After.",
        _optional(_rate_window),
        "N/SECONDS",
    )
    media_page_size: int = _knob(1000, "Media files per page of the media list (Continuation-Token pages).", int, "N")
    carrier_names: Sequence[str] = _knob(
        DEFAULT_CARRIERS, "Carrier names reported per recipient in callbacks and list results.", _str_list, "NAME,..."
    )
    campaign_id: str | None = _knob(
        None,
        "The account's 10DLC campaign: local numbers then send as LOCAL_A2P and listed messages carry this "
        "campaignId. Unset: P2P, no campaign.",
        str,
        "ID",
    )
    campaign_class: str = _knob("T", "campaignClass listed with campaign_id (the spec's example: T).", str, "CLASS")
    location: str | None = _knob(
        "emulator", "The location (sub-account site) id listed for every message's number.", _optional(str), "ID"
    )

    # --- latency and faults (per create request) ----------------------------------------------
    latency: float = _knob(0.0, "Seconds to wait before answering a create.", float, "SECONDS")
    jitter: float = _knob(0.0, "Extra uniform random wait in [0, jitter) seconds per create.", float, "SECONDS")
    p_500: float = _chance(0.0, "Probability a create answers 500 (JSON body); not accepted.")
    p_503: float = _chance(0.0, "Probability a create answers 503 (JSON body); not accepted.")
    p_502_html: float = _chance(0.0, "Probability a create answers 502 with a load balancer's HTML page; not accepted.")
    p_drop_before: float = _chance(
        0.0, "Probability the connection is dropped with no response and the message NOT accepted."
    )
    p_drop_after: float = _chance(
        0.0, "Probability the message IS accepted, then the connection dropped with no response."
    )
    p_slow: float = _chance(0.0, "Probability the message is accepted but the answer delayed by slow_seconds.")
    slow_seconds: float = _knob(30.0, "Delay of a 'slow' answer (longer than the client's timeout).", float, "SECONDS")
    p_429: float = _chance(
        0.0,
        "Probability a create's first attempt answers 429 whatever the rate (a flaky load balancer, another "
        "limit in front of the queue); a retry of the same body is never picked. Not accepted.",
    )
    p_429_retry_after: int | None = _knob(
        1, "Retry-After (s) sent with those 429s (none: no header).", _optional(int), "SECONDS"
    )
    seed: int | None = _knob(
        None,
        "Seed for faults, jitter, outcomes, ids; read at creation; 'none' for a different run each time.",
        _optional(int),
        "N",
    )

    # --- ground truth -------------------------------------------------------------------------
    record: bool = _knob(
        True, "Keep every accepted message (emu.accepted, list endpoint). Off: counters only, flat memory."
    )

    # --- status callbacks ---------------------------------------------------------------------
    callback_url: str | None = _knob(None, "Where status callbacks are POSTed. Unset: none are sent.", str, "URL")
    callback_username: str | None = _knob(None, "Basic auth username sent with callbacks.", str, "USER")
    callback_password: str | None = _knob(None, "Basic auth password sent with callbacks.", str, "PASSWORD")
    p_delivered: float = _chance(1.0, "Probability a recipient gets message-delivered; otherwise message-failed.")
    failure_codes: Sequence[int] = _knob(
        DEFAULT_FAILURE_CODES, "Error codes a failed delivery draws from.", _int_list, "CODE,..."
    )
    callback_delay: float = _knob(
        0.0, "Seconds between a message's lifecycle events (sending, sent, delivered).", float, "SECONDS"
    )
    p_duplicate_callback: float = _chance(0.0, "Probability an event is delivered twice (Bandwidth is at-least-once).")
    p_stop_reply: float = _chance(
        0.0,
        "Probability a recipient replies STOP once its message is delivered: a message-received "
        "callback from that number to the callback URL.",
    )
    callback_max_attempts: int = _knob(
        5, "Delivery attempts per event on non-2xx or connection error before giving up.", int, "N"
    )
    callback_backoff: float = _knob(
        1.0, "First redelivery wait in seconds; doubles per attempt up to callback_backoff_max.", float, "SECONDS"
    )
    callback_backoff_max: float = _knob(60.0, "Ceiling of the redelivery wait.", float, "SECONDS")
    callback_timeout: float = _knob(10.0, "Seconds the receiver has to answer (Bandwidth: 10).", float, "SECONDS")
    callback_concurrency: int = _knob(100, "Callback POSTs in flight at once (read at start).", int, "N")

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` on an impossible setting (called on construction and start)."""
        faults = (self.p_500, self.p_503, self.p_502_html, self.p_drop_before, self.p_drop_after, self.p_slow)
        for name in ("p_500", "p_503", "p_502_html", "p_drop_before", "p_drop_after", "p_slow"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is not a probability in [0, 1]")
        # One draw decides the fault of a request, so the fault probabilities share [0, 1].
        if sum(faults) > 1.0 + 1e-9:
            raise ValueError(f"the fault probabilities add up to {sum(faults)} > 1")
        for name in ("p_delivered", "p_duplicate_callback", "p_stop_reply"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is not a probability in [0, 1]")
        if not 0.0 <= self.p_429 <= 1.0:
            raise ValueError(f"p_429={self.p_429} is not a probability in [0, 1]")
        if self.dequeue_rate is not None and self.dequeue_rate <= 0:
            raise ValueError("dequeue_rate must be positive (or None for unlimited)")
        if self.queue_seconds <= 0:
            raise ValueError("queue_seconds must be positive")
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        if self.media_page_size < 1:
            raise ValueError("media_page_size must be at least 1")
        if self.callback_max_attempts < 1:
            raise ValueError("callback_max_attempts must be at least 1")
        if self.callback_concurrency < 1:
            raise ValueError("callback_concurrency must be at least 1")
        if not self.failure_codes:
            raise ValueError("failure_codes must name at least one code")
        if self.list_rate_limit is not None and (self.list_rate_limit[0] < 1 or self.list_rate_limit[1] <= 0):
            raise ValueError("list_rate_limit must be (requests >= 1, window seconds > 0)")
        if min(self.latency, self.jitter, self.slow_seconds, self.callback_delay) < 0:
            raise ValueError("latency, jitter, slow_seconds and callback_delay must not be negative")


def knob_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The config's fields, in declaration order (the CLI builds one flag per field)."""
    return dataclasses.fields(EmulatorConfig)
