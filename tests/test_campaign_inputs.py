"""Campaign inputs on real files: CSV/JSONL parsing, streaming, templates, requests, opt-out."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import bwasync.campaign
from bwasync import Priority, ValidationError
from bwasync.campaign import (
    InputFileError,
    InputRow,
    MissingVariablesError,
    RowStatus,
    Template,
    TemplateError,
    _inputs,
    build_request,
    load_opt_out,
    normalize_number,
    prepare_row,
    read_rows,
)
from bwasync.campaign._inputs import RowReader
from bwasync.campaign._seenkeys import SeenKeys

APP = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def build(row: InputRow, template: str | None = "Hi {name}", **kwargs: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {
        "template": Template(template) if template is not None else None,
        "application_id": APP,
        "default_from": SENDER,
        "campaign_id": "c0ffee",
    }
    options.update(kwargs)
    return build_request(row, **options)  # type: ignore[arg-type]


# --- CSV ----------------------------------------------------------------------------------------------------


def test_csv_rows_with_line_number_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "list.csv", "to,name,code\n+15552223333,Ann,1\n+15552224444,Bob,2\n")
    reader = read_rows(path)
    assert reader.columns == ("to", "name", "code")
    rows = list(reader)
    assert rows == [
        InputRow(2, "2", {"to": "+15552223333", "name": "Ann", "code": "1"}),
        InputRow(3, "3", {"to": "+15552224444", "name": "Bob", "code": "2"}),
    ]
    assert reader.bytes_read == path.stat().st_size and reader.lines_read == 3


def test_csv_bom_crlf_and_header_case(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"\xef\xbb\xbfTo , Name\r\n+15552223333,Ann\r\n")
    reader = read_rows(path)
    assert reader.columns == ("to", "Name")  # reserved columns are matched case-insensitively
    assert list(reader) == [InputRow(2, "2", {"to": "+15552223333", "Name": "Ann"})]


def test_quoted_multiline_fields_keep_real_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "list.csv",
        'to,name,note\n+15552223333,Ann,"first line\nsecond line\nthird"\n\n+15552224444,Bob,plain\n'
        '+15552225555,"Cy\nWho",x\n+15552226666,Di,y\n',
    )
    rows = list(read_rows(path))
    assert [(r.line, r.fields["name"]) for r in rows] == [(2, "Ann"), (6, "Bob"), (7, "Cy\nWho"), (9, "Di")]
    assert rows[0].fields["note"] == "first line\nsecond line\nthird"
    assert [r.key for r in rows] == ["2", "6", "7", "9"]


def test_malformed_csv_rows_are_row_errors(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(
        b"to,name\n+15552223333,Ann\n+15552224444,Bob,extra\n+15552225555\n+1555222\xff6666,Eve\n+15552227777,Fay\n"
    )
    rows = list(read_rows(path))
    assert [(r.line, r.error) for r in rows] == [
        (2, None),
        (3, "expected 2 columns, found 3"),
        (4, "expected 2 columns, found 1"),
        (5, "line 5 is not valid UTF-8"),
        (6, None),
    ]
    assert rows[1].fields == {} and rows[1].key == "3"


def test_file_level_problems_raise_naming_the_file(tmp_path: Path) -> None:
    cases = {
        "missing.csv": None,
        "empty.csv": "",
        "blank.csv": "\n\n",
        "noto.csv": "phone,name\n+15552223333,Ann\n",
        "dup.csv": "to,name,name\n",
        "unnamed.csv": "to,,name\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            write(path, content)
        with pytest.raises(InputFileError) as info:
            read_rows(path)
        assert str(path) in str(info.value) and info.value.path == str(path)
    with pytest.raises(InputFileError, match="'to' column"):
        read_rows(tmp_path / "noto.csv")
    with pytest.raises(InputFileError, match="extension"):
        read_rows(write(tmp_path / "list.txt", "to\n"))
    with pytest.raises(InputFileError, match="key column 'id'"):
        read_rows(write(tmp_path / "k.csv", "to,name\n"), key_column="id")
    # An explicit format overrides the extension.
    assert [r.fields for r in read_rows(write(tmp_path / "list.txt", "to\n+15552223333\n"), fmt="csv")] == [
        {"to": "+15552223333"}
    ]


def test_csv_key_column_errors_are_row_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path / "list.csv",
        "id,to\nA1,+15552223333\n,+15552224444\nA1,+15552225555\n#x,+15552226666\n  B2 ,+15552227777\n"
        + "Z" * 300
        + ",+15552228888\n",
    )
    rows = list(read_rows(path, key_column="id"))
    assert [(r.line, r.key, r.error) for r in rows] == [
        (2, "A1", None),
        (3, "#3", "the key column 'id' is empty"),
        (4, "#4", "duplicate key 'A1' (first on line 2)"),
        (5, "#5", "key '#x' starts with '#', which is reserved"),
        (6, "B2", None),
        (7, "#7", "key is 300 characters; at most 256 are allowed"),
    ]


# --- JSONL ---------------------------------------------------------------------------------------------------


def test_jsonl_rows_with_lists_and_errors(tmp_path: Path) -> None:
    lines = [
        json.dumps({"to": ["+15552223333", "+15552224444"], "name": "Ann", "media": ["https://x.test/a.png"]}),
        "",
        "{not json",
        "[1, 2]",
        json.dumps({"to": "+15552225555", "name": "Bob", "n": 3}),
    ]
    path = tmp_path / "list.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n\xff\xfe\n")
    rows = list(read_rows(path))
    assert [(r.line, r.key) for r in rows] == [(1, "1"), (3, "3"), (4, "4"), (5, "5"), (6, "6")]
    assert rows[0].error is None and rows[0].fields["to"] == ["+15552223333", "+15552224444"]
    assert rows[1].error is not None and rows[1].error.startswith("not valid JSON")
    assert rows[2].error == "expected a JSON object, found list"
    assert rows[3].fields == {"to": "+15552225555", "name": "Bob", "n": 3}
    assert rows[4].error == "the line is not valid UTF-8"


def test_jsonl_key_column(tmp_path: Path) -> None:
    objects = [{"id": 7, "to": "+15552223333"}, {"to": "+15552224444"}, {"id": True, "to": "+1555"}, {"id": "7"}]
    path = write(tmp_path / "list.jsonl", "\n".join(json.dumps(o) for o in objects) + "\n")
    rows = list(read_rows(path, key_column="id"))
    assert [(r.key, r.error) for r in rows] == [
        ("7", None),
        ("#2", "the key column 'id' is missing"),
        ("#3", "the key column 'id' must be a string or an integer, not bool"),
        ("#4", "duplicate key '7' (first on line 1)"),
    ]


# --- Streaming --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_rows_arrive_before_the_file_is_complete(tmp_path: Path, fmt: str) -> None:
    """Through a FIFO: the reader must yield the first row while the writer still holds the rest."""
    fifo = tmp_path / f"list.{fmt}"
    os.mkfifo(fifo)
    first_row_seen = threading.Event()
    waited: list[bool] = []

    def line(i: int) -> str:
        return f"+1555{i:07d},N{i}\n" if fmt == "csv" else json.dumps({"to": f"+1555{i:07d}", "name": f"N{i}"}) + "\n"

    def writer() -> None:
        with open(fifo, "w", encoding="utf-8") as f:
            f.write(("to,name\n" if fmt == "csv" else "") + line(1))
            f.flush()
            # A reader that read the whole file first would still be waiting for EOF here.
            waited.append(first_row_seen.wait(timeout=10))
            for i in range(2, 500):
                f.write(line(i))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reader = read_rows(fifo)
        first = next(reader)
        first_row_seen.set()
        rest = list(reader)
    finally:
        first_row_seen.set()
        thread.join()
    assert waited == [True]
    assert first.fields["name"] == "N1"
    assert len(rest) == 498


def test_reading_a_large_file_uses_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("to,first_name,code,note\n")
        for i in range(20_000):
            f.write(f"+1555{i:07d},Name{i},{i},{'x' * 500}\n")
    size = path.stat().st_size
    count = 0
    tracemalloc.start()
    try:
        for row in read_rows(path):
            count += 1
            assert row.error is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < size / 50, f"peak {peak} bytes for a {size}-byte file"


def test_finding_duplicate_keys_does_not_remember_keys_in_memory(tmp_path: Path) -> None:
    # A dict of 15,000 keys would hold ~2 MB of Python objects; the reader holds one batch of
    # rows (the keys live in SQLite's bounded page cache, outside Python's heap).
    path = tmp_path / "keyed.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,to\n")
        for i in range(15_000):
            f.write(f"customer-{i:012d},+1555{i:07d}\n")
        f.write("customer-000000000007,+15550000007\n")
    tracemalloc.start()
    try:
        with read_rows(path, key_column="id") as reader:
            errors = [row.error for row in reader if row.error]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert errors == ["duplicate key 'customer-000000000007' (first on line 9)"]
    assert peak < 800_000, f"peak {peak} bytes"


# --- Templates --------------------------------------------------------------------------------------------------


def test_template_renders_plain_fields() -> None:
    t = Template("Hi {first_name}, your code is {code}. {{literal}}")
    assert t.variables == {"first_name", "code"}
    assert t.render({"first_name": "Ann", "code": 42, "unused": "x"}) == "Hi Ann, your code is 42. {literal}"
    assert t.render({"first_name": "", "code": True}) == "Hi , your code is true. {literal}"
    # A value is inserted as is, never interpreted as a template.
    assert (
        t.render({"first_name": "{code.__class__}", "code": "{0}"})
        == "Hi {code.__class__}, your code is {0}. {literal}"
    )
    assert Template("{a}").render({"a": [1, "b"]}) == '[1,"b"]'


@pytest.mark.parametrize(
    "source",
    [
        "{name.__class__.__init__.__globals__}",
        "{name[0]}",
        "{name!r}",
        "{name:>10}",
        "{name:{width}}",
        "{}",
        "{0}",
        "{ name }",
        "unbalanced {",
        "unbalanced }",
    ],
)
def test_template_injection_is_rejected_at_parse_time(source: str) -> None:
    with pytest.raises(TemplateError):
        Template(source)


def test_missing_variables_are_named() -> None:
    t = Template("Hi {first_name} {last_name}, code {code}")
    with pytest.raises(MissingVariablesError) as info:
        t.render({"code": 1, "last_name": None})
    assert info.value.names == ("first_name", "last_name")
    assert "first_name, last_name" in str(info.value)


# --- Requests ---------------------------------------------------------------------------------------------------


def test_build_request_from_a_csv_row(tmp_path: Path) -> None:
    path = write(
        tmp_path / "list.csv",
        "to,from,name,media,priority,expiration\n"
        '"+15552223333; +15552224444,+15552225555 +15552226666",,Ann,'
        "https://x.test/a.png; https://x.test/b.png,high,2099-01-01T00:00:00Z\n"
        "+15552223333,+15559990000,Bob,,,\n",
    )
    first, second = read_rows(path)
    request = build(first)
    assert request.to == ["+15552223333", "+15552224444", "+15552225555", "+15552226666"]
    assert request.from_ == SENDER
    assert request.text == "Hi Ann"
    assert request.media == ["https://x.test/a.png", "https://x.test/b.png"]
    assert request.tag == "c0ffee:2"
    assert request.priority is Priority.HIGH
    assert request.expiration is not None and request.expiration.year == 2099
    request = build(second, priority="default")
    assert request.from_ == "+15559990000" and request.media is None and request.priority is Priority.DEFAULT


def test_row_text_overrides_the_template() -> None:
    row = InputRow(5, "k", {"to": "+15552223333", "text": "Custom {not a template}"})
    assert build(row).text == "Custom {not a template}"
    assert build(InputRow(5, "k", {"to": "+15552223333", "text": "  ", "name": "Ann"})).text == "Hi Ann"


def test_build_request_reports_every_problem() -> None:
    row = InputRow(9, "9", {"to": "+1555 not-a-number", "from": "+1invalid", "priority": "urgent"})
    with pytest.raises(ValidationError) as info:
        build(row)
    fields = [e.field_name for e in info.value.field_errors]
    assert fields == ["text", "from", "to", "priority"]  # "+1555" is E.164; "not-a-number" is not
    assert info.value.field_errors[0].description == "missing template variable: name"

    with pytest.raises(ValidationError) as info:
        build(InputRow(3, "3", {}, "expected 2 columns, found 3"))
    assert [(e.field_name, e.description) for e in info.value.field_errors] == [("row", "expected 2 columns, found 3")]

    with pytest.raises(ValidationError) as info:
        build(InputRow(3, "k" * 1020, {"to": "+15552223333", "name": "x"}))
    assert [e.field_name for e in info.value.field_errors] == ["key"]


def test_prepare_row_statuses_and_segments() -> None:
    common = {
        "template": Template("{msg}"),
        "application_id": APP,
        "default_from": SENDER,
        "campaign_id": "c0ffee",
        "opt_out": frozenset({"+15550000009"}),
    }
    long_text = "x" * 200  # two GSM-7 segments
    pending = prepare_row(InputRow(2, "2", {"to": "+15550000001;+15550000002", "msg": long_text}), **common)  # type: ignore[arg-type]
    assert pending.status is RowStatus.PENDING
    assert pending.segments == 4  # 2 segments x 2 recipients
    assert pending.recipients == ["+15550000001", "+15550000002"] and pending.sender == SENDER
    assert pending.request is not None and json.loads(pending.request)["tag"] == "c0ffee:2"

    skipped = prepare_row(InputRow(3, "3", {"to": "+15550000001,+15550000009", "msg": "hi"}), **common)  # type: ignore[arg-type]
    assert skipped.status is RowStatus.SKIPPED and skipped.error == "opted out"

    invalid = prepare_row(InputRow(4, "4", {"to": "+15550000001"}), **common)  # type: ignore[arg-type]
    assert invalid.status is RowStatus.INVALID and invalid.request is None
    assert invalid.error == "text: missing template variable: msg"
    assert invalid.recipients == ["+15550000001"]

    mms = prepare_row(InputRow(5, "5", {"to": "+15550000001", "msg": long_text, "media": "https://x.test/a"}), **common)  # type: ignore[arg-type]
    assert mms.segments == 1


# --- Opt-out ---------------------------------------------------------------------------------------------------


def test_normalize_number() -> None:
    assert normalize_number("(555) 222-3333") == "+15552223333"
    assert normalize_number("1-555-222-3333") == "+15552223333"
    assert normalize_number("+44 20 7946 0958") == "+442079460958"
    assert normalize_number("0044 20 7946 0958") == "+442079460958"
    assert normalize_number("555.222.3333") == "+15552223333"
    assert normalize_number("call me") is None
    assert normalize_number("+0123") is None


def test_load_opt_out(tmp_path: Path) -> None:
    path = tmp_path / "stop.txt"
    path.write_bytes("\ufeff# unsubscribed\n\n(555) 222-3333\n+15552224444  # via STOP\n  \n".encode())
    assert load_opt_out(path) == frozenset({"+15552223333", "+15552224444"})
    write(path, "+15552223333\nphone\n")
    with pytest.raises(InputFileError, match="line 2: 'phone' is not a phone number"):
        load_opt_out(path)
    with pytest.raises(InputFileError, match="cannot read"):
        load_opt_out(tmp_path / "missing.txt")


def test_campaign_public_names() -> None:
    exported = bwasync.campaign.__all__
    assert len(exported) == len(set(exported))
    assert set(exported) == {name for name in vars(bwasync.campaign) if not name.startswith("_")}


def test_duplicate_tracking_can_be_left_to_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,to\nk,+15550000001\nk,+15550000002\n", encoding="utf-8")
    with read_rows(path, key_column="id") as reader:
        assert [r.error is None for r in reader] == [True, False]
    with read_rows(path, key_column="id", track_duplicates=False) as reader:
        rows = list(reader)
    assert [(r.key, r.error) for r in rows] == [("k", None), ("k", None)]
    assert reader._seen is None  # nothing remembered


def test_duplicate_keys_are_found_exactly_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keys are checked a batch at a time: duplicates inside a batch, across batches, and a
    # batch that ends exactly at the end of the file are all reported with the first line.
    monkeypatch.setattr(_inputs, "KEY_CHECK_BATCH", 3)
    keys = ["a", "b", "a", "c", "d", "b", "e", "a", "f"]
    path = tmp_path / "d.csv"
    path.write_text("id,to\n" + "".join(f"{k},+1555000000{i}\n" for i, k in enumerate(keys)), encoding="utf-8")
    with read_rows(path, key_column="id") as reader:
        rows = list(reader)
    assert [r.line for r in rows] == list(range(2, 11))
    assert [(r.key, r.error) for r in rows if r.error] == [
        ("#4", "duplicate key 'a' (first on line 2)"),
        ("#7", "duplicate key 'b' (first on line 3)"),
        ("#9", "duplicate key 'a' (first on line 2)"),
    ]
    assert [r.key for r in rows if not r.error] == ["a", "b", "c", "d", "e", "f"]


def test_seen_keys_is_exact_and_keeps_first_lines() -> None:
    seen = SeenKeys()
    try:
        many = [(f"key-{i}", i + 2) for i in range(5000)]
        assert seen.first_lines(many) == [line for _, line in many]  # no false duplicates
        assert seen.first_lines([("key-7", 6000), ("new", 6001), ("new", 6002), ("key-4999", 6003)]) == [
            9,
            6001,
            6001,
            5001,
        ]
    finally:
        seen.close()
    with pytest.raises(RuntimeError):
        seen.first_lines([("x", 1)])


def test_a_read_error_mid_batch_comes_after_the_rows_read_before_it() -> None:
    def rows() -> Iterator[InputRow]:
        yield InputRow(2, "a", {})
        yield InputRow(3, "a", {})
        raise InputFileError("f.csv", "read failed")

    seen = SeenKeys()
    out = RowReader._unique(None, rows(), seen)  # type: ignore[arg-type]
    assert next(out).error is None
    assert next(out).error == "duplicate key 'a' (first on line 2)"
    with pytest.raises(InputFileError):
        next(out)
    seen.close()
