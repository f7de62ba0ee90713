"""``bwasync campaign``: send a file of personalised messages, resumably; watch it; report on it.

Three commands, all over one journal file (SQLite, next to the input by default):

* ``campaign run FILE`` — load, reconcile, send, track delivery
  (:class:`~bwasync.campaign.CampaignRunner`), with a live progress bar; ``--dry-run`` only
  validates and renders.
* ``campaign status JOURNAL`` — counts and progress, read-only (safe while a run is going).
* ``campaign report JOURNAL`` — the outcome, and per-row CSV/JSON exports.

The package, by job: :mod:`._commands` (the click commands and their checks),
:mod:`._session` (one run in a terminal: signals, receiver, exit status; shared with
``demo campaign``), :mod:`._display` (the live progress), :mod:`._render` (every report,
table and sentence printed about a campaign).

Exit status of ``run``: see :mod:`._session` (``EXIT_*``).
"""

from __future__ import annotations

from . import _commands  # noqa: F401  (registers the commands on the group)
from ._display import ProgressMode, progress_mode
from ._group import campaign
from ._session import RunSettings, run_campaign, run_tuned

__all__ = [
    "ProgressMode",
    "RunSettings",
    "campaign",
    "progress_mode",
    "run_campaign",
    "run_tuned",
]
