"""The router's current config and its hot reload.

A reload validates the new file, checks that this process can serve it (every tier's API
key variable is set), then swaps the runtime in one assignment; requests in flight finish
on the old one. A file that is invalid, or that names a key variable this pod does not have
(a policy gained a tier; running pods lack its Secret mapping until they are recreated), is
not applied: the last good config stays, a log line and the ``tierwise_router_config_*``
metrics say why, and ``/readyz`` reports the rejected file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwise.router.jsonutil import sha256_hex
from tierwise.router.metrics import RouterMetrics
from tierwise.router.runtime import Runtime, build_runtime, retire_runtime
from tierwise.routerconfig import ConfigError, RouterConfig, load, parse_bytes

log = logging.getLogger("tierwise.router")

ConfigSource = RouterConfig | str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True)
class Rejected:
    """A config file the router did not switch to, and why."""

    reason: str  # "invalid" | "missing_key_env" (the metric label)
    message: str
    hash: str | None = None


def missing_key_envs(config: RouterConfig, env: Mapping[str, str]) -> list[str]:
    """Key variables the config names that ``env`` does not set (sorted, unique)."""
    names = {t.api_key_env for t in config.tiers.values() if t.api_key_env}
    names.update(config.cache.response_cache.env_names())  # Redis URL or password
    return sorted(name for name in names if not env.get(name))


class ConfigHolder:
    """Owns the current ``Runtime``; loads, watches and swaps configs."""

    def __init__(
        self,
        source: ConfigSource,
        env: Mapping[str, str],
        metrics: RouterMetrics,
        spawn: Callable[[Any], None],
    ) -> None:
        self.env = env
        self.metrics = metrics
        self._spawn = spawn
        self.path: Path | None = None
        self._digest: str | None = None
        self.rejected: Rejected | None = None
        if isinstance(source, (str, os.PathLike)):
            self.path = Path(source)
            data = self.path.read_bytes() if self.path.exists() else b""
            self._digest = sha256_hex(data)
            config = load(self.path)
        elif isinstance(source, RouterConfig):
            config = source
        else:
            config = load(source)
        # At start there is nothing better to serve: a missing key is logged (the tier then
        # gets the upstream's own 401) and reported, but the config is used.
        for name in missing_key_envs(config, env):
            log.warning("environment variable %s is not set; its tier sends no API key", name)
        self.runtime: Runtime = build_runtime(config, env)
        self._note(config)
        self.metrics.reload_result(True, time.time())

    @property
    def config(self) -> RouterConfig:
        return self.runtime.config

    def current(self) -> Runtime:
        return self.runtime

    def apply(self, config: RouterConfig) -> None:
        """Swap to ``config`` atomically: requests in flight finish on the old one."""
        old = self.runtime
        self.runtime = build_runtime(config, self.env, old)
        self.rejected = None
        self._note(config)
        if old.response_cache is not self.runtime.response_cache:
            self._spawn(retire_runtime(old, self.runtime))

    def _note(self, config: RouterConfig) -> None:
        if not config.hash_matches:
            log.warning(
                "config hash %s does not match its content (%s); serving it anyway",
                config.hash,
                config.computed_hash,
            )
        self.metrics.config_loaded(config.policy.label, config.hash, config.schema_version)

    def check_file(self) -> bool | None:
        """Reload the watched file if its content changed: True ok, False kept out, None same."""
        if self.path is None:
            return None
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            data = f"unreadable: {exc}".encode()
        digest = sha256_hex(data)
        if digest == self._digest:
            return None
        self._digest = digest  # a bad file is reported once, not every second
        try:
            config = parse_bytes(data, str(self.path))
        except ConfigError as exc:
            return self._reject(Rejected("invalid", str(exc)))
        missing = missing_key_envs(config, self.env)
        if missing:
            return self._reject(
                Rejected(
                    "missing_key_env",
                    f"config {config.hash} names API key variables this pod does not have "
                    f"({', '.join(missing)}); recreate the pod to pick up the new tiers' keys",
                    config.hash,
                )
            )
        self.apply(config)
        log.info("config reloaded: policy %s, hash %s", config.policy.label, config.hash)
        self.metrics.reload_result(True, time.time())
        return True

    def _reject(self, rejected: Rejected) -> bool:
        self.rejected = rejected
        log.error(
            "config reload rejected, keeping config %s: %s", self.config.hash, rejected.message
        )
        self.metrics.reload_result(False, time.time(), rejected.reason)
        return False

    def readiness(self) -> dict[str, Any]:
        """The body of ``/readyz``: the config served, and a file kept out, if any."""
        report: dict[str, Any] = {"status": "ready", "hash": self.config.hash}
        if self.rejected is not None:
            report["rejectedConfig"] = {
                "reason": self.rejected.reason,
                "message": self.rejected.message,
                "hash": self.rejected.hash,
            }
        return report

    async def watch(self, interval: float) -> None:
        await poll_forever(self.check_file, interval, "config")


async def poll_forever(check: Callable[[], Any], interval: float, what: str) -> None:
    """Call ``check`` every ``interval`` seconds; a failure is logged, never the end.

    Polling, not inotify: a ConfigMap update swaps a `..data` symlink, which file watches on
    the old path miss; reading a small file each second is cheap."""
    while True:
        await asyncio.sleep(interval)
        try:
            check()
        except Exception:
            log.exception("%s watch failed", what)
