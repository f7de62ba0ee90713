"""Which shared campaigns were loaded from an input file, into which Redis: the guard against a
Redis that lost one.

A Redis that restarts empty (no AOF, its files lost, a flush) forgets every campaign it held;
rerunning the same ``campaign run FILE --redis URL`` would then find no record and load the
file as a new campaign, sending every row again. So the loading command records, beside the
input file (``FILE.redis-loads``, JSON Lines, like the journal's default ``FILE.journal``),
every campaign it creates: the Redis location (its URL without credentials,
``redis://host:port/db``) and the campaign id, written and synced to disk *before* the campaign
exists in Redis. A later run that finds the line but no campaign in Redis knows Redis lost it.

A line that does not parse is ignored: only a write cut short by a crash leaves one, and that
run never went on to create its campaign.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Final

__all__ = ["LOADS_SUFFIX", "forget_load", "loaded_at", "loads_path", "record_load"]

#: Appended to the input file's path: where its loads are recorded.
LOADS_SUFFIX: Final = ".redis-loads"


def loads_path(input_path: str | os.PathLike[str]) -> str:
    """The file that records the loads of ``input_path``."""
    return os.fspath(input_path) + LOADS_SUFFIX


def _entries(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _matches(entry: dict[str, Any], where: str, campaign_id: str) -> bool:
    return entry.get("redis") == where and entry.get("campaign_id") == campaign_id


def loaded_at(input_path: str | os.PathLike[str], where: str, campaign_id: str) -> float | None:
    """When campaign ``campaign_id`` of ``input_path`` was first loaded into the Redis at
    ``where`` (Unix time), or None if this file records no such load. Raises ``OSError`` when
    the record exists but cannot be read."""
    for entry in _entries(loads_path(input_path)):
        if _matches(entry, where, campaign_id):
            return float(entry.get("loaded_at") or 0.0)
    return None


def record_load(input_path: str | os.PathLike[str], where: str, campaign_id: str) -> None:
    """Record (durably: synced to disk) that ``campaign_id`` is being loaded into ``where``.

    ``where`` must hold no credential (see ``redact_url``). Raises ``OSError``.
    """
    line = json.dumps({"redis": where, "campaign_id": campaign_id, "loaded_at": time.time()}, sort_keys=True)
    with open(loads_path(input_path), "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def forget_load(input_path: str | os.PathLike[str], where: str, campaign_id: str) -> None:
    """Drop the record of a load that sent nothing and left nothing in Redis (a mostly invalid
    file): a corrected file may then be loaded as new. Raises ``OSError``."""
    path = loads_path(input_path)
    kept = [e for e in _entries(path) if not _matches(e, where, campaign_id)]
    if not kept:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e, sort_keys=True) + "\n" for e in kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
