"""The router sidecar's resource contract: body limit, memory and probe timings that agree.

The router's defaults and the injected sidecar both come from here, so the body the router
accepts always fits the memory the sidecar is given, and a probe never times out while a
large body is being decoded. The figures behind them are in docs/benchmarks.md
("Peak RSS per request body"); ``bench/router_overhead.py`` measures them.
"""

from __future__ import annotations

# The Messages API's own request limit is 32 MB; the router accepts the same, so any request
# the API would take also passes through the router.
MAX_BODY_BYTES = 32 * 1024 * 1024

# JSON structure budget: the number of `{`, `[`, `,` and `:` bytes in a body. Memory and
# decode time grow with the number of values, not with bytes (a 28 MB body of tiny objects
# decodes into ~800 MB of Python objects; 28 MB of base64 image into 28 MB). One million
# covers the API's own maximum of 100,000 messages and any text the context window holds,
# and bounds the decoded form to ~70 MB and ~0.2 s of decoding.
MAX_JSON_STRUCTURE = 1_000_000

# Bodies larger than this are decoded in a worker thread, not on the event loop.
OFF_LOOP_DECODE_BYTES = 256 * 1024

# Bodies in flight: the router holds at most this many bytes of request bodies at once
# (Content-Length, from before the body is read until the answer is sent); others wait up to
# BODY_WAIT_SECONDS for room, then get a 429. Sized so the peak stays under MEMORY_LIMIT
# with margin whatever the concurrency (docs/benchmarks.md, "Peak RSS under concurrent
# maximal bodies"); always at least one body of MAX_BODY_BYTES.
BODY_BYTES_IN_FLIGHT = 40 * 1024 * 1024
BODY_WAIT_SECONDS = 30.0

# Memory: measured peak RSS is ~40 MiB idle plus ~4x the body bytes in flight (raw bytes,
# decoded form, the upstream payload), which BODY_BYTES_IN_FLIGHT bounds: four maximal
# bodies at once peak at ~204 MiB. See docs/benchmarks.md.
MEMORY_REQUEST = "96Mi"
MEMORY_LIMIT = "320Mi"

# Probes: a probe waits this long for an answer, longer than the worst event-loop pause
# (decoding a body at the structure budget), so a busy router is not restarted.
PROBE_TIMEOUT_SECONDS = 5

# A connection that has not sent a complete request head within this time is closed (the
# same bound applies to an idle keep-alive connection between requests).
HEADER_TIMEOUT_SECONDS = 15.0
