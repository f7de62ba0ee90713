"""The exceptions the campaign layer raises: the ``CampaignError`` subtree of :class:`bwasync.BwasyncError`.

Their place in the tree is drawn, with every other bwasync exception, in ``bwasync/_exceptions.py``.

Errors about one row of an input file are not exceptions: :func:`~bwasync.campaign.read_rows`
yields them as :attr:`InputRow.error`, and :func:`~bwasync.campaign.build_request` raises the
ordinary :class:`bwasync.ValidationError` so that every per-row problem arrives as field errors.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._exceptions import BwasyncError

__all__ = [
    "CampaignError",
    "InputFileError",
    "JournalClosedError",
    "JournalError",
    "JournalLockedError",
    "JournalMismatchError",
    "JournalStateError",
    "MissingVariablesError",
    "ReconcileError",
    "TemplateError",
]


class CampaignError(BwasyncError):
    """Base of every campaign-layer error."""


class InputFileError(CampaignError):
    """A campaign input (or opt-out) file cannot be used; the message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TemplateError(CampaignError, ValueError):
    """A message template is malformed, or uses syntax other than plain ``{name}`` fields."""


class MissingVariablesError(TemplateError):
    """Rendering needed variables the row does not have. ``names`` lists them, sorted."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names: tuple[str, ...] = tuple(sorted(set(names)))
        plural = "s" if len(self.names) > 1 else ""
        super().__init__(f"missing template variable{plural}: {', '.join(self.names)}")


class JournalError(CampaignError):
    """The journal failed, or refused an operation."""


class JournalClosedError(JournalError):
    """The journal is closed, or its writer thread stopped after a database error."""


class JournalLockedError(JournalError):
    """Another process (or another :class:`Journal` in this one) holds this journal open.

    Two runners on one journal would send the same rows twice, so the second is refused.
    """


class JournalMismatchError(JournalError):
    """A resume was attempted with an input file, template or setting other than the journal's.

    ``differences`` names what differs, among ``"input file"``, ``"template"``, ``"campaign
    id"``, ``"application id"``, ``"sender"``, ``"key column"``, ``"priority"`` and
    ``"expiration"``; a front end words them (the CLI names its options).
    """

    def __init__(self, path: str, differences: Iterable[str]) -> None:
        self.path = path
        self.differences = tuple(differences)
        super().__init__(
            f"{path}: cannot resume: the journal holds a campaign with another " + ", ".join(self.differences)
        )


class JournalStateError(JournalError):
    """A row may not be marked in flight: it does not exist, or its status forbids sending.

    Raised by :meth:`Journal.mark_in_flight`, so a ``before_send`` hook that lets it propagate
    stops that one send. ``status`` is the row's current status (``None``: no such row).
    """

    def __init__(self, key: str, status: str | None) -> None:
        self.key = key
        self.status = status
        if status is None:
            super().__init__(f"row {key!r} is not in the journal")
        else:
            super().__init__(f"row {key!r} is {status}; it may not be sent")


class ReconcileError(CampaignError):
    """Bandwidth's message list could not be reached (after retries); the rows stay ``in_flight``."""
