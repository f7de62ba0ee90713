"""Campaign foundations: inputs, the crash-safe journal, the callback receiver and reports.

* :mod:`._inputs` — :func:`read_rows` streams CSV/JSONL rows, :class:`Template` renders text
  safely, :func:`build_request`/:func:`prepare_row` turn a row into a request or a journal row,
  :func:`load_opt_out` reads a do-not-message list.
* :mod:`._rowstate` — the row states and the one table of how a row may move.
* :mod:`._journal` — :class:`Journal`, the SQLite record of every row's fate, with durable
  group-committed :meth:`~Journal.mark_in_flight`; built from :mod:`._records`,
  :mod:`._writer` (the group-commit thread), :mod:`._schema` (tables and queries, shared with
  the read-only readers) and :mod:`._deliveries` (status callbacks merged per recipient).
* :mod:`._receiver` — :func:`make_callback_handler` and :class:`CallbackReceiver` record
  Bandwidth's status callbacks.
* :mod:`._report` — :func:`build_report`, :func:`render_text` and the per-row exports.
* :mod:`._runner` — :class:`CampaignRunner`: load, reconcile, send, stop safely, wait for
  delivery receipts; :mod:`._reconcile` — what a dead run left in flight, proven against
  Bandwidth's message list; :mod:`._dryrun` — :func:`dry_run`; :mod:`._status` —
  :func:`read_status`, a journal read without its lock.
"""

from ._dryrun import DryRunInvalid, DryRunMessage, DryRunReport, dry_run
from ._exceptions import (
    CampaignError,
    InputFileError,
    JournalClosedError,
    JournalError,
    JournalLockedError,
    JournalMismatchError,
    JournalStateError,
    MissingVariablesError,
    ReconcileError,
    TemplateError,
)
from ._inputs import (
    RESERVED_COLUMNS,
    InputRow,
    RowReader,
    Template,
    build_request,
    format_field_errors,
    load_opt_out,
    normalize_number,
    prepare_row,
    read_rows,
    recipients_of,
)
from ._journal import Journal
from ._receiver import (
    CallbackHandler,
    CallbackReceiver,
    CallbackReply,
    ReceiverStats,
    delivery_recorder,
    make_callback_handler,
)
from ._reconcile import ReconcileSummary, match_rows
from ._records import (
    CampaignInfo,
    CommitInfo,
    Counts,
    DeliveryOutcome,
    DeliveryStatus,
    FileFingerprint,
    JournalStats,
    LatencyStats,
    NewRow,
    PendingRow,
    RowRecord,
    RowStatus,
    fingerprint_file,
    synthetic_key,
)
from ._report import (
    EXPORT_COLUMNS,
    FlaggedNumber,
    Report,
    ReportSource,
    build_report,
    export_rows_csv,
    export_rows_json,
    render_text,
)
from ._runner import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_SETTLE,
    CampaignOptions,
    CampaignRunner,
    ErrorWindow,
    NoteKind,
    Phase,
    RunNote,
    RunOutcome,
    RunProgress,
    StopReason,
)
from ._status import JournalStatus, read_status

__all__ = [
    "DEFAULT_MAX_ERROR_RATE",
    "DEFAULT_SETTLE",
    "EXPORT_COLUMNS",
    "RESERVED_COLUMNS",
    "CallbackHandler",
    "CallbackReceiver",
    "CallbackReply",
    "CampaignError",
    "CampaignInfo",
    "CampaignOptions",
    "CampaignRunner",
    "CommitInfo",
    "Counts",
    "DeliveryOutcome",
    "DeliveryStatus",
    "DryRunInvalid",
    "DryRunMessage",
    "DryRunReport",
    "ErrorWindow",
    "FileFingerprint",
    "FlaggedNumber",
    "InputFileError",
    "InputRow",
    "Journal",
    "JournalClosedError",
    "JournalError",
    "JournalLockedError",
    "JournalMismatchError",
    "JournalStateError",
    "JournalStats",
    "JournalStatus",
    "LatencyStats",
    "MissingVariablesError",
    "NewRow",
    "NoteKind",
    "PendingRow",
    "Phase",
    "ReceiverStats",
    "ReconcileError",
    "ReconcileSummary",
    "Report",
    "ReportSource",
    "RowReader",
    "RowRecord",
    "RowStatus",
    "RunNote",
    "RunOutcome",
    "RunProgress",
    "StopReason",
    "Template",
    "TemplateError",
    "build_report",
    "build_request",
    "delivery_recorder",
    "dry_run",
    "export_rows_csv",
    "export_rows_json",
    "fingerprint_file",
    "format_field_errors",
    "load_opt_out",
    "make_callback_handler",
    "match_rows",
    "normalize_number",
    "prepare_row",
    "read_rows",
    "read_status",
    "recipients_of",
    "render_text",
    "synthetic_key",
]
