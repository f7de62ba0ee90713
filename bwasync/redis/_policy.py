"""Pure policy of the shared limiter: lease sizes, the fallback share, redacted locations."""

from __future__ import annotations

import math
from urllib.parse import urlsplit, urlunsplit

from ._constants import LEASE_SECONDS, MAX_LEASE

__all__ = ["fallback_rate", "lease_size", "redact_url"]


def lease_size(
    demand_rate: float, queued: float, cost: float, rate: float | None, burst: float | None, live: int
) -> float:
    """Segments to ask for in one lease.

    About ``LEASE_SECONDS`` of this worker's demand (``demand_rate`` segments/s), or what is
    already queued here (``queued`` segments), whichever is more; never less than ``cost`` (the
    acquisition waiting for it), never more than ``MAX_LEASE``, nor, when throttled, more than
    this worker's share of the burst: each of ``live`` workers may hold a lease at once without
    together holding more than the bucket allows at once.
    """
    want = max(1.0, math.floor(max(demand_rate * LEASE_SECONDS, queued)))
    if rate is not None and burst is not None:
        want = min(want, max(1.0, math.floor(burst / max(1, live))))
    return max(float(cost), min(want, MAX_LEASE))


def fallback_rate(rates: list[float | None], live: int) -> float | None:
    """The local rate while Redis is unreachable: the lowest known shared rate over ``live``.

    ``rates`` are the candidates (the configured rate, the shared rate last seen); None ones are
    unknown. ``None`` only when no rate was ever known: the limiter was configured unthrottled
    and no 429 had cut it, and the local fallback then adapts to 429s on its own. The share is
    not rounded up to any floor: together the workers must stay within the account rate.
    """
    known = [r for r in rates if r is not None]
    if not known:
        return None
    return min(known) / max(1, live)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for reprs, logs and errors)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<redis url>"
    if password is None and "@" not in parts.netloc and "password" not in parts.query.lower():
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    userinfo = f"{user}:***@" if password is not None else (f"{user}@" if user else "")
    netloc = userinfo + host
    query = "" if "password" not in parts.query.lower() else "<redacted>"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
