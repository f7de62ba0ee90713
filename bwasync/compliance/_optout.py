"""Opt-out stores: the numbers that must not be messaged, changed by STOP and START replies.

:class:`OptOutStore` is the interface the inbound handler (and a campaign) use;
:class:`MemoryOptOutStore` keeps the numbers in memory; :class:`FileOptOutStore` keeps them in
the campaign's ``--opt-out`` file format, durably:

* one number per line, written loosely or in E.164, normalised by the campaign's own
  :func:`bwasync.campaign.normalize_number`; blank lines and ``#`` comments are ignored; a line
  that is not a number makes the file unusable (read by :func:`bwasync.campaign.load_opt_out`);
* an opt-out appends ``+15552223333  # <note>`` and fsyncs the file before the call returns;
* a re-subscribe rewrites the file without every line holding that number (other lines and
  comments kept as they were), through a temporary file renamed over it, so a crash leaves
  the old file or the new one, never half of one.

Both are rare next to sends, so the file is written inline, in order, on the calling thread:
an append and an fsync take about a millisecond, a rewrite of a 100,000-line file tens of
them. One process should write a given file at a time; a campaign reads it when it starts.

::

    store = FileOptOutStore("stop.txt")       # reads the file if it exists
    await store.opt_out("+15552223333", note="STOP 2026-12-02T03:04:05Z")
    "+15552223333" in store                   # True, now and after a restart
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

__all__ = ["FileOptOutStore", "MemoryOptOutStore", "OptOutStore"]


@runtime_checkable
class OptOutStore(Protocol):
    """Numbers that must not be messaged. Membership is a cheap, synchronous look-up (a
    sender checks it for every recipient); changes are coroutines so a store may do I/O.

    Numbers are normalised on the way in (``"(555) 222-3333"`` is ``+15552223333``);
    ``number in store`` expects E.164, as :class:`~bwasync.MessageRequest` holds them.
    """

    def __contains__(self, number: object) -> bool: ...

    def __len__(self) -> int: ...

    def numbers(self) -> frozenset[str]:
        """A snapshot of every number in the store."""
        ...

    async def opt_out(self, number: str, *, note: str | None = None) -> bool:
        """Add ``number``; True if it was not there. ``note`` may be recorded with it
        (what asked for it, when). ``ValueError`` if ``number`` is not a phone number."""
        ...

    async def opt_in(self, number: str, *, note: str | None = None) -> bool:
        """Remove ``number``; True if it was there. ``ValueError`` if it is not a phone number."""
        ...


def _normalize(number: str) -> str:
    # The campaign's normaliser, so the store and the --opt-out file agree on every spelling.
    # Imported here: the campaign imports this module, so a module-level import would be circular.
    from ..campaign._inputs import normalize_number

    normalized = normalize_number(number)
    if normalized is None:
        raise ValueError(f"{number!r} is not a phone number")
    return normalized


class MemoryOptOutStore:
    """An :class:`OptOutStore` in memory (lost when the process ends)."""

    __slots__ = ("_numbers",)

    def __init__(self, numbers: Iterable[str] = ()) -> None:
        self._numbers: set[str] = {_normalize(n) for n in numbers}

    def __contains__(self, number: object) -> bool:
        return number in self._numbers

    def __len__(self) -> int:
        return len(self._numbers)

    def numbers(self) -> frozenset[str]:
        return frozenset(self._numbers)

    async def opt_out(self, number: str, *, note: str | None = None) -> bool:
        normalized = _normalize(number)
        if normalized in self._numbers:
            return False
        self._added(normalized, note)  # first: a failed write leaves the store unchanged
        self._numbers.add(normalized)
        return True

    async def opt_in(self, number: str, *, note: str | None = None) -> bool:
        normalized = _normalize(number)
        if normalized not in self._numbers:
            return False
        self._removed(normalized)
        self._numbers.discard(normalized)
        return True

    def _added(self, number: str, note: str | None) -> None:
        """Persist an opt-out (a subclass's hook; memory needs nothing)."""

    def _removed(self, number: str) -> None:
        """Persist a re-subscribe (a subclass's hook; memory needs nothing)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} numbers={len(self._numbers)}>"


class FileOptOutStore(MemoryOptOutStore):
    """An :class:`OptOutStore` kept in an ``--opt-out`` file (see the module docstring).

    The file is read when the store is made (a missing file is an empty list, created on the
    first opt-out); a line that is not a number raises
    :class:`~bwasync.campaign.InputFileError`, as it does for a campaign: a compliance list
    that cannot be read exactly is not silently half-applied.
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from ..campaign._inputs import load_opt_out  # see _normalize for why here

        self.path = os.fspath(path)
        super().__init__(load_opt_out(self.path) if os.path.exists(self.path) else ())

    def _added(self, number: str, note: str | None) -> None:
        """Append the number's line and fsync it."""
        comment = " ".join(note.split()) if note else ""
        line = f"{number}  # {comment}\n" if comment else f"{number}\n"
        created = not os.path.exists(self.path)
        with open(self.path, "ab+") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line  # the file's last line has no line break: do not join it
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())
        if created:
            _fsync_dir(self.path)

    def _removed(self, number: str) -> None:
        """Rewrite the file without the number's lines, atomically."""
        with open(self.path, encoding="utf-8-sig") as f:
            lines = [line for line in f if _normalize_or_none(line.split("#", 1)[0].strip()) != number]
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".opt-out-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(lines)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(OSError):
                os.chmod(tmp, os.stat(self.path).st_mode & 0o7777)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} numbers={len(self._numbers)}>"


def _normalize_or_none(entry: str) -> str | None:
    """A file line's number, normalised; None for a blank or comment line (kept as is)."""
    if not entry:
        return None
    try:
        return _normalize(entry)
    except ValueError:
        return None


def _fsync_dir(path: str) -> None:
    """Make a file's creation or rename durable (its directory entry). A no-op where
    directories cannot be opened (Windows)."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
