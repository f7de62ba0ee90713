"""aioresponses 0.7.9 predates aiohttp 3.14, whose ClientResponse needs ``stream_writer``.

``mocked()`` is ``aioresponses()`` with a response class that supplies it; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse
from aioresponses import aioresponses


class _NoWriter:
    output_size = 0


class _CompatResponse(ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoWriter())
        super().__init__(method, url, **kwargs)


class mocked(aioresponses):
    def add(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _CompatResponse)
        super().add(*args, **kwargs)
