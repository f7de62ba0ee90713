"""Campaign inputs: streaming CSV/JSONL readers, safe templates, requests, opt-out lists.

Reading never loads a file whole: :func:`read_rows` yields one :class:`InputRow` at a time,
with the file's real line numbers, and a broken row is reported as that row's ``error``
instead of stopping the read. Only problems that make the whole file unusable (it cannot be
opened, it has no header, no ``to`` column...) raise :class:`InputFileError`.

Columns (CSV header names; JSONL object keys):

========== =====================================================================================
``to``      required; one number, or several for a group message separated by ``;``, ``,`` or
            whitespace (JSONL may give a list)
``from``    optional; the campaign's default sender otherwise
``media``   optional; URLs separated by ``;`` (JSONL may give a list)
``text``    optional; the message text for this row, used as is instead of the template
``priority``, ``expiration``  optional; as in Bandwidth's API
(others)    template variables; every column, these included, can be used in the template
========== =====================================================================================

The message ``tag`` is never taken from the file: it is ``<campaign id>:<row key>``.

Loading a campaign::

    template = Template("Hi {first_name}, your code is {code}")
    opt_out = load_opt_out("stop.txt")
    for row in read_rows("list.csv", key_column="id"):
        new_row = prepare_row(row, template=template, application_id=app, default_from="+15551234567",
                              campaign_id=info.campaign_id, opt_out=opt_out)
        ...  # batch and journal.add_rows(...)
"""

from __future__ import annotations

import csv
import os
import re
import string
import zoneinfo
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import IO, Any, Final, Literal

import msgspec

from .._constants import MAX_TAG_LENGTH
from .._exceptions import ValidationError
from .._models import MessageRequest, encode_request
from .._segments import message_cost
from .._validation import FieldError, Priority, is_e164
from ..compliance import check_number
from ._constants import KEY_CHECK_BATCH, MAX_KEY_LENGTH
from ._exceptions import InputFileError, MissingVariablesError, TemplateError
from ._records import NewRow, RowStatus, synthetic_key
from ._seenkeys import SeenKeys

__all__ = [
    "RESERVED_COLUMNS",
    "InputRow",
    "RowReader",
    "Template",
    "build_request",
    "flag_errors",
    "format_field_errors",
    "load_opt_out",
    "normalize_number",
    "number_flags",
    "prepare_row",
    "read_rows",
    "recipients_of",
]

#: Columns with a meaning of their own (all other columns are only template variables).
RESERVED_COLUMNS: Final = frozenset({"to", "from", "media", "text", "priority", "expiration"})

Format = Literal["csv", "jsonl"]

_EXTENSIONS: Final[dict[str, Format]] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_BOM: Final = b"\xef\xbb\xbf"
#: Bytes read up front to tell a binary file (a NUL byte) from a text file.
_SNIFF_BYTES: Final = 64 * 1024
_RECIPIENT_SEPARATORS = re.compile(r"[;,\s]+")
_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class InputRow:
    """One record of an input file.

    ``line`` is the file line the record starts on (1-based; a quoted multi-line CSV field
    does not shift it). ``key`` identifies the row for the whole campaign: the key column's
    value, or the line number as a string when no key column is used; a row whose key is
    unusable gets :func:`~bwasync.campaign.synthetic_key` (``"#<line>"``) and an ``error``.
    ``fields`` maps column names to values (strings for CSV, JSON values for JSONL); it is
    empty when the record could not be parsed. ``error`` says why the row cannot be sent.
    """

    line: int
    key: str
    fields: dict[str, Any]
    error: str | None = None


# --- Reading -------------------------------------------------------------------------------------


class _Lines:
    """Decoded lines of a binary file, counting lines and bytes, tolerating a BOM.

    A line that is not UTF-8 is decoded with replacement characters and its number recorded
    in ``bad``, so the record containing it becomes a row error instead of a crash.
    """

    __slots__ = ("bad", "bytes_read", "count", "file")

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.count = 0
        self.bytes_read = 0
        self.bad: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for raw in self.file:
            self.count += 1
            self.bytes_read += len(raw)
            if self.count == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad.add(self.count)
                yield raw.decode("utf-8", "replace")


class RowReader:
    """An iterator of :class:`InputRow` over one input file; what :func:`read_rows` returns.

    Holds the file open until exhausted or closed (it is also a context manager).
    ``columns`` is the CSV header (None for JSONL); ``lines_read`` and ``bytes_read`` tell how
    far the read has got, for a progress bar against ``os.path.getsize(path)``.
    """

    def __init__(self, path: str, fmt: Format, key_column: str | None, track_duplicates: bool = True) -> None:
        self.path = path
        self.format: Format = fmt
        self.key_column = key_column
        self.columns: tuple[str, ...] | None = None
        try:
            self._file: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise InputFileError(path, f"cannot open the input file: {exc.strerror or exc}") from None
        try:
            self._check_text()
        except BaseException:
            self._file.close()
            raise
        self._lines = _Lines(self._file)
        #: Every key and its first line, to report duplicate keys (only with a key column).
        self._seen: SeenKeys | None = None
        try:
            rows = self._read_csv() if fmt == "csv" else self._jsonl_rows()
            if track_duplicates and key_column is not None:
                self._seen = SeenKeys()
                rows = self._unique(rows, self._seen)
            self._rows = rows
        except BaseException:
            self._file.close()
            raise

    def _check_text(self) -> None:
        """Refuse a binary file up front (a NUL byte in what the first read buffered)."""
        # peek(): no seek needed, so a pipe or a file still being written works too.
        head = self._file.peek(_SNIFF_BYTES)[:_SNIFF_BYTES] if hasattr(self._file, "peek") else b""
        if b"\x00" in head:
            raise InputFileError(
                self.path,
                "this is not a text file (it contains NUL bytes): a campaign file is CSV or JSON Lines, in UTF-8",
            )

    @property
    def lines_read(self) -> int:
        return self._lines.count

    @property
    def bytes_read(self) -> int:
        return self._lines.bytes_read

    def __iter__(self) -> RowReader:
        return self

    def __next__(self) -> InputRow:
        try:
            return next(self._rows)
        except StopIteration:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise InputFileError(self.path, f"read failed: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._rows.close()
        self._file.close()
        if self._seen is not None:
            self._seen.close()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    # -- keys -----------------------------------------------------------------------------

    def _keyed(self, line: int, fields: dict[str, Any]) -> InputRow:
        """The row for a parsed record: its key, or a synthetic key and the key's problem."""
        column = self.key_column
        if column is None:
            return InputRow(line, str(line), fields)
        value = fields.get(column)
        if value is None:
            problem = f"the key column {column!r} is missing"
        elif isinstance(value, bool) or not isinstance(value, (str, int)):
            problem = f"the key column {column!r} must be a string or an integer, not {type(value).__name__}"
        else:
            key = str(value).strip()
            if not key:
                problem = f"the key column {column!r} is empty"
            elif key.startswith("#"):
                problem = f"key {key!r} starts with '#', which is reserved"
            elif len(key) > MAX_KEY_LENGTH:
                problem = f"key is {len(key)} characters; at most {MAX_KEY_LENGTH} are allowed"
            elif not key.isprintable():
                problem = f"key {key!r} contains control characters"
            else:
                return InputRow(line, key, fields)  # unique or not: see _unique
        return InputRow(line, synthetic_key(line), fields, problem)

    def _unique(self, rows: Iterator[InputRow], seen: SeenKeys) -> Generator[InputRow, None, None]:
        """``rows``, a row whose key an earlier row already used made an error naming that line.

        Checked :data:`KEY_CHECK_BATCH` rows at a time (the reader runs that far ahead); a read
        error mid-batch is raised after the rows read before it.
        """
        while True:
            batch: list[InputRow] = []
            failure: Exception | None = None
            try:
                for row in rows:
                    batch.append(row)
                    if len(batch) >= KEY_CHECK_BATCH:
                        break
            except Exception as exc:
                failure = exc
            firsts = iter(seen.first_lines([(row.key, row.line) for row in batch if row.error is None]))
            for row in batch:
                if row.error is None and (first := next(firsts)) != row.line:
                    row = InputRow(
                        row.line,
                        synthetic_key(row.line),
                        row.fields,
                        f"duplicate key {row.key!r} (first on line {first})",
                    )
                yield row
            if failure is not None:
                raise failure
            if len(batch) < KEY_CHECK_BATCH:
                return

    def _broken(self, line: int, problem: str) -> InputRow:
        key = synthetic_key(line) if self.key_column is not None else str(line)
        return InputRow(line, key, {}, problem)

    # -- CSV ------------------------------------------------------------------------------

    def _read_csv(self) -> Generator[InputRow, None, None]:
        lines = self._lines
        reader = csv.reader(iter(lines))
        header: list[str] | None = None
        while header is None:
            try:
                record = next(reader)
            except StopIteration:
                raise InputFileError(self.path, "the file is empty: a CSV header row is required") from None
            except csv.Error as exc:
                if lines.bad:
                    break  # say what is wrong: the encoding, not the csv module's guess
                raise InputFileError(self.path, f"line {reader.line_num}: cannot parse the CSV header: {exc}") from None
            if record:
                header = record
        if lines.bad or header is None:
            raise InputFileError(
                self.path,
                f"line {min(lines.bad, default=1)}: the header is not valid UTF-8 text; "
                "save the file as UTF-8 (in Excel: 'CSV UTF-8')",
            )
        columns = self._check_header(header)
        self.columns = columns
        return self._csv_rows(reader, columns)

    def _check_header(self, header: list[str]) -> tuple[str, ...]:
        columns: list[str] = []
        for i, raw in enumerate(header, start=1):
            name = raw.strip()
            if name.lower() in RESERVED_COLUMNS:
                name = name.lower()
            if not name:
                raise InputFileError(self.path, f"column {i} of the header has no name")
            if name in columns:
                raise InputFileError(self.path, f"column {name!r} appears twice in the header")
            columns.append(name)
        if "to" not in columns:
            raise InputFileError(self.path, f"the header has no 'to' column (columns: {', '.join(columns)})")
        if self.key_column is not None and self.key_column not in columns:
            raise InputFileError(self.path, f"the header has no key column {self.key_column!r}")
        return tuple(columns)

    def _csv_rows(self, reader: Any, columns: tuple[str, ...]) -> Generator[InputRow, None, None]:
        lines = self._lines
        width = len(columns)
        end = reader.line_num
        while True:
            # A record starts on the line after the previous one ended (csv counts the
            # physical lines it consumed, quoted newlines included).
            start = end + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                end = reader.line_num
                yield self._broken(start, f"malformed CSV: {exc}")
                continue
            end = reader.line_num
            if not record:  # a blank line
                continue
            if lines.bad:
                bad = sorted(n for n in lines.bad if start <= n <= end)
                lines.bad = {n for n in lines.bad if n > end}
                if bad:
                    yield self._broken(start, f"line {bad[0]} is not valid UTF-8")
                    continue
            if len(record) != width:
                yield self._broken(start, f"expected {width} columns, found {len(record)}")
                continue
            yield self._keyed(start, dict(zip(columns, record, strict=True)))

    # -- JSONL ----------------------------------------------------------------------------

    def _jsonl_rows(self) -> Generator[InputRow, None, None]:
        lines = self._lines
        for text in lines:
            line = lines.count
            if not text.strip():
                continue
            if line in lines.bad:
                lines.bad.discard(line)
                yield self._broken(line, "the line is not valid UTF-8")
                continue
            try:
                obj = _json_decoder.decode(text)
            except msgspec.DecodeError as exc:
                yield self._broken(line, f"not valid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                yield self._broken(line, f"expected a JSON object, found {type(obj).__name__}")
                continue
            yield self._keyed(line, obj)


def read_rows(
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    key_column: str | None = None,
    track_duplicates: bool = True,
) -> RowReader:
    """Stream the rows of a CSV (with a header) or JSON Lines file.

    ``fmt`` is ``"csv"`` or ``"jsonl"``, by default from the extension (``.csv``; ``.jsonl``
    or ``.ndjson``). Files are UTF-8, a BOM is tolerated. ``key_column`` names the column whose
    value keys the row (it must be unique, non-empty, not start with ``#``, at most 256
    printable characters); without it the key is the line number. Raises
    :class:`InputFileError` at once if the file cannot be opened, or a CSV file has no header,
    no ``to`` column or no ``key_column``. A repeated key is that row's error; finding one means
    remembering every key (in a temporary SQLite table: a few MB of memory whatever the size, see
    :class:`~bwasync.campaign._seenkeys.SeenKeys`, but some time), so a caller that detects
    duplicates itself (the journal's primary key does) passes ``track_duplicates=False``.

    >>> for row in read_rows("list.csv"):                # doctest: +SKIP
    ...     if row.error: print(row.line, row.error)
    """
    p = os.fspath(path)
    if fmt is None:
        fmt = _EXTENSIONS.get(os.path.splitext(p)[1].lower())
        if fmt is None:
            raise InputFileError(p, "cannot tell the format from the extension: use .csv, .jsonl or .ndjson, or fmt=")
    elif fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt must be 'csv' or 'jsonl', not {fmt!r}")
    return RowReader(p, fmt, key_column, track_duplicates)


# --- Templates -----------------------------------------------------------------------------------


class Template:
    """A message template with plain ``{name}`` fields, safe against format-string injection.

    >>> Template("Hi {first_name}, your code is {code}").render({"first_name": "Ann", "code": 42})
    'Hi Ann, your code is 42'

    Only plain identifiers are allowed in braces: attribute or index access (``{a.b}``,
    ``{a[0]}``), conversions (``{a!r}``), format specs (``{a:>10}``) and positional fields
    (``{}``, ``{0}``) are rejected when the template is created, with :class:`TemplateError`.
    ``{{`` and ``}}`` are literal braces. Rendering never calls :meth:`str.format`: the
    template is split once into literals and names and joined with the values, so a value
    containing braces is inserted as is.
    """

    __slots__ = ("_parts", "source", "variables")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TemplateError(f"a template must be a string, not {type(source).__name__}")
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:
            raise TemplateError(f"malformed template: {exc} (write {{{{ and }}}} for literal braces)") from None
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in parsed:
            if name is None:
                parts.append((literal, None))
                continue
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            if not name.isidentifier():
                raise TemplateError(
                    f"{shown} is not allowed: only plain {{name}} fields (no attribute, index or positional fields)"
                )
            if conversion is not None:
                raise TemplateError(f"{shown} is not allowed: conversions (!r, !s, !a) are not supported")
            if spec:
                raise TemplateError(f"{shown} is not allowed: format specifications are not supported")
            parts.append((literal, name))
        self.source = source
        self._parts = tuple(parts)
        #: The variable names the template uses.
        self.variables: frozenset[str] = frozenset(n for _, n in parts if n is not None)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def render(self, values: Mapping[str, Any]) -> str:
        """The text for one row. A variable that is absent (or JSON ``null``) is missing:
        :class:`MissingVariablesError` names every missing one. An empty string is a value.
        Strings are inserted as is, booleans as ``true``/``false``, numbers with ``str()``,
        other JSON values as JSON.
        """
        out: list[str] = []
        missing: list[str] = []
        for literal, name in self._parts:
            out.append(literal)
            if name is None:
                continue
            value = values.get(name)
            if value is None:
                missing.append(name)
            else:
                out.append(_as_text(value))
        if missing:
            raise MissingVariablesError(missing)
        return "".join(out)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return _json_encoder.encode(value).decode()


# --- Requests ------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """Strip strings; an empty string is absent (None). Other JSON values pass through."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def recipients_of(fields: Mapping[str, Any]) -> Any:
    """The ``to`` of a row as a list of strings when it is a string or a list (else as is).

    A string is split on ``;``, ``,`` and whitespace; list items are stripped.
    """
    to = fields.get("to")
    if isinstance(to, str):
        return [n for n in _RECIPIENT_SEPARATORS.split(to.strip()) if n]
    if isinstance(to, (list, tuple)):
        return [n.strip() if isinstance(n, str) else n for n in to]
    return to


def _media_of(fields: Mapping[str, Any]) -> Any:
    media = fields.get("media")
    if isinstance(media, str):
        urls = [u.strip() for u in media.split(";")]
        return [u for u in urls if u] or None
    if isinstance(media, (list, tuple)):
        return [u.strip() if isinstance(u, str) else u for u in media] or None
    return media


def build_request(
    row: InputRow,
    *,
    template: Template | None,
    application_id: str,
    default_from: str | None,
    campaign_id: str,
    priority: Priority | str | None = None,
    expiration: datetime | str | None = None,
) -> MessageRequest:
    """The validated :class:`~bwasync.MessageRequest` for one row.

    ``text`` is the row's own ``text`` if it has a non-blank one, else the rendered
    ``template``; ``from``, ``priority`` and ``expiration`` come from the row, falling back to
    ``default_from``/``priority``/``expiration``. ``tag`` is ``f"{campaign_id}:{row.key}"``.

    Raises :class:`bwasync.ValidationError` listing every problem of the row: its read error
    (field ``row``), missing template variables (field ``text``), a key too long for the tag
    (field ``key``), and every Bandwidth rule it breaks.
    """
    if row.error is not None:
        raise ValidationError([FieldError("row", row.error)])
    fields = row.fields
    errors: list[FieldError] = []

    text = fields.get("text")
    if isinstance(text, str) and not text.strip():
        text = None
    if text is None and template is not None:
        try:
            text = template.render(fields)
        except MissingVariablesError as exc:
            errors.append(FieldError("text", str(exc)))
            text = "?"  # a stand-in so validation reports the other fields, not "needs text"

    tag = f"{campaign_id}:{row.key}"
    if len(tag) > MAX_TAG_LENGTH:
        errors.append(
            FieldError("key", f"key is {len(row.key)} characters: the tag '<campaign id>:<key>' would exceed 1024")
        )
        tag = tag[:MAX_TAG_LENGTH]

    # Loosely typed on purpose: MessageRequest checks every value's type and rule itself.
    kwargs: dict[str, Any] = {
        "application_id": application_id,
        "to": recipients_of(fields),
        "from_": _clean(fields.get("from")) or default_from,
        "text": text,
        "media": _media_of(fields),
        "tag": tag,
        "priority": _clean(fields.get("priority")) or priority,
        "expiration": _clean(fields.get("expiration")) or expiration,
    }
    try:
        request = MessageRequest(**kwargs)
    except ValidationError as exc:
        errors.extend(exc.field_errors)
        raise ValidationError(errors) from None
    except Exception as exc:
        errors.append(_unreadable(exc))
        raise ValidationError(errors) from None
    if errors:
        raise ValidationError(errors)
    return request


def _unreadable(exc: BaseException) -> FieldError:
    return FieldError("row", f"cannot be made into a message ({type(exc).__name__}: {exc})")


def validated_row(row: InputRow, **settings: Any) -> tuple[MessageRequest, bytes]:
    """:func:`build_request` (same keyword arguments) and the request's JSON body.

    Raises :class:`bwasync.ValidationError` for *anything* that makes the row unsendable,
    including a value that validates but cannot be encoded (a lone surrogate): a row is
    invalid, never a crash of the load pass or the dry run.
    """
    request = build_request(row, **settings)
    try:
        body = encode_request(request)
    except Exception as exc:
        raise ValidationError([_unreadable(exc)]) from None
    return request, body


def format_field_errors(errors: Iterable[FieldError]) -> str:
    """``"to: ...; text: ..."``: field errors as one line for the journal's ``error`` column."""
    return "; ".join(map(str, errors))


def row_zone(row: InputRow, column: str | None) -> tuple[str | None, FieldError | None]:
    """The row's time zone from ``column`` (None: no column, or empty), or why it is not one."""
    value = _clean(row.fields.get(column)) if column else None
    if value is None:
        return None, None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return None, FieldError(column or "", f"{value!r} is not a time zone (IANA names: America/Chicago)")
    return str(value), None


def number_flags(numbers: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``(number, reason)`` for each number that cannot exist (:func:`bwasync.compliance.check_number`).

    Needs the ``compliance`` extra (:class:`~bwasync.ConfigurationError` without it).

    >>> number_flags(["+19195551234", "+15550001234"])
    (('+15550001234', 'invalid area code 555: no place uses it'),)
    """
    flags = []
    for number in numbers:
        check = check_number(number)
        if not check.valid:
            flags.append((number, check.reason or "not a valid number"))
    return tuple(flags)


def flag_errors(flags: Iterable[tuple[str, str]]) -> list[FieldError]:
    """A ``to`` field error for each number :func:`number_flags` flagged.

    >>> [e.description for e in flag_errors(number_flags(["+19195551234", "+15550001234"]))]
    ['+15550001234 cannot be a valid number: invalid area code 555: no place uses it']
    """
    return [FieldError("to", f"{number} cannot be a valid number: {reason}") for number, reason in flags]


def prepare_row(
    row: InputRow,
    *,
    template: Template | None,
    application_id: str,
    default_from: str | None,
    campaign_id: str,
    opt_out: frozenset[str] = frozenset(),
    priority: Priority | str | None = None,
    expiration: datetime | str | None = None,
    strict_numbers: bool = False,
    flag_numbers: bool = False,
    timezone_column: str | None = None,
) -> NewRow:
    """The journal row for an input row: ``pending``, ``invalid`` or ``skipped``.

    ``invalid`` when :func:`build_request` raises (``error`` lists the field errors, one line
    as :func:`format_field_errors`), or with ``strict_numbers`` when a recipient cannot be a
    valid number (:func:`number_flags`, :func:`flag_errors`); with ``flag_numbers`` instead, such numbers
    are only noted in ``flagged`` (``(number, reason)``, :func:`number_flags`) and the row is
    sent as usual; ``skipped`` with ``error="opted out"`` when any recipient
    is in ``opt_out`` (normalised numbers, see :func:`load_opt_out`); ``pending`` otherwise.
    ``segments`` is the text's segments (1 for MMS) × recipients: what the row costs against
    the account's rate.
    """
    try:
        request, body = validated_row(
            row,
            template=template,
            application_id=application_id,
            default_from=default_from,
            campaign_id=campaign_id,
            priority=priority,
            expiration=expiration,
        )
    except ValidationError as exc:
        to = recipients_of(row.fields)
        recipients = [n for n in to if isinstance(n, str)] if isinstance(to, list) else []
        sender = _clean(row.fields.get("from")) or default_from
        return NewRow(
            key=row.key,
            line=row.line,
            status=RowStatus.INVALID,
            recipients=recipients,
            sender=sender if isinstance(sender, str) else None,
            request=None,
            error=format_field_errors(exc.field_errors),
        )
    # One check per row, whichever of strict_numbers / flag_numbers asked for it.
    flagged = number_flags(request.to) if strict_numbers or flag_numbers else ()
    impossible = flag_errors(flagged) if strict_numbers else []
    zone, bad_zone = row_zone(row, timezone_column) if timezone_column else (None, None)
    if bad_zone is not None:
        impossible.append(bad_zone)
    if impossible:
        return NewRow(
            key=row.key,
            line=row.line,
            status=RowStatus.INVALID,
            recipients=list(request.to),
            sender=request.from_,
            request=None,
            error=format_field_errors(impossible),
        )
    cost = message_cost(request)
    opted_out = bool(opt_out) and not opt_out.isdisjoint(request.to)
    return NewRow(
        key=row.key,
        line=row.line,
        status=RowStatus.SKIPPED if opted_out else RowStatus.PENDING,
        recipients=request.to,  # the request's own list: nothing else holds the request
        sender=request.from_,
        request=body.decode(),
        segments=cost,
        error="opted out" if opted_out else None,
        zone=zone,
        flagged=flagged,
    )


# --- Opt-out lists -------------------------------------------------------------------------------

_FORMATTING = re.compile(r"[\s\-().]")


def normalize_number(value: str) -> str | None:
    """A phone number written loosely, as E.164; None if it is not one.

    Spaces, dashes, dots and parentheses are dropped; a leading ``00`` becomes ``+``. Without a
    ``+``, a 10-digit number is taken as North American (``+1`` is added: Bandwidth's numbers
    and most US opt-out exports are written that way) and any other digit string as already
    including its country code (``+`` is added).

    >>> normalize_number("(555) 222-3333")
    '+15552223333'
    >>> normalize_number("+44 20 7946 0958")
    '+442079460958'
    """
    s = _FORMATTING.sub("", value)
    if s.startswith("00"):
        s = "+" + s[2:]
    if not s.startswith("+"):
        if not (s.isascii() and s.isdigit()):
            return None
        s = ("+1" if len(s) == 10 else "+") + s
    return s if is_e164(s) else None


def load_opt_out(path: str | os.PathLike[str]) -> frozenset[str]:
    """Numbers that must never be messaged: one per line, normalised by :func:`normalize_number`.

    Blank lines and ``#`` comments (whole-line or trailing) are ignored. A line that is not a
    phone number raises :class:`InputFileError` naming the file and line: a compliance list
    that cannot be read exactly is not silently half-applied.
    """
    p = os.fspath(path)
    numbers: set[str] = set()
    try:
        with open(p, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, start=1):
                entry = line.split("#", 1)[0].strip()
                if not entry:
                    continue
                number = normalize_number(entry)
                if number is None:
                    raise InputFileError(p, f"line {n}: {entry!r} is not a phone number")
                numbers.add(number)
    except OSError as exc:
        raise InputFileError(p, f"cannot read the opt-out file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(p, f"the opt-out file is not valid UTF-8: {exc.reason}") from None
    return frozenset(numbers)
