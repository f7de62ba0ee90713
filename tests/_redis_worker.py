"""One sending worker for the shared-limiter proof test (run as ``python -m tests._redis_worker``).

An unthrottled client whose only limit is a :class:`RedisLimiter`. Once imported and set up it
prints ``ready`` and reads one line ``START STOP`` from stdin (times on the monotonic clock, which
every process of the machine shares); it then sends from START until STOP with 16 in flight, and
prints ``accepted N`` after every 10 accepted messages so the test can act on progress.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator

from bwasync import MessagingClient
from bwasync.redis import RedisLimiter

APP = "93de2206-9669-4e07-948d-329f4b722ee2"


async def run(args: argparse.Namespace) -> None:
    limiter = RedisLimiter(args.redis, account_id=args.account, rate=args.rate, burst=args.burst)

    async def messages() -> AsyncIterator[dict[str, object]]:
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            yield {
                "to": ["+15552223333"],
                "from": "+15553332222",
                "text": "hi",
                "applicationId": APP,
                "tag": f"{args.name}-{i}",
            }

    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    start_at, stop_at = (float(x) for x in line.split())
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    accepted = 0
    async with MessagingClient(args.account, username="u", password="p", base_url=args.url, limiter=limiter) as client:
        async with client.send_many(messages(), concurrency=16) as results:
            async for result in results:
                if result.ok:
                    accepted += 1
                    if accepted % 10 == 0:
                        print(f"accepted {accepted}", flush=True)
    await limiter.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("redis", "url", "account", "name"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("rate", "burst"):
        parser.add_argument(f"--{name}", type=float, required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
