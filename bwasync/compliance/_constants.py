"""Every tunable of the compliance layer, with the reason for its default."""

from __future__ import annotations

from datetime import timedelta

#: How far ahead quiet hours look for an instant allowed in every zone at once. The window
#: repeats daily and a daylight-saving change moves it by an hour at most, so if no common
#: instant comes within two days, none ever will (zones too far apart for the window).
QUIET_SEARCH_HORIZON = timedelta(days=2)
#: (zones, minute) answers remembered. A campaign's recipients share a few dozen zone sets, and
#: every row checked within the same minute asks the same question: a thousand answers serve a
#: whole run, at a few hundred bytes each.
QUIET_CACHE_SIZE = 1024

#: Numbers whose check and zones are remembered. libphonenumber takes ~0.1 ms per question
#: (its regular expressions); a campaign asks both of a row's recipients in turn, and a group's
#: or a held row's again, so a few thousand cover the reuse while staying well under a MiB.
NUMBER_CACHE_SIZE = 4096
#: +1 verdicts remembered by the number's first digits (see ``_prefixes``): one per NPA-NXX-X
#: block, exact for every number of the block. A list's numbers cluster in a few thousand
#: blocks; past this many the memory is cleared and refilled (~150 bytes an entry: ~2.5 MB).
NUMBER_PREFIX_CACHE_SIZE = 16_384
#: libphonenumber's +1 validity patterns as last analysed (SHA-256 of ``nanp_patterns``) and how
#: many leading national digits decide them (``nanp_decisive_digits``: 7 for phonenumbers 9.0).
#: Other metadata (another phonenumbers release) is analysed once per process instead (~1 s).
NANP_ANALYSED: tuple[str, int] = ("95d76723ebce18e195b30e9a7e3000777dde0478cfc7c47f272119517baf6ff9", 7)

#: Largest inbound-callback body accepted. Bandwidth posts one inbound message per request
#: (≤ 2048 characters of text and a few media URLs, a few KiB as JSON); 256 KiB leaves room for
#: a batch while refusing a flood before it is read.
INBOUND_MAX_BODY = 256 * 1024
#: Seconds the handler gives the opt-out store (and ``on_reply``) for one POST. Bandwidth wants
#: a 2xx within 10 s and retries otherwise, so we answer 503 well before that.
INBOUND_HANDLER_TIMEOUT = 5.0
#: Inbound message ids remembered to drop Bandwidth's redeliveries. Replies are rare next to
#: sends: 100,000 ids is days of replies of a large campaign, in a few MiB.
INBOUND_DEDUPE_CAPACITY = 100_000
