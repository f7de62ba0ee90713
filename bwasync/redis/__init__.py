"""One account's rate limit shared by many processes, through Redis (``pip install bwasync[redis]``).

::

    from bwasync import MessagingClient
    from bwasync.redis import RedisLimiter

    limiter = RedisLimiter("redis://127.0.0.1:6379/0", account_id=ACCOUNT, rate=200)
    async with MessagingClient(ACCOUNT, username=..., password=..., limiter=limiter) as client:
        ...                                   # every worker built this way shares 200 segments/s
    await limiter.aclose()

Modules: ``_limiter`` (the async shell), ``_scripts`` (the Lua scripts, the only code that
changes shared state), ``_control`` (the pure rate controller), ``_policy`` (lease sizes, the
fallback share, redaction), ``_constants`` (the tunables).
"""

from __future__ import annotations

try:
    import redis.asyncio  # noqa: F401 - fail here, with the fix, rather than deep inside
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without redis
    raise ImportError(
        "bwasync.redis needs the redis package (redis-py); install it with: pip install 'bwasync[redis]'"
    ) from exc

from ._limiter import RedisLimiter, RedisUnavailableError

__all__ = ["RedisLimiter", "RedisUnavailableError"]
