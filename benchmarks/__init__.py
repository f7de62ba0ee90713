"""bwasync's benchmark harness: ``python -m benchmarks [--quick] [--json out.json] [--only NAME ...]``.

Scenarios (one module each, every one exposing ``run(cfg) -> ScenarioResult``):

* ``client-overhead``      bwasync ``send_many`` vs a bare aiohttp loop vs the official SDK, zero latency
* ``latency-bound``        the same at 100 ms server latency and 1000-2000 requests in flight
* ``memory``               one million messages streamed through ``send_many``: peak RSS
* ``limiter-accuracy``     ``rate=1000``: achieved rate and the largest burst, from per-send timestamps
* ``validation-encoding``  validate + encode one request: msgspec Structs vs the SDK's pydantic models

How it measures (see ``shared/PERFORMANCE.md``): servers run in their own process so they get the
other core; contenders are run alternately (A B A B ...) after a discarded warm-up and the medians
and the median of the per-round ratios are reported; every load loop is bounded in count and in
time. Targets are printed as PASS/MISS lines, never asserted.
"""
