"""The ``redis_server`` fixture: a real redis-server per test (``benchmarks._redis.RedisProcess``).

A free loopback port, a temp dir, no persistence (``start_redis(..., aof=True)``: AOF with
``appendfsync always``, what the README asks of a Redis holding shared campaigns);
``server.stop()`` and ``server.start()`` take it down and bring it back on the same port (an
outage mid-run). A missing ``redis-server`` fails
the test with the command that installs it: these tests are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks._redis import RedisProcess, RedisUnavailable


def start_redis(directory: Path, *, password: str | None = None, aof: bool = False) -> RedisProcess:
    try:
        server = RedisProcess(directory, password=password, aof=aof)
        server.start()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    return server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.stop()
