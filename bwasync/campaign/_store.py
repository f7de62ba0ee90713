"""Where a campaign is kept: what the load pass needs of a :class:`~bwasync.campaign.Journal`
and of a campaign shared in Redis (:class:`bwasync.redis._campaign.SharedCampaign`).

Both create or resume the campaign's record the same way (:meth:`CampaignStore.init_campaign`);
each keeps it in its own storage.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ._records import CampaignInfo, NewRow

__all__ = ["CampaignStore"]


class CampaignStore(abc.ABC):
    """The record and rows of one campaign, wherever they are kept."""

    async def init_campaign(
        self,
        *,
        input_path: str | os.PathLike[str],
        template: str | None,
        settings: Mapping[str, Any] | None = None,
        campaign_id: str | None = None,
    ) -> CampaignInfo:
        """Create the campaign record, or check a resume against it and return it.

        On creation the input file is fingerprinted. On resume (a record exists) the input file
        must have the same fingerprint and the template must be identical, otherwise
        :class:`~bwasync.campaign.JournalMismatchError`; ``settings`` are not compared (the
        stored ones are returned, for the caller to compare if it cares), nor is the path (a
        moved file is fine). ``campaign_id``: a journal's new campaign takes it (else a random
        one), a resume must match it; a shared campaign's must be its own.
        """
        settings_json = json.dumps(dict(settings or {}), sort_keys=True, default=str)
        return await self._init_campaign(os.fspath(input_path), template, settings_json, campaign_id)

    @abc.abstractmethod
    async def _init_campaign(
        self, path: str, template: str | None, settings_json: str, campaign_id: str | None
    ) -> CampaignInfo:
        """:meth:`init_campaign`, in this store, its settings as JSON."""

    @abc.abstractmethod
    async def campaign_info(self) -> CampaignInfo | None:
        """The campaign record, or None before :meth:`init_campaign`."""

    def give_turn(self) -> None:
        """Called by the load pass between rows (about every millisecond of its work): a store
        that writes on a thread of its own lets it run here (see the journal's). No-op here."""
        return None

    @abc.abstractmethod
    async def add_rows(self, rows: Iterable[NewRow], *, loaded_through: int | None = None) -> int:
        """Add a batch of rows (idempotent by key and line); how many were new."""

    @abc.abstractmethod
    async def set_loaded_through(self, line: int, *, complete: bool = False) -> None:
        """Record how far the load pass got (``complete``: the whole file is in)."""

    @abc.abstractmethod
    async def total_rows(self) -> int:
        """Rows in the store."""
