"""Compliance: quiet hours in the recipient's time zone, STOP/START replies, impossible numbers.

US texting rules (the TCPA and state laws) limit marketing texts to local daytime hours and
require honouring opt-out replies; carriers block senders that ignore them. This package has
the pieces, each usable on its own (nothing here is legal advice: the README's "Compliance"
section states the exact rules applied and their limits):

* :mod:`._quiet` — :class:`QuietHours` (``QuietHours.parse("21:00-08:00")``): may a message go
  now in all of its recipients' zones, and if not, when (:class:`QuietCheck`); pure.
* :mod:`._numbers` — :func:`check_number` (can this E.164 number exist, and why not:
  :class:`NumberCheck`) and :func:`zones_for_number`; libphonenumber's data.
* :mod:`._keywords` — :func:`classify_reply`: is a reply an opt-out (STOP...) or a
  re-subscribe (START...) keyword (:class:`ReplyKind`); pure.
* :mod:`._optout` — :class:`OptOutStore`, :class:`MemoryOptOutStore` and
  :class:`FileOptOutStore` (the campaign's ``--opt-out`` file, kept durably).
* :mod:`._inbound` — :func:`make_inbound_handler` / :class:`InboundHandler`: Bandwidth's
  inbound message callbacks applied to a store, for your own aiohttp app;
  :class:`ReplyProcessor` applies already-decoded events (no HTTP).

:func:`check_number`, :func:`zones_for_number` and :meth:`QuietHours.check_numbers` need the
``compliance`` extra (``pip install 'bwasync[compliance]'``, which adds ``phonenumbers``);
without it they raise :class:`~bwasync.ConfigurationError` saying so. The rest needs nothing more.
"""

from ._constants import INBOUND_DEDUPE_CAPACITY, INBOUND_HANDLER_TIMEOUT, INBOUND_MAX_BODY, QUIET_SEARCH_HORIZON
from ._inbound import (
    MESSAGE_RECEIVED,
    InboundHandler,
    InboundReply,
    InboundStats,
    ReplyOutcome,
    ReplyProcessor,
    make_inbound_handler,
)
from ._keywords import OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS, ReplyKind, classify_reply
from ._numbers import NumberCheck, check_number, zones_for_number
from ._optout import FileOptOutStore, MemoryOptOutStore, OptOutStore
from ._quiet import QuietCheck, QuietHours

__all__ = [
    "INBOUND_DEDUPE_CAPACITY",
    "INBOUND_HANDLER_TIMEOUT",
    "INBOUND_MAX_BODY",
    "MESSAGE_RECEIVED",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "QUIET_SEARCH_HORIZON",
    "FileOptOutStore",
    "InboundHandler",
    "InboundReply",
    "InboundStats",
    "MemoryOptOutStore",
    "NumberCheck",
    "OptOutStore",
    "QuietCheck",
    "QuietHours",
    "ReplyKind",
    "ReplyOutcome",
    "ReplyProcessor",
    "check_number",
    "classify_reply",
    "make_inbound_handler",
    "zones_for_number",
]
