"""Where spend budgets are counted: Redis (shared by every router of a policy) or in process.

One contract, two stores. Amounts are integer picodollars (``tierwise.pricing.spend``). A
budget scope (one budget, one caller) lives under a ``base`` key prefix:

- ``<base>s:<window>``  settled spend of a window (a rolling window has one per bucket);
- ``<base>held``       reservations in flight, request id -> ``units:<spend key>``;
- ``<base>dl``         their deadlines (a sorted set); a reservation past its deadline
  belongs to a router that died mid-request: it is counted as spent at its worst case
  (never lost), and marked so that a late settlement corrects it to the real cost;
- ``<base>x:<id>``     a request's settlement marker: a settlement is applied once, however
  often it is retried (a reply lost to a timeout, a journal replayed after an outage).

Each operation is one Lua script, so concurrent routers cannot interleave between the check
and the increment. Lua numbers are doubles: the scripts compare with them (a relative error
of 1e-16 cannot change an admission) but add with ``INCRBY`` on the strings, exact to $9.2M.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tierwise.router.response_cache import redis_client
from tierwise.routerconfig import ResponseCacheConfig

# How long a budget operation may hold a request up, all attempts included.
REDIS_TIMEOUT_SECONDS = 0.25
MARKER_TTL_SECONDS = 7 * 86400
PRUNE_EVERY = 1024  # local store writes between two sweeps of what expired

_PURGE = """
local function purge(held, dl, now, prefix, marker_ttl)
  local expired = redis.call('ZRANGEBYSCORE', dl, '-inf', now)
  for _, rid in ipairs(expired) do
    local v = redis.call('HGET', held, rid)
    if v then
      local units, key = string.match(v, '^(%d+):(.*)$')
      redis.call('INCRBY', key, units)
      redis.call('SET', prefix .. 'x:' .. rid, 'c:' .. units, 'EX', marker_ttl)
      redis.call('HDEL', held, rid)
    end
    redis.call('ZREM', dl, rid)
  end
end
local function held_sum(held)
  local total = 0
  for _, v in ipairs(redis.call('HVALS', held)) do
    total = total + tonumber(string.match(v, '^(%d+)'))
  end
  return total
end
local function spent_sum(first)
  local total = 0
  for i = first, #KEYS do total = total + tonumber(redis.call('GET', KEYS[i]) or '0') end
  return total
end
"""

# KEYS: held, dl, spend keys (current first). ARGV: rid, units, reject_at (-1: none),
# deadline, now, ttl, prefix, marker_ttl. Returns {admitted, spent, held}.
RESERVE_SCRIPT = (
    _PURGE
    + """
purge(KEYS[1], KEYS[2], ARGV[5], ARGV[7], ARGV[8])
local spent = spent_sum(3)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return {1, tostring(spent), tostring(held_sum(KEYS[1]))}
end
local held = held_sum(KEYS[1])
local reject_at = tonumber(ARGV[3])
if reject_at >= 0 and spent + held >= reject_at then
  return {0, tostring(spent), tostring(held)}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. KEYS[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[8])
return {1, tostring(spent), tostring(held + tonumber(ARGV[2]))}
"""
)

# KEYS: held, dl, spend key, marker. ARGV: rid, units, ttl, marker_ttl.
# Returns 1 settled, 0 already settled, 2 corrected (the hold had expired at worst case).
SETTLE_SCRIPT = """
local marker = redis.call('GET', KEYS[4])
if marker then
  if string.sub(marker, 1, 2) == 'c:' then
    local diff = tonumber(ARGV[2]) - tonumber(string.sub(marker, 3))
    redis.call('INCRBY', KEYS[3], string.format('%d', diff))
    redis.call('SET', KEYS[4], 's', 'EX', ARGV[4])
    return 2
  end
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('SET', KEYS[4], 's', 'EX', ARGV[4])
return 1
"""

# KEYS: held, dl, spend keys. ARGV: now, prefix, marker_ttl. Returns {spent, held}.
READ_SCRIPT = (
    _PURGE
    + """
purge(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return {tostring(spent_sum(3)), tostring(held_sum(KEYS[1]))}
"""
)

# KEYS: the callers set. ARGV: caller, max callers, ttl. Returns the caller or 'other'.
CALLER_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return ARGV[1] end
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('SADD', KEYS[1], ARGV[1])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  return ARGV[1]
end
return 'other'
"""


@dataclass(frozen=True)
class Reservation:
    admitted: bool
    spent: int  # settled spend in the window
    held: int  # reservations in flight, this one included when admitted

    @property
    def committed(self) -> int:
        return self.spent + self.held


class SpendStore(Protocol):
    shared: bool

    async def reserve(
        self,
        base: str,
        keys: list[str],
        rid: str,
        units: int,
        reject_at: int | None,
        deadline: float,
        ttl: int,
    ) -> Reservation: ...

    async def settle(self, base: str, key: str, rid: str, units: int, ttl: int) -> None: ...

    async def read(self, base: str, keys: list[str], now: float) -> tuple[int, int]: ...

    async def caller(self, key: str, caller: str, max_callers: int, ttl: int) -> str: ...

    async def close(self) -> None: ...


@dataclass
class LocalSpendStore:
    """The same contract in one process: a router without Redis counts its own share.

    ``clock`` is wall time (``time.time``): deadlines are compared like Redis compares them.
    """

    clock: Any
    shared: bool = False
    spend: dict[str, int] = field(default_factory=dict)
    held: dict[str, dict[str, tuple[int, str, float]]] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)
    callers: dict[str, set[str]] = field(default_factory=dict)
    # When each counter, marker and callers set may go (what Redis does with EXPIRE): a
    # long-lived router does not keep every past window and request.
    expiry: dict[str, float] = field(default_factory=dict)
    _writes: int = 0

    def _keep(self, key: str, ttl: float) -> None:
        self.expiry[key] = self.clock() + ttl
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            self.prune(self.clock())

    def prune(self, now: float) -> None:
        for key, until in list(self.expiry.items()):
            if until <= now:
                del self.expiry[key]
                self.spend.pop(key, None)
                self.markers.pop(key, None)
                self.callers.pop(key, None)

    def _purge(self, base: str, now: float) -> None:
        holds = self.held.get(base, {})
        for rid, (units, key, deadline) in list(holds.items()):
            if deadline <= now:
                self.spend[key] = self.spend.get(key, 0) + units
                self.markers[f"{base}x:{rid}"] = f"c:{units}"
                del holds[rid]

    def _sums(self, base: str, keys: list[str]) -> tuple[int, int]:
        spent = sum(self.spend.get(k, 0) for k in keys)
        return spent, sum(u for u, _, _ in self.held.get(base, {}).values())

    async def reserve(
        self,
        base: str,
        keys: list[str],
        rid: str,
        units: int,
        reject_at: int | None,
        deadline: float,
        ttl: int,
    ) -> Reservation:
        self._purge(base, self.clock())
        spent, held = self._sums(base, keys)
        holds = self.held.setdefault(base, {})
        if rid in holds:
            return Reservation(True, spent, held)
        if reject_at is not None and spent + held >= reject_at:
            return Reservation(False, spent, held)
        holds[rid] = (units, keys[0], deadline)
        return Reservation(True, spent, held + units)

    async def settle(self, base: str, key: str, rid: str, units: int, ttl: int) -> None:
        marker_key = f"{base}x:{rid}"
        marker = self.markers.get(marker_key)
        if marker is not None:
            if marker.startswith("c:"):
                self.spend[key] = self.spend.get(key, 0) + units - int(marker[2:])
                self.markers[marker_key] = "s"
            return
        self.held.get(base, {}).pop(rid, None)
        self.spend[key] = self.spend.get(key, 0) + units
        self.markers[marker_key] = "s"
        self._keep(key, ttl)
        self._keep(marker_key, MARKER_TTL_SECONDS)

    def unsettle(self, key: str, units: int) -> None:
        """Take back spend counted here that has since been added to the shared store."""
        self.spend[key] = self.spend.get(key, 0) - units

    async def read(self, base: str, keys: list[str], now: float) -> tuple[int, int]:
        self._purge(base, now)
        return self._sums(base, keys)

    async def caller(self, key: str, caller: str, max_callers: int, ttl: int) -> str:
        seen = self.callers.setdefault(key, set())
        if caller in seen or len(seen) < max_callers:
            if not seen:
                self._keep(key, ttl)
            seen.add(caller)
            return caller
        return "other"

    async def close(self) -> None:
        return None


class RedisSpendStore:
    """The shared store: the CacheProfile's Redis, with its credentials (from Secrets)."""

    shared = True

    def __init__(
        self, settings: ResponseCacheConfig, env: Mapping[str, str], clock: Any = time.time
    ) -> None:
        self.settings = settings
        self.clock = clock  # wall time; deadlines are compared with it
        self._client = redis_client(settings, env, REDIS_TIMEOUT_SECONDS, retry=False)
        self._reserve = self._client.register_script(RESERVE_SCRIPT)
        self._settle = self._client.register_script(SETTLE_SCRIPT)
        self._read = self._client.register_script(READ_SCRIPT)
        self._caller = self._client.register_script(CALLER_SCRIPT)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            return await script(keys=keys, args=args)

    async def reserve(
        self,
        base: str,
        keys: list[str],
        rid: str,
        units: int,
        reject_at: int | None,
        deadline: float,
        ttl: int,
    ) -> Reservation:
        args = [
            rid,
            units,
            -1 if reject_at is None else reject_at,
            repr(deadline),
            repr(self.clock()),
            ttl,
            base,
            MARKER_TTL_SECONDS,
        ]
        admitted, spent, held = await self._run(
            self._reserve, [f"{base}held", f"{base}dl", *keys], args
        )
        return Reservation(bool(admitted), int(spent), int(held))

    async def settle(self, base: str, key: str, rid: str, units: int, ttl: int) -> None:
        keys = [f"{base}held", f"{base}dl", key, f"{base}x:{rid}"]
        await self._run(self._settle, keys, [rid, units, ttl, MARKER_TTL_SECONDS])

    async def read(self, base: str, keys: list[str], now: float) -> tuple[int, int]:
        spent, held = await self._run(
            self._read,
            [f"{base}held", f"{base}dl", *keys],
            [repr(now), base, MARKER_TTL_SECONDS],
        )
        return int(spent), int(held)

    async def caller(self, key: str, caller: str, max_callers: int, ttl: int) -> str:
        found = await self._run(self._caller, [key], [caller, max_callers, ttl])
        return found.decode() if isinstance(found, bytes) else str(found)

    async def close(self) -> None:
        await self._client.aclose()

    def same_settings(self, settings: ResponseCacheConfig) -> bool:
        return (
            settings.redis_url,
            settings.redis_url_env,
            settings.redis_password_env,
            settings.redis_tls_dir,
        ) == (
            self.settings.redis_url,
            self.settings.redis_url_env,
            self.settings.redis_password_env,
            self.settings.redis_tls_dir,
        )
