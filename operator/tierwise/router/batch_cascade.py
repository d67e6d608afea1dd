"""Batch cascades: a multi-step route run over the Message Batches API, one batch to the client.

The items go to the route's first step as one upstream batch (each item's params built for
that step, as for an interactive request); when it ends, the items whose answers escalate
go out as a new batch to the next step, and so on. The client sees one batch
(``msgbatch_tw…``) whose results carry, per item, the step that answered it, its
escalations and its cost at batch prices (``tierwise`` in the line). The router's batch
endpoints (``router.batches``) and the eval's ``useBatchAPI`` mode (``evals.batch``) both run
this one machine (``BatchCascadeRun``); they differ only in who drives it.

Durability. A batch lives in its own directory of the store (``BatchStore``): the original
requests (``requests.jsonl``, written as the body arrives, never held whole in memory), the
small state (``state.json``) and the final results of each step. Nothing is kept in memory
between calls. Every transition is written before the upstream call it leads to:

* a step is recorded as an *intent* (its items, no upstream id) and marked ``sentAt`` before
  its upstream batch is created, then its id is recorded; a crash or an upstream failure in
  between leaves an intent with ``sentAt``, and the next run looks for the orphan among the
  upstream's batches (same size, created since ``sentAt``, claimed by no other batch) and
  adopts it before it would submit again;
* a step's results are read, priced and written (finals to ``step-K.jsonl``, the next step's
  intent and the item totals to ``state.json``) in one atomic replace; only then are the
  metrics counted, so a failure before the commit recounts nothing and one after it never
  reads the step again.

An upstream batch that no longer exists (the upstream lost it) is submitted again. A config
reload that removes the route, or the step or tier a batch is at, ends the items still in
flight with an ``errored`` result that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tierwise.pricing import Usage, cost_usd, format_usd
from tierwise.router.body import decode_json_object
from tierwise.router.cascade import route_mixes_models
from tierwise.router.errors import ERROR_TYPES, RouterError, error_body, invalid_request
from tierwise.router.escalation import escalation_reason
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request import build_step_request
from tierwise.router.runtime import Runtime
from tierwise.router.upstream import BATCHES_PATH, Reply, UpstreamFailure, created_batch_id
from tierwise.routerconfig import Route, Tier

log = logging.getLogger("tierwise.router")

PREFIX = "msgbatch_tw"
# Anthropic's limits and retention ("Batch limitations", platform.claude.com/docs/en/
# build-with-claude/batch-processing, read 2026-12-06): a batch holds at most 100,000
# requests or 256 MB, whichever comes first; results stay available 29 days after creation.
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1000 * 1000
RETENTION = timedelta(days=29)
# Disk the store may use: under the injected sidecar's 2 GiB emptyDir (whose overflow would
# evict the pod), with room for one maximal batch (received, then checked: twice its size).
DEFAULT_MAX_STORE_BYTES = 1536 * 1024 * 1024
EXPIRY = timedelta(hours=24)
MAX_CUSTOM_ID_LENGTH = 64
FINAL_TYPES = ("succeeded", "errored", "canceled", "expired")
# An orphan (an upstream batch created by a run that failed before recording its id) is
# looked for among the upstream batches created since ``sentAt`` minus this clock skew.
ORPHAN_SKEW = timedelta(minutes=2)
ORPHAN_PAGE = 100


def now_iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


def parse_iso(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def new_cascade_id() -> str:
    """``msgbatch_tw`` + 12 hex digits of milliseconds + 12 random: ids sort by creation."""
    return f"{PREFIX}{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def errored(error_type: str, message: str) -> dict[str, Any]:
    """A batch item's ``errored`` result in the API's shape."""
    return {"type": "errored", "error": loads(error_body(error_type, message))}


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Entry:
    """One batch in the store: a directory ``<owner>/<created ms>-<id>``."""

    path: Path
    id: str
    created_ms: int

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def requests_path(self) -> Path:
        return self.path / "requests.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.jsonl"

    @property
    def passthrough(self) -> bool:
        return not self.id.startswith(PREFIX)

    def step_path(self, index: int) -> Path:
        return self.path / f"step-{index}.jsonl"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` by rename, so a crash never leaves half a file."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class BatchStore:
    """Batches by owner, one directory each; nothing is cached in memory.

    ``owner`` is the caller's identity (a digest of its key, as the response cache uses):
    a batch is found only under its owner, so another caller's id is simply not there.
    Entries older than ``RETENTION`` are deleted (swept at most once a minute). Without a
    directory the store lives in a temporary one removed with the process.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        max_bytes: int = DEFAULT_MAX_STORE_BYTES,
    ) -> None:
        self.max_bytes = max_bytes
        self._directory = Path(directory) if directory is not None else None
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._root: Path | None = None
        self._swept = 0.0
        if self._directory is not None:
            _ = self.root  # a configured directory must be usable from the start

    @property
    def root(self) -> Path:
        """The directory, made on first use (a temporary one only when a batch needs it, so
        a router without batches runs on a read-only filesystem)."""
        if self._root is None:
            if self._directory is None:
                self._temporary = tempfile.TemporaryDirectory(prefix="tierwise-batches-")
                root = Path(self._temporary.name)
            else:
                root = self._directory
            root.mkdir(parents=True, exist_ok=True)
            (root / "_incoming").mkdir(exist_ok=True)
            (root / "_claimed").mkdir(exist_ok=True)
            self._root = root
        return self._root

    def _owner(self, owner: str) -> Path:
        if not owner.isalnum():
            raise ValueError("an owner is a digest")
        return self.root / f"o-{owner}"

    def incoming(self) -> Path:
        """A fresh directory for a batch being received."""
        path = self.root / "_incoming" / secrets.token_hex(8)
        path.mkdir()
        return path

    def add(self, owner: str, batch_id: str, directory: Path) -> Entry:
        """Move a received batch's directory into the owner's batches under ``batch_id``."""
        created = int(time.time() * 1000)
        home = self._owner(owner)
        home.mkdir(exist_ok=True)
        path = home / f"{created:013d}-{batch_id}"
        os.replace(directory, path)
        return Entry(path, batch_id, created)

    def find(self, owner: str, batch_id: str) -> Entry | None:
        home = self._owner(owner)
        if not home.is_dir():
            return None
        with os.scandir(home) as names:
            for name in names:
                if name.name.partition("-")[2] == batch_id and name.is_dir():
                    return _entry(Path(name.path))
        return None

    def entries(self, owner: str) -> list[Entry]:
        """The owner's batches, newest first (names only: nothing is read)."""
        self.sweep()
        home = self._owner(owner)
        if not home.is_dir():
            return []
        with os.scandir(home) as names:
            found = [_entry(Path(n.path)) for n in names if n.is_dir() and "-" in n.name]
        return sorted(found, key=lambda e: (e.created_ms, e.id), reverse=True)

    def remove(self, entry: Entry) -> None:
        for claimed in _claims(entry):
            (self.root / "_claimed" / claimed).unlink(missing_ok=True)
        shutil.rmtree(entry.path, ignore_errors=True)

    def claim(self, upstream_id: str, entry: Entry) -> bool:
        """Mark an upstream batch as part of ``entry``; False when another batch holds it."""
        marker = self.root / "_claimed" / upstream_id
        try:
            with open(marker, "x", encoding="utf-8") as handle:
                handle.write(str(entry.path))
        except FileExistsError:
            return marker.read_text(encoding="utf-8") == str(entry.path)
        return True

    def claimed(self, upstream_id: str) -> bool:
        return (self.root / "_claimed" / upstream_id).exists()

    def usage(self) -> int:
        """Bytes the store holds on disk."""
        total = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(folder, name)).st_size
        return total

    def make_room(self, wanted: int) -> int:
        """Free space for ``wanted`` more bytes by deleting the oldest *ended* cascades
        (before their retention); returns the bytes still free (negative: not enough)."""
        self.sweep()
        free = self.max_bytes - self.usage()
        if free >= wanted:
            return free
        ended = []
        for home in self.root.glob("o-*"):
            for path in home.iterdir():
                entry = _entry(path)
                if not entry.passthrough and _ended(entry):
                    ended.append(entry)
        for entry in sorted(ended, key=lambda e: e.created_ms):
            size = sum(p.stat().st_size for p in entry.path.iterdir() if p.is_file())
            log.warning("batch storage full: deleting ended batch %s early", entry.id)
            self.remove(entry)
            free += size
            if free >= wanted:
                break
        return free

    def sweep(self, *, force: bool = False) -> int:
        """Delete batches past the retention and abandoned uploads; returns how many."""
        now = time.time()
        if not force and now - self._swept < 60:
            return 0
        self._swept = now
        horizon = (now - RETENTION.total_seconds()) * 1000
        removed = 0
        for home in self.root.glob("o-*"):
            for path in home.iterdir():
                entry = _entry(path)
                if entry.created_ms < horizon:
                    self.remove(entry)
                    removed += 1
        for upload in (self.root / "_incoming").iterdir():
            if now - upload.stat().st_mtime > 3600:
                shutil.rmtree(upload, ignore_errors=True)
        return removed


def _entry(path: Path) -> Entry:
    created, _, batch_id = path.name.partition("-")
    return Entry(path, batch_id, int(created) if created.isdigit() else 0)


def _ended(entry: Entry) -> bool:
    try:
        return loads(entry.state_path.read_bytes()).get("endedAt") is not None
    except (OSError, ValueError):
        return False


def _claims(entry: Entry) -> list[str]:
    try:
        state = loads(entry.state_path.read_bytes())
    except (OSError, ValueError):
        return [entry.id] if entry.passthrough else []
    if entry.passthrough:
        return [entry.id]
    return [s["batch"] for s in state.get("steps", []) if s.get("batch")]


def load_state(entry: Entry) -> dict[str, Any]:
    return loads(entry.state_path.read_bytes())


def save_state(entry: Entry, state: Mapping[str, Any]) -> None:
    write_atomically(entry.state_path, dumps(state))


# --------------------------------------------------------------------------- the body


def _items(path: Path, chunk: int = 1 << 20) -> Iterator[tuple[int, str]]:
    """The items of ``{"requests": [...]}`` in a file, one at a time (bounded memory), as
    their JSON text (decoded by the caller with the router's body rules)."""
    import json

    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
        buffer = handle.read(chunk)
        position = 0
        eof = len(buffer) < chunk

        def more() -> bool:
            nonlocal buffer, position, eof
            if eof:
                return False
            data = handle.read(chunk)
            eof = len(data) < chunk
            buffer = buffer[position:] + data
            position = 0
            return bool(data)

        def skip() -> str:
            nonlocal position
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n":
                    position += 1
                if position < len(buffer) or not more():
                    return buffer[position] if position < len(buffer) else ""

        def value() -> tuple[Any, str]:
            nonlocal position
            skip()
            while True:
                try:
                    parsed, end = decoder.raw_decode(buffer, position)
                except ValueError:
                    if more():
                        continue
                    raise invalid_request("The request body is not valid JSON") from None
                except RecursionError:
                    raise invalid_request("The request is nested too deeply") from None
                text = buffer[position:end]
                position = end
                return parsed, text

        def expect(char: str) -> None:
            nonlocal position
            if skip() != char:
                raise invalid_request('requests: a batch body is {"requests": [...]}')
            position += 1

        expect("{")
        seen_requests = False
        while True:
            if skip() == "}":
                position += 1
                break
            key, _ = value()
            expect(":")
            if key != "requests":
                raise invalid_request(f"{key}: Extra inputs are not permitted")
            expect("[")
            seen_requests = True
            index = 0
            if skip() == "]":
                position += 1
            else:
                while True:
                    yield index, value()[1]
                    index += 1
                    following = skip()
                    position += 1
                    if following == "]":
                        break
                    if following != ",":
                        raise invalid_request("The request body is not valid JSON")
            if skip() == ",":
                position += 1
        if skip() != "":
            raise invalid_request("The request body is not valid JSON (data after the object)")
        if not seen_requests:
            raise invalid_request("requests: Field required")


ItemCheck = Callable[[int, Mapping[str, Any]], str]  # returns the item's route name


def store_requests(body: Path, directory: Path, check: ItemCheck) -> tuple[str, int]:
    """Validate a received batch body item by item and write ``requests.jsonl``.

    Returns (route name, item count). ``check`` validates one item's params and names its
    route; every item must name the same. Runs in a worker thread.
    """
    ids: set[str] = set()
    route: str | None = None
    count = 0
    with open(directory / "requests.jsonl", "wb") as out:
        for index, text in _items(body):
            if index >= MAX_BATCH_REQUESTS:
                raise invalid_request(
                    f"requests: a batch holds at most {MAX_BATCH_REQUESTS} requests"
                )
            if not text.startswith("{"):
                raise invalid_request(f"requests.{index}: Input should be a valid dictionary")
            try:  # the same rules as any request body (numbers, surrogates, structure)
                item = decode_json_object(text.encode("utf-8", "surrogatepass"))
            except RouterError as exc:
                raise RouterError(exc.status, f"requests.{index}: {exc.message}") from exc
            custom_id = item.get("custom_id")
            if custom_id is None:
                raise invalid_request(f"requests.{index}.custom_id: Field required")
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= MAX_CUSTOM_ID_LENGTH:
                raise invalid_request(
                    f"requests.{index}.custom_id: must be a string of 1 to "
                    f"{MAX_CUSTOM_ID_LENGTH} characters"
                )
            if custom_id in ids:
                raise invalid_request(
                    f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}; "
                    "custom_id values must be unique within a batch"
                )
            ids.add(custom_id)
            params = item.get("params")
            if not isinstance(params, dict):
                raise invalid_request(f"requests.{index}.params: Field required")
            extra = set(item) - {"custom_id", "params"}
            if extra:
                raise invalid_request(
                    f"requests.{index}.{sorted(extra)[0]}: Extra inputs are not permitted"
                )
            name = check(index, params)
            if route is not None and name != route:
                raise invalid_request(
                    f"a batch goes to one route; its requests select {route} and {name}"
                )
            route = name
            out.write(dumps({"custom_id": custom_id, "params": params}) + b"\n")
            count += 1
    if route is None:
        raise invalid_request("requests: a batch needs a non-empty list of requests")
    return route, count


def read_requests(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield loads(line)


def write_step_payload(
    entry: Entry, index: int, items: set[str] | None, build: Callable[[Any], Any]
) -> Path:
    """The upstream batch body of one step, written to disk item by item."""
    path = entry.path / f"submit-{index}.json"
    with open(path, "wb") as out:
        out.write(b'{"requests":[')
        first = True
        for request in read_requests(entry.requests_path):
            if items is not None and request["custom_id"] not in items:
                continue
            if not first:
                out.write(b",")
            first = False
            out.write(
                dumps({"custom_id": request["custom_id"], "params": build(request["params"])})
            )
        out.write(b"]}")
    return path


# --------------------------------------------------------------------------- the machine


# One upstream call: (tier, path, payload, method, expect_json) -> Reply.
UpstreamCall = Callable[[Tier, str, "bytes | Path | None", str, bool], Awaitable[Reply]]


def new_state(batch_id: str, route: str, count: int, headers: Mapping[str, str]) -> dict[str, Any]:
    """A cascade's state before its first step: one intent holding every item."""
    now = datetime.now(UTC)
    return {
        "id": batch_id,
        "route": route,
        "createdAt": now_iso(now),
        "expiresAt": now_iso(now + EXPIRY),
        "headers": dict(headers),  # the creator's anthropic-version/-beta, for every step
        "count": count,
        "counts": {t: 0 for t in FINAL_TYPES},
        "costUsd": "0",
        "escalations": 0,
        "steps": [_intent(0, None)],
        "carry": {},  # per escalated item: its cost, escalations and step records so far
        "cancelInitiatedAt": None,
        "endedAt": None,
    }


def _intent(index: int, items: list[str] | None) -> dict[str, Any]:
    return {"step": index, "items": items, "batch": None, "tier": None, "sentAt": None}


@dataclass
class Counted:
    """What a committed step adds to the metrics (applied after the state is saved)."""

    usages: list[tuple[str, Usage, Decimal]]
    escalations: list[tuple[str, str]]
    counterfactual: list[Usage]


class BatchCascadeRun:
    """Moves one batch cascade forward as far as the upstream allows; see the module doc."""

    def __init__(
        self,
        store: BatchStore,
        entry: Entry,
        runtime: Runtime,
        metrics: RouterMetrics,
        call: UpstreamCall,
    ) -> None:
        self.store = store
        self.entry = entry
        self.runtime = runtime
        self.metrics = metrics
        self.call = call

    async def advance(self) -> dict[str, Any]:
        """Run until the cascade waits on the upstream or ends; returns the state.

        ``UpstreamFailure`` (an outage) propagates with the state saved as it stands.
        """
        state = load_state(self.entry)
        while state["endedAt"] is None:
            if not await self._step(state):
                break
        return state

    async def _step(self, state: dict[str, Any]) -> bool:
        """One transition; False when the cascade has to wait for the upstream."""
        current = state["steps"][-1]
        problem = self._config_problem(state, current)
        if problem is not None:
            self._end_items(state, current, errored("api_error", problem), "errored")
            return True
        if current["batch"] is None:
            return await self._submit(state, current)
        tier = self.runtime.config.tiers[current["tier"]]
        path = f"{BATCHES_PATH}/{current['batch']}"
        try:
            batch = (await self.call(tier, path, None, "GET", True)).document
        except UpstreamFailure as failure:
            if failure.status != 404:
                raise
            log.warning("upstream lost batch %s; submitting step %d again", path, current["step"])
            current.update(batch=None, sentAt=None)
            save_state(self.entry, state)
            return True
        if batch.get("processing_status") != "ended":
            return False
        reply = await self.call(tier, path + "/results", None, "GET", False)
        counted = self._read(state, current, tier, reply.body)
        if counted is None:  # an adopted batch that was not ours after all
            current.update(batch=None, sentAt=None)
            save_state(self.entry, state)
            return True
        save_state(self.entry, state)  # the commit: from here the step is never read again
        self._count(state, counted)
        return True

    # -- submitting -------------------------------------------------------------------------

    async def _submit(self, state: dict[str, Any], current: dict[str, Any]) -> bool:
        route = self._route(state)
        assert route is not None
        step = route.steps[current["step"]]
        tier = self.runtime.config.tiers[step.tier]
        if current["sentAt"] is not None:
            orphan = await self._orphan(state, current, tier)
            if orphan is not None:
                log.warning("batch %s: adopting upstream batch %s", state["id"], orphan)
                current.update(batch=orphan, tier=tier.name)
                save_state(self.entry, state)
                return True
        if state["cancelInitiatedAt"] is not None:
            self._end_items(state, current, {"type": "canceled"}, "canceled")
            return True
        current.update(sentAt=now_iso(), tier=tier.name)
        save_state(self.entry, state)  # recorded before the upstream call it leads to
        items = None if current["items"] is None else set(current["items"])
        caching = self.runtime.config.cache.prompt_caching
        mixed = route_mixes_models(self.runtime.config, route)
        payload = await asyncio.to_thread(
            write_step_payload,
            self.entry,
            current["step"],
            items,
            lambda params: build_step_request(
                params, route, step, tier, caching, stream=False, mixed_models=mixed
            ),
        )
        try:
            reply = await self.call(tier, BATCHES_PATH, payload, "POST", True)
        except UpstreamFailure as failure:
            if 400 <= failure.status < 500 and failure.status not in (408, 409, 429):
                # The upstream refused the step's batch: its items end with that error.
                error = _error_document(failure.body, failure.status)
                current["sentAt"] = None
                self._end_items(state, current, {"type": "errored", "error": error}, "errored")
                return True
            raise
        finally:
            payload.unlink(missing_ok=True)
        batch_id = created_batch_id(reply.document, tier.name)
        self.store.claim(batch_id, self.entry)
        current["batch"] = batch_id
        save_state(self.entry, state)
        return False

    async def _orphan(
        self, state: Mapping[str, Any], current: Mapping[str, Any], tier: Tier
    ) -> str | None:
        """An upstream batch this step created but never recorded (see the module doc)."""
        sent = parse_iso(current["sentAt"])
        assert sent is not None
        expected = state["count"] if current["items"] is None else len(current["items"])
        known = {s["batch"] for s in state["steps"] if s.get("batch")}
        path = f"{BATCHES_PATH}?limit={ORPHAN_PAGE}"
        listing = (await self.call(tier, path, None, "GET", True)).document
        candidates = []
        for batch in listing.get("data") or []:
            if not isinstance(batch, dict) or not isinstance(batch.get("id"), str):
                continue
            created = parse_iso(batch.get("created_at"))
            counts = batch.get("request_counts") or {}
            total = sum(v for v in counts.values() if isinstance(v, int))
            if (
                created is not None
                and created >= sent - ORPHAN_SKEW
                and total == expected
                and batch["id"] not in known
                and not self.store.claimed(batch["id"])
            ):
                candidates.append((created, batch["id"]))
        for _, batch_id in sorted(candidates):
            if self.store.claim(batch_id, self.entry):
                return batch_id
        return None

    # -- reading a step ---------------------------------------------------------------------

    def _read(
        self, state: dict[str, Any], current: dict[str, Any], tier: Tier, body: bytes
    ) -> Counted | None:
        """Price and judge a step's results into ``state`` (not saved); None if not ours."""
        route = self._route(state)
        assert route is not None
        index = current["step"]
        expected = set(self._items(current))
        lines = [line for line in body.splitlines() if line.strip()]
        found = {str(loads(line).get("custom_id")) for line in lines}
        if found - expected:
            log.warning("upstream batch %s holds other items; not adopted", current["batch"])
            return None
        last = index == len(route.steps) - 1
        step = route.steps[index]
        counted = Counted([], [], [])
        escalated: list[str] = []
        seconds = _seconds_since(current["sentAt"])
        carry = state["carry"]
        missing = errored("api_error", "the upstream batch returned no result for this item")
        with open(self.entry.step_path(index), "wb") as out:
            # One line at a time: a step's results are never all decoded at once.
            results = ((str(e.get("custom_id")), e.get("result") or {}) for e in map(loads, lines))
            for cid, result in itertools.chain(results, ((c, missing) for c in expected - found)):
                item = carry.pop(cid, None) or {"cost": "0", "escalations": 0, "steps": []}
                if result.get("type") == "succeeded":
                    message = result.get("message") or {}
                    usage = Usage.from_anthropic(message.get("usage") or {})
                    cost = cost_usd(usage, tier.prices, batch=True)
                    counted.usages.append((tier.name, usage, cost))
                    record = {
                        "tier": tier.name,
                        "usage": message.get("usage") or {},
                        "cost": format_usd(cost),
                        "seconds": seconds,
                    }
                    item["cost"] = format_usd(Decimal(item["cost"]) + cost)
                    item["steps"].append(record)
                    reason = None
                    if not last and state["cancelInitiatedAt"] is None:
                        reason = escalation_reason(step.escalate_when, message)
                    if reason is not None:
                        record["escalation"] = reason
                        item["escalations"] += 1
                        counted.escalations.append((tier.name, reason))
                        carry[cid] = item
                        escalated.append(cid)
                        continue
                    counted.counterfactual.append(usage)
                self._final(state, out, cid, result, tier.name, item)
        current["read"] = True
        if escalated:
            state["steps"].append(_intent(index + 1, escalated))
        else:
            self._finish(state)
        return counted

    def _final(
        self,
        state: dict[str, Any],
        out: Any,
        cid: str,
        result: Mapping[str, Any],
        tier: str | None,
        item: Mapping[str, Any],
    ) -> None:
        """One item's final line, and its share of the batch's totals."""
        kind = result.get("type")
        if kind in state["counts"]:
            state["counts"][kind] += 1
        state["costUsd"] = format_usd(Decimal(state["costUsd"]) + Decimal(item["cost"]))
        state["escalations"] += item["escalations"]
        tierwise = {
            "tier": tier,
            "escalations": item["escalations"],
            "cost_usd": item["cost"],
            "steps": item["steps"],
        }
        out.write(dumps({"custom_id": cid, "result": result, "tierwise": tierwise}) + b"\n")

    def _end_items(
        self, state: dict[str, Any], current: dict[str, Any], result: Mapping[str, Any], why: str
    ) -> None:
        """End every item of the current step with ``result`` (committed here)."""
        carry = state["carry"]
        with open(self.entry.step_path(current["step"]), "wb") as out:
            for cid in self._items(current):
                item = carry.pop(cid, None) or {"cost": "0", "escalations": 0, "steps": []}
                self._final(state, out, cid, result, current.get("tier"), item)
        current["read"] = True
        current["ended"] = why
        self._finish(state)
        save_state(self.entry, state)

    def _finish(self, state: dict[str, Any]) -> None:
        """The cascade has ended: merge the steps' finals into results in submission order."""
        merge_results(self.entry, len(state["steps"]))
        state["endedAt"] = now_iso()
        state["carry"] = {}
        save_state(self.entry, state)
        for index in range(len(state["steps"])):  # merged: the per-step copies can go
            self.entry.step_path(index).unlink(missing_ok=True)

    def _count(self, state: Mapping[str, Any], counted: Counted) -> None:
        policy, route_name = self.runtime.policy, state["route"]
        for tier, usage, cost in counted.usages:
            self.metrics.record_usage(policy, route_name, tier, usage, cost)
        for tier, reason in counted.escalations:
            self.metrics.escalations.labels(policy, route_name, tier, reason).inc()
        route = self._route(state)
        name = route.counterfactual_tier if route is not None else None
        if name is not None and name in self.runtime.config.tiers:
            prices = self.runtime.config.tiers[name].prices
            for usage in counted.counterfactual:
                cost = cost_usd(usage, prices, batch=True)
                self.metrics.record_counterfactual(policy, route_name, name, cost)

    # -- helpers ----------------------------------------------------------------------------

    def _items(self, current: Mapping[str, Any]) -> list[str]:
        if current["items"] is not None:
            return list(current["items"])
        return [r["custom_id"] for r in read_requests(self.entry.requests_path)]

    def _route(self, state: Mapping[str, Any]) -> Route | None:
        return self.runtime.config.routes_by_name.get(state["route"])

    def _config_problem(self, state: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
        """Why the current config cannot carry this step on, or None."""
        route = self._route(state)
        index = current["step"]
        if route is None:
            return f"route {state['route']!r} was removed while this batch ran"
        if index >= len(route.steps):
            return (
                f"route {route.name!r} no longer has step {index + 1} (a config reload "
                "removed it while this batch ran); the item was not answered"
            )
        tier = current["tier"] if current["batch"] is not None else route.steps[index].tier
        if tier not in self.runtime.config.tiers:
            return f"tier {tier!r} was removed while this batch ran; the item was not answered"
        return None


def _seconds_since(moment: object) -> float:
    started = parse_iso(moment)
    return (datetime.now(UTC) - started).total_seconds() if started else 0.0


def _error_document(body: bytes, status: int) -> Any:
    try:
        document = loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        return document
    return loads(error_body(ERROR_TYPES.get(status, "api_error"), f"upstream answered {status}"))


def merge_results(entry: Entry, steps: int) -> None:
    """``results.jsonl``: every step's final lines, in the order the requests came."""
    where: dict[str, tuple[int, int, int]] = {}
    for index in range(steps):
        path = entry.step_path(index)
        if not path.exists():
            continue
        offset = 0
        with open(path, "rb") as handle:
            for line in handle:
                cid = loads(line)["custom_id"]
                where[cid] = (index, offset, len(line))
                offset += len(line)
    with contextlib.ExitStack() as stack:
        handles = {
            i: stack.enter_context(open(entry.step_path(i), "rb"))
            for i in {w[0] for w in where.values()}
        }
        temporary = entry.results_path.with_suffix(".tmp")
        with open(temporary, "wb") as out:
            for request in read_requests(entry.requests_path):
                found = where.get(request["custom_id"])
                if found is None:
                    missing = errored("api_error", "the batch ended without a result for it")
                    line = dumps(
                        {"custom_id": request["custom_id"], "result": missing, "tierwise": {}}
                    )
                    out.write(line + b"\n")
                    continue
                index, offset, length = found
                handle = handles[index]
                handle.seek(offset)
                out.write(handle.read(length))
        os.replace(temporary, entry.results_path)


def item_error_status(result: Mapping[str, Any]) -> tuple[int, bytes]:
    """A batch item that did not succeed (errored, canceled, expired), as an API error."""
    status_of = {kind: status for status, kind in reversed(ERROR_TYPES.items())}
    error = result.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("error"), Mapping):
        kind = str(error["error"].get("type", "api_error"))
        return status_of.get(kind, 500), dumps(dict(error))
    return 500, error_body("api_error", f"batch item {result.get('type', 'missing')}")
