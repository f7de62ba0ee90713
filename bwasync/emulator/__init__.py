"""An in-memory emulator of Bandwidth's Messaging V2 API, served by aiohttp on loopback.

For tests, demos and benchmarks: faithful status codes and bodies, Bandwidth's queue model
(429 when the account queue is full), the list and media endpoints, OAuth2 tokens, status
callbacks, and injectable latency and faults, all reproducible from a seed::

    from bwasync.emulator import Emulator

    async with Emulator(username="u", password="p", dequeue_rate=50, p_drop_after=0.01) as emu:
        ...                               # point a client at emu.url
        emu.accepted                      # ground truth: every accepted message
        emu.acceptance_counts()["tag-1"]  # 2 would mean a duplicate send
        emu.stats                         # requests, statuses, faults, callbacks, tokens

Standalone: ``python -m bwasync.emulator --port 8080 --username u --password p [knobs]``.

Modules: ``_config`` (the knobs), ``_server`` (aiohttp app and handlers), ``_state`` (records,
counters, queue model, tokens), ``_lifecycle`` (status timeline and callback bodies),
``_listing`` (list-messages items, filters and paging), ``_countries`` (calling code ->
country), ``_callbacks`` (webhook delivery),
``_bodies`` (error bodies), ``_cli`` (the command line).
"""

from ._cli import build_parser, config_from_args, main, serve
from ._config import DEFAULT_FAILURE_CODES, EmulatorConfig
from ._server import Emulator, StoredMedia
from ._state import AcceptedMessage, EmulatorStats

__all__ = [
    "DEFAULT_FAILURE_CODES",
    "AcceptedMessage",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "StoredMedia",
    "build_parser",
    "config_from_args",
    "main",
    "serve",
]
