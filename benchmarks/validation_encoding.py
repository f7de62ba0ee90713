"""validation-encoding: µs per message to validate and encode one create request.

bwasync (a msgspec Struct whose ``__post_init__`` checks every Bandwidth rule, then one shared
``msgspec.json.Encoder``) against the official SDK (a pydantic v2 model, then ``to_json()``), each
from keyword arguments and from a wire-named dict. Two more rows split bwasync's cost into
validation and encoding. Measured with ``timeit``: each round runs every case once (alternating),
each time ``number`` calls sized by ``autorange``; the median over rounds is reported.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from typing import Any

from bwasync import MessageRequest
from bwasync._models import encode_request

from ._common import Config, ScenarioResult, Table, alternate, median, paired_ratios, spread
from ._data import APPLICATION_ID, SENDER, recipient, request_dict, text

NAME = "validation-encoding"
TITLE = "validate + encode one create request: bwasync (msgspec) vs the official SDK (pydantic)"
ROUNDS = {"full": 5, "quick": 3, "smoke": 1}
#: Seconds ``autorange`` aims each timing at (a smoke run uses a fixed small number instead).
ROUND_SECONDS = {"full": 0.15, "quick": 0.1, "smoke": 0.0}


def cases() -> dict[str, Callable[[], Any]]:
    from bandwidth.models.message_request import MessageRequest as SdkMessageRequest

    to, body = recipient(7), text(7)
    wire = request_dict(7)
    prebuilt = MessageRequest(application_id=APPLICATION_ID, to=[to], from_=SENDER, text=body)
    return {
        "bwasync: MessageRequest(...) + encode_request": lambda: encode_request(
            MessageRequest(application_id=APPLICATION_ID, to=[to], from_=SENDER, text=body)
        ),
        "bwasync: MessageRequest.from_dict(wire) + encode_request": lambda: encode_request(
            MessageRequest.from_dict(wire)
        ),
        "sdk: MessageRequest(...).to_json()": lambda: SdkMessageRequest(
            application_id=APPLICATION_ID, to=[to], var_from=SENDER, text=body
        ).to_json(),
        "sdk: MessageRequest.from_dict(wire).to_json()": lambda: SdkMessageRequest.from_dict(wire).to_json(),
        "bwasync, validation only: MessageRequest(...)": lambda: MessageRequest(
            application_id=APPLICATION_ID, to=[to], from_=SENDER, text=body
        ),
        "bwasync, encoding only: encode_request(prebuilt)": lambda: encode_request(prebuilt),
    }


def run(cfg: Config) -> ScenarioResult:
    started = time.perf_counter()
    rounds = cfg.pick(ROUNDS)
    aim = cfg.pick(ROUND_SECONDS)
    funcs = cases()
    numbers: dict[str, int] = {}
    for name, fn in funcs.items():
        fn()  # fail fast if a case is broken (e.g. the SDK rejects the input)
        if aim > 0:
            number, elapsed = timeit.Timer(fn).autorange()
            numbers[name] = max(1, int(number * aim / max(elapsed, 1e-9)))
        else:
            numbers[name] = 200

    def timed(name: str) -> Callable[[], float]:
        timer = timeit.Timer(funcs[name])
        return lambda: timer.timeit(numbers[name]) / numbers[name] * 1e6

    samples = alternate({name: timed(name) for name in funcs}, rounds=rounds, warmup=False)
    result = ScenarioResult(NAME, TITLE, params={"rounds": rounds, "seconds per timing": aim, "loop": "none"})
    table = Table("per message", ["case", "µs (median)", "min–max", "calls/timing"])
    for name, values in samples.items():
        table.add(name, f"{median(values):.2f}", spread(values), f"{numbers[name]:,}")
    result.tables.append(table)
    bw_kw, bw_dict = (
        "bwasync: MessageRequest(...) + encode_request",
        "bwasync: MessageRequest.from_dict(wire) + encode_request",
    )
    sdk_kw, sdk_dict = "sdk: MessageRequest(...).to_json()", "sdk: MessageRequest.from_dict(wire).to_json()"
    ratios = Table(
        "sdk / bwasync (median of per-round ratios; > 1 means bwasync is faster)", ["pair", "ratio", "min–max"]
    )
    for label, sdk, bw in (("keywords", sdk_kw, bw_kw), ("from a dict", sdk_dict, bw_dict)):
        r = paired_ratios(samples[sdk], samples[bw])
        ratios.add(label, f"{median(r):.2f}×", spread(r))
        result.data[f"ratio sdk/bwasync {label}"] = median(r)
    result.tables.append(ratios)
    result.data["samples_us"] = samples
    result.notes.append(
        "same message in every case: one recipient, a 60-character GSM-7 text; bwasync checks every Bandwidth "
        "rule (E.164 or sender ID, lengths, recipients...); the SDK's model checks types and the spec's length "
        "limits but not number formats (it accepts to=['bogus'], from='???')"
    )
    result.elapsed = time.perf_counter() - started
    return result
