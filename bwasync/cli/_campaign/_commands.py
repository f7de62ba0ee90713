"""The ``campaign run``, ``campaign status`` and ``campaign report`` commands."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

import click

from ..._constants import DEFAULT_CONCURRENCY, DEFAULT_MAX_ATTEMPTS
from ..._retry import RetryPolicy
from ...campaign import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_SETTLE,
    CampaignOptions,
    InputFileError,
    JournalError,
    JournalLockedError,
    JournalStatus,
    Report,
    ReportSource,
    RowRecord,
    Template,
    TemplateError,
    dry_run,
    export_rows_csv,
    export_rows_json,
    load_opt_out,
    read_status,
)
from ...campaign._journal import Journal
from ...campaign._preflight import ProblemKind, file_columns, mostly_invalid, preflight
from ...compliance import QuietHours
from ...compliance._numbers import numbers_checkable
from .._loop import run
from .._metrics import metrics_option, serving_metrics, worker_metrics
from .._options import ConnectionOptions, HostPort, connection_options, no_progress_option, rate_option
from .._output import note
from .._worker import CLAIM_IDLE_OPTION, REDIS_OPTION, fleet
from ._display import progress_mode
from ._group import campaign
from ._render import (
    print_dry_run,
    print_error,
    print_status,
    print_summary,
    print_warning,
    read_summary,
    status_json,
    word_mostly_invalid,
    word_no_rows,
    word_problem,
)
from ._session import (
    DEFAULT_WAIT_DELIVERY,
    EXIT_FATAL,
    EXIT_MOSTLY_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    RunSettings,
    check_callbacks,
    run_campaign,
    run_tuned,
)

# --- campaign run ----------------------------------------------------------------------------------


def _regular_file(path: str) -> str:
    """FILE is read more than once (its columns, then its rows; again on a resume): a pipe or a
    device would be read empty the second time, or block for ever opening it."""
    if not os.path.isfile(path):
        raise click.BadParameter(
            f"{path!r} is not a regular file (a pipe or a device): a campaign reads its file more than once; "
            "save the rows to a file first",
            param_hint="FILE",
        )
    return path


def _read_template(template: str | None, template_file: str | None) -> str | None:
    if template is not None and template_file is not None:
        raise click.UsageError("give --template or --template-file, not both")
    if template_file is None:
        return template
    try:
        with open(template_file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {template_file}: {exc}", param_hint="--template-file") from None
    # An editor's final newline is not part of the message.
    return text[:-1] if text.endswith("\n") else text


_RUN_EPILOG = """\b
Examples:
  # Try it locally: a dry run, then a real run against an in-process emulator
  bwasync campaign run list.csv --template "Hi {first_name}, your code is {code}" --dry-run --rate 20
  bwasync campaign run list.csv --template "Hi {first_name}, your code is {code}" --emulator

\b
  # For real, at the account's 20 segments/s, tracking delivery on port 8080
  export BW_ACCOUNT_ID=... BW_USERNAME=... BW_PASSWORD=... BW_APPLICATION_ID=... BW_NUMBER=+15553332222
  bwasync campaign run list.csv --template-file message.txt --key-column id --rate 20 \\
      --opt-out stop.txt --callbacks 0.0.0.0:8080 --callback-username bw --callback-password ...

\b
  # Killed, interrupted or paused? Rerun the very same command: it resumes.
  # Rows whose fate is unknown are 'ambiguous'; after checking, resend them knowingly:
  bwasync campaign run list.csv --template-file message.txt --key-column id --retry-ambiguous

\b
  # Meanwhile, from another terminal; afterwards, per-row outcomes
  bwasync campaign status list.csv.journal
  bwasync campaign report list.csv.journal --csv outcomes.csv

\b
Exit status: 0 every row reached a final state (accepted, failed, invalid, skipped or
ambiguous); 1 a fatal problem (e.g. credentials refused); 2 invalid usage or input, or the
journal, the --metrics port or the --callbacks port is in use (nothing sent); 3 paused by --max-error-rate;
4 more than half of the rows
invalid (nothing sent, no journal kept; --allow-invalid goes on); 130 Ctrl-C; 143 SIGTERM.
Every non-zero stop is resumable: rerun the same command."""


@campaign.command(
    "run",
    short_help="Send every row of a CSV/JSONL file once (resumable; --dry-run to check first).",
    epilog=_RUN_EPILOG,
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False), callback=lambda _c, _p, v: _regular_file(v))
@click.option(
    "--template",
    metavar="TEXT",
    help="Message text with {column} fields, e.g. 'Hi {first_name}'. Rows with a 'text' column use their own.",
)
@click.option(
    "--template-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the template from this UTF-8 file (a final newline is dropped).",
)
@rate_option(
    "Send at most this many segments per second: your account's limit. Slows down further on 429. "
    "A run may start with one second's burst (the limiter starts full), so a short run can show more. "
    "[default: unthrottled until the first 429]"
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once (also the most rows a crash can leave to reconcile).",
)
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False),
    help="The journal (SQLite) recording every row's fate; rerun with the same one to resume. [default: FILE.journal]",
)
@click.option("--key-column", metavar="NAME", help="Column whose value keys each row (unique). [default: line number]")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Input format. [default: from the extension]"
)
@click.option(
    "--campaign-id",
    metavar="ID",
    help="Campaign id for a new campaign (tags are '<id>:<row key>'). [default: random for a journal; "
    "with --redis, derived from FILE's absolute path, so the same command finds the same campaign]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate and render every row, show encodings, segments and the time it would take; send nothing.",
)
@click.option(
    "--retry-ambiguous",
    is_flag=True,
    help="Look the ambiguous rows up once more, then resend those not found (their recipients may get two).",
)
@click.option(
    "--retry-failed", is_flag=True, help="Resend rows that failed before (certainly not sent, e.g. during an outage)."
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=DEFAULT_MAX_ERROR_RATE,
    show_default=True,
    metavar="FRACTION",
    help="Pause (exit 3, resumable) when more than this fraction of the last 200 sends failed or were "
    "ambiguous (judged after 50). 1 never pauses.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1),
    default=DEFAULT_MAX_ATTEMPTS,
    show_default=True,
    help="Attempts per message on 429, 5xx and connection failures (never on an ambiguous one).",
)
@click.option(
    "--opt-out",
    "opt_out_path",
    type=click.Path(exists=True, dir_okay=False),
    help="File of numbers never to message, one per line ('#' comments). Also applied to pending rows on resume.",
)
@click.option(
    "--strict-numbers",
    is_flag=True,
    help="Rows to a number that cannot exist (libphonenumber: e.g. an unused area code) are invalid, "
    "not sent. Without it the dry run lists them and they are sent.",
)
@click.option(
    "--quiet-hours",
    metavar="HH:MM-HH:MM",
    help="Never send in this window of the recipients' local time (zones from the number; a group "
    "message only when allowed for every recipient), e.g. 21:00-08:00: rows are held, the run sends the "
    "others and waits for the window to open. Not legal advice: see the README's Compliance section.",
)
@click.option(
    "--timezone-column",
    metavar="NAME",
    help="With --quiet-hours: the column giving each row's recipient time zone (IANA, e.g. America/Chicago), "
    "used instead of the number's zones where present; a name that is not a zone makes the row invalid.",
)
@click.option(
    "--callbacks",
    type=HostPort(),
    help="Receive Bandwidth's status callbacks here and record deliveries (point your application's "
    "callback URL at it). With --emulator, the emulator posts to it.",
)
@click.option(
    "--callback-username",
    envvar="BW_CALLBACK_USERNAME",
    show_envvar=True,
    help="Basic auth username the callbacks must carry.",
)
@click.option(
    "--callback-password",
    envvar="BW_CALLBACK_PASSWORD",
    show_envvar=True,
    metavar="SECRET",
    help="Basic auth password the callbacks must carry.",
)
@click.option(
    "--wait-delivery",
    type=click.FloatRange(0),
    metavar="SECONDS",
    help=f"After sending, wait up to this long for every delivery receipt. [default: {DEFAULT_WAIT_DELIVERY:g} "
    "with --callbacks]",
)
@click.option(
    "--settle",
    type=click.FloatRange(0),
    default=DEFAULT_SETTLE,
    show_default=True,
    metavar="SECONDS",
    help="On resume, rows a dead run left in flight are looked up in Bandwidth's message list only once "
    "this old (a request the dead run wrote may still be processed meanwhile).",
)
@click.option(
    "--allow-invalid",
    is_flag=True,
    help="Go on when more than half of the rows are invalid (by default: exit 4 before sending anything).",
)
@no_progress_option
@metrics_option
@REDIS_OPTION
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="With --redis: worker processes to send with on this machine (0: only load; 'bwasync worker' "
    "elsewhere sends).",
)
@CLAIM_IDLE_OPTION
@click.option(
    "--reload-lost",
    is_flag=True,
    help="With --redis: Redis lost the state of a campaign this file was loaded as (it restarted empty): "
    "load it again as new, knowing that every row is sent again, those already sent included.",
)
@click.option(
    "--allow-non-durable-redis",
    is_flag=True,
    help="With --redis: run although Redis does not write every change to disk (appendonly yes, appendfsync "
    "always): a Redis crash may then forget rows already sent, and they would be sent again.",
)
@connection_options
def run_command(connection: ConnectionOptions, **params: Any) -> None:
    """Send one message per row of FILE (CSV with a header, or JSON Lines), each exactly once.

    Rows are rendered from --template ({column} fields), checked against every Bandwidth rule
    (an invalid row is reported with its line number and the campaign goes on), paced to
    --rate segments per second, and tagged '<campaign id>:<row key>'. The journal records each
    row before its request leaves and after the answer, so the run can be stopped at any moment
    (Ctrl-C finishes what is in flight; a second Ctrl-C, a crash or kill -9 also lose nothing)
    and resumed by running the same command again. On resume, rows a dead run left in flight are
    looked up in Bandwidth's message list; those not found become 'ambiguous' and are not resent
    unless --retry-ambiguous.
    """
    ctx = click.get_current_context()
    args = RunArgs(**params)
    source = _read_template(args.template, args.template_file)
    template: Template | None = None
    if source is not None:
        try:
            template = Template(source)
        except TemplateError as exc:
            raise click.BadParameter(str(exc), param_hint="--template") from None
    try:
        opt_out = load_opt_out(args.opt_out_path) if args.opt_out_path else frozenset()
    except InputFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--opt-out") from None
    fmt: Any = args.fmt
    numbers_checkable = _numbers_checkable()
    if args.strict_numbers and not numbers_checkable:
        raise click.UsageError("--strict-numbers needs libphonenumber: pip install 'bwasync[compliance]'")
    quiet: QuietHours | None = None
    if args.quiet_hours is not None:
        try:
            quiet = QuietHours.parse(args.quiet_hours)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--quiet-hours") from None
        if not numbers_checkable:
            raise click.UsageError("--quiet-hours needs libphonenumber: pip install 'bwasync[compliance]'")
    if args.timezone_column is not None:
        if quiet is None:
            raise click.UsageError("--timezone-column is for --quiet-hours: give both")
        try:
            columns = file_columns(args.file, fmt=fmt)
        except InputFileError as exc:
            raise click.BadParameter(str(exc), param_hint="FILE") from None
        if args.timezone_column not in columns:
            raise click.BadParameter(
                f"{args.file} has no column {args.timezone_column!r}", param_hint="--timezone-column"
            )
    if args.dry_run:
        ctx.exit(_dry_run(connection, args, template, opt_out, check_numbers=numbers_checkable, quiet=quiet))
    _check_shared(ctx, args)
    endpoint = args.callbacks
    if (args.callback_username is None) != (args.callback_password is None):
        raise click.UsageError("give both --callback-username and --callback-password, or neither")
    settings = connection.resolve(need_from=False)
    if settings.application_id is None:  # resolve() insists on it; keeps mypy informed
        raise click.UsageError("Missing --application-id (or set BW_APPLICATION_ID)")
    if _preflight(args.file, fmt, template, settings.from_, dry=False) is not True:
        ctx.exit(EXIT_USAGE)
    try:
        options = CampaignOptions(
            input_path=args.file,
            application_id=settings.application_id,
            template=source,
            default_from=settings.from_,
            key_column=args.key_column,
            fmt=fmt,
            campaign_id=args.campaign_id,
            concurrency=args.concurrency,
            rate=args.rate,
            retry=RetryPolicy(max_attempts=args.max_attempts),
            retry_ambiguous=args.retry_ambiguous,
            retry_failed=args.retry_failed,
            max_error_rate=None if args.max_error_rate >= 1 else args.max_error_rate,
            opt_out=opt_out,
            settle=args.settle,
            strict_numbers=args.strict_numbers,
            quiet_hours=quiet,
            timezone_column=args.timezone_column,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if args.redis_url:
        shared = fleet().SharedRun(
            redis_url=args.redis_url,
            workers=args.workers,
            claim_idle=args.claim_idle,
            allow_invalid=args.allow_invalid,
            reload_lost=args.reload_lost,
            allow_non_durable=args.allow_non_durable_redis,
            metrics=worker_metrics(args.metrics, args.workers),
        )
        ctx.exit(run_tuned(fleet().run_shared(settings, options, shared)))
    wait = args.wait_delivery
    unavailable = check_callbacks(endpoint)
    if unavailable is not None:
        print_error(unavailable)
        ctx.exit(EXIT_USAGE)
    with serving_metrics(args.metrics) as metrics:
        run_settings = RunSettings(
            journal_path=args.journal_path or args.file + ".journal",
            callbacks=endpoint,
            callback_username=args.callback_username,
            callback_password=args.callback_password,
            wait_delivery=wait if wait is not None else (DEFAULT_WAIT_DELIVERY if endpoint else 0.0),
            progress=progress_mode(args.no_progress),
            allow_invalid=args.allow_invalid,
            opt_out_path=args.opt_out_path,
            metrics=metrics,
        )
        ctx.exit(run_tuned(run_campaign(settings, options, run_settings)))


#: ``campaign run`` options a shared (``--redis``) campaign does not take (yet), and why.
_NOT_SHARED: Final = (
    ("journal_path", "--journal", "the campaign is kept in Redis"),
    ("callbacks", "--callbacks", "delivery receipts are not collected for a shared campaign yet"),
    ("wait_delivery", "--wait-delivery", "delivery receipts are not collected for a shared campaign yet"),
    ("quiet_hours", "--quiet-hours", "quiet hours are not supported for a shared campaign yet"),
    ("retry_ambiguous", "--retry-ambiguous", "resending ambiguous rows is not supported for a shared campaign yet"),
)


def _check_shared(ctx: click.Context, args: RunArgs) -> None:
    """Refuse, before anything is loaded or sent, what ``--redis`` does not do; or options that
    only make sense with it."""
    if not args.redis_url:
        for name in ("workers", "claim_idle", "reload_lost", "allow_non_durable_redis"):
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')} is for a shared campaign: give --redis URL too")
        return
    for name, flag, why in _NOT_SHARED:
        if getattr(args, name):
            raise click.UsageError(f"{flag} cannot be used with --redis: {why}")


@dataclass(frozen=True, slots=True)
class RunArgs:
    """``campaign run``'s arguments, as click parses them (see the options above)."""

    file: str
    template: str | None
    template_file: str | None
    rate: float | None
    concurrency: int
    journal_path: str | None
    key_column: str | None
    fmt: str | None
    campaign_id: str | None
    dry_run: bool
    retry_ambiguous: bool
    retry_failed: bool
    max_error_rate: float
    max_attempts: int
    opt_out_path: str | None
    strict_numbers: bool
    quiet_hours: str | None
    timezone_column: str | None
    callbacks: tuple[str, int] | None
    callback_username: str | None
    callback_password: str | None
    wait_delivery: float | None
    settle: float
    allow_invalid: bool
    no_progress: bool
    metrics: tuple[str, int] | None
    redis_url: str | None
    workers: int
    claim_idle: float | None
    reload_lost: bool
    allow_non_durable_redis: bool


def _preflight(file: str, fmt: Any, template: Template | None, sender: str | None, *, dry: bool) -> bool | None:
    """Check FILE's columns against the template and sender; False (and why, said) if it cannot work.

    None: a dry run without any sender, which goes on (warned) checking rows as if one were given.
    """
    try:
        columns = file_columns(file, fmt=fmt)
    except InputFileError as exc:
        print_error(str(exc))
        return False
    ok: bool | None = True
    for problem in preflight(columns, template=template, default_from=sender):
        if problem.kind is ProblemKind.NO_SENDER and dry:
            print_warning(
                word_problem(problem, file) + " The dry run goes on, checking the rows as if a sender were given; "
                "a real run would stop here."
            )
            if ok:
                ok = None
            continue
        print_error(word_problem(problem, file))
        ok = False
    return ok


#: ``--format`` of ``status`` and ``report``.
_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people; json: one JSON object on stdout, for scripts.",
)


# --- dry run ---------------------------------------------------------------------------------------

#: Placeholder application id for a dry run without one: only its presence is validated.
_DRY_APPLICATION = "dry-run-application"
#: Placeholder sender for a dry run without any (warned): the rows' other fields still get checked.
_DRY_SENDER = "+15550000000"


def _numbers_checkable() -> bool:
    """Whether libphonenumber (the ``compliance`` extra) is installed, to check numbers."""
    return numbers_checkable()


def _dry_run(
    connection: ConnectionOptions,
    args: RunArgs,
    template: Template | None,
    opt_out: frozenset[str],
    *,
    check_numbers: bool,
    quiet: QuietHours | None = None,
) -> int:
    """Validate and render FILE; nothing is sent and no journal is created (no event loop either)."""
    if connection.emulator:
        resolved = connection.resolve(need_from=False)
        app, sender = resolved.application_id, resolved.from_
    else:
        app, sender = connection.application_id, connection.from_
    fmt: Any = args.fmt
    checked = _preflight(args.file, fmt, template, sender, dry=True)
    if checked is False:
        return EXIT_USAGE
    if checked is None:
        sender = _DRY_SENDER
    try:
        report = dry_run(
            args.file,
            template=template,
            application_id=app or _DRY_APPLICATION,
            default_from=sender,
            key_column=args.key_column,
            fmt=fmt,
            campaign_id=args.campaign_id,
            opt_out=opt_out,
            check_numbers=check_numbers,
            strict_numbers=args.strict_numbers,
            quiet_hours=quiet,
            timezone_column=args.timezone_column,
        )
    except (InputFileError, TemplateError) as exc:
        print_error(str(exc))
        return EXIT_USAGE
    print_dry_run(args.file, report, args.rate)
    if not report.rows:
        print_error(word_no_rows(args.file))
        return EXIT_USAGE
    if mostly_invalid(report.invalid, report.rows) and not args.allow_invalid:
        print_error(word_mostly_invalid(report.invalid, report.rows))
        return EXIT_MOSTLY_INVALID
    return EXIT_OK


@campaign.command(
    "status",
    short_help="Progress of a campaign from its journal (safe while it runs).",
    epilog="""\b
Examples:
  bwasync campaign status list.csv.journal
  watch -n 2 bwasync campaign status list.csv.journal

--format json prints one JSON object (schema in the README).

  # A campaign shared in Redis, from any machine:
  bwasync campaign status --redis redis://redis.internal:6379/0 3f2a9c0d1e5b7a64

Exit status: 0 the campaign is complete, 1 it is not (yet) or Redis is unreachable, 2 not a
journal (no such campaign).""",
)
@click.argument("journal", metavar="JOURNAL|CAMPAIGN_ID")
@_FORMAT
@REDIS_OPTION
def status_command(journal: str, fmt: str, redis_url: str | None) -> None:
    """Show a campaign's progress: rows by state, delivery receipts, when it last moved.

    Reads the journal read-only, without taking its lock, so it works while 'campaign run' is
    sending (it shows the last committed state) as well as after. With --redis, the argument is
    the id of a campaign kept in Redis.
    """
    ctx = click.get_current_context()
    if redis_url:
        ctx.exit(run(fleet().status_shared(redis_url, journal, fmt)))
    ctx.exit(show_status(_journal_status(ctx, journal), fmt))


def _journal_status(ctx: click.Context, journal: str) -> JournalStatus:
    """The status of ``journal``, read-only; exit 2 (said) if it is not a journal (nothing is created)."""
    try:
        return read_status(journal)
    except JournalError as exc:
        print_error(str(exc))
        ctx.exit(EXIT_USAGE)


# --- campaign report ---------------------------------------------------------------------------------


@campaign.command(
    "report",
    short_help="A campaign's outcome; --csv/--json export every row's.",
    epilog="""\b
Examples:
  bwasync campaign report list.csv.journal
  bwasync campaign report list.csv.journal --csv outcomes.csv --json outcomes.jsonl

The exports have one record per row, in file order: key, line, status, recipients, message_id,
error, error_code, delivery_status, delivery_error_code, segments, attempts, latency.
--format json prints the summary as one JSON object on stdout (schema in the README).
With --redis URL, the argument is the id of a campaign kept in Redis (any machine).""",
)
@click.argument("journal", metavar="JOURNAL|CAMPAIGN_ID")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write every row's outcome to this CSV file.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Write every row's outcome to this JSON Lines file."
)
@_FORMAT
@REDIS_OPTION
def report_command(journal: str, csv_path: str | None, json_path: str | None, fmt: str, redis_url: str | None) -> None:
    """Summarise a campaign: accepted, delivered, failed (by error code), ambiguous, invalid,
    segments, throughput and latency percentiles; optionally export every row's outcome.

    Needs the journal to itself: while a run is going, use 'campaign status'. With --redis,
    the argument is the id of a campaign kept in Redis (readable while its workers send).
    """
    ctx = click.get_current_context()
    if redis_url:
        ctx.exit(run(fleet().report_shared(redis_url, journal, fmt, csv_path, json_path)))
    _journal_status(ctx, journal)

    async def main() -> tuple[Report, list[RowRecord], list[str]]:
        async with Journal(journal) as j:
            return await read_report(j, csv_path, json_path)

    try:
        report, invalid, written = run(main())
    except JournalLockedError:
        print_error(
            f"{journal} is in use by a running campaign; 'bwasync campaign status {journal}' reads it meanwhile."
        )
        ctx.exit(EXIT_USAGE)
    except (JournalError, OSError) as exc:
        print_error(str(exc))
        ctx.exit(EXIT_FATAL)
    show_report(report, invalid, written, fmt)


async def read_report(
    source: ReportSource, csv_path: str | None, json_path: str | None
) -> tuple[Report, list[RowRecord], list[str]]:
    """``campaign report``'s work on a journal or a shared campaign: the report, the first invalid
    rows, and the exports asked for (a line saying so for each)."""
    report, invalid = await read_summary(source)
    written: list[str] = []
    for path, export, option in ((csv_path, export_rows_csv, "--csv"), (json_path, export_rows_json, "--json")):
        if not path:
            continue
        if path == "-":
            raise click.BadParameter(
                "the export goes to a file (stdout carries the report); give a path, e.g. outcomes.csv",
                param_hint=option,
            )
        try:
            n = await export(source, path)
        except OSError as exc:
            raise click.BadParameter(f"cannot write {path}: {exc.strerror or exc}", param_hint=option) from None
        written.append(f"{n:,} rows written to {path}")
    return report, invalid, written


def show_status(status: JournalStatus, fmt: str) -> int:
    """Print a campaign's snapshot as ``--format`` asks; the exit status (0: complete)."""
    if fmt == "json":
        click.echo(status_json(status))
    else:
        print_status(status)
    return EXIT_OK if status.complete else EXIT_FATAL


def show_report(report: Report, invalid: list[RowRecord], written: list[str], fmt: str) -> None:
    """Print what :func:`read_report` read, as ``--format`` asks."""
    if fmt == "json":
        click.echo(report.to_json())
    else:
        print_summary(report, invalid, None)
    for line in written:
        note(line)
