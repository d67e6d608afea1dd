"""The price catalog the operator prices with: the built-in one, overlaid by a ConfigMap.

Prices change more often than releases, so ``tierwise operator --price-catalog NS/NAME``
names an optional ConfigMap whose ``catalog.yaml`` key (format: docs/pricing.md) replaces or
adds catalog entries. It is read at most every ``REFRESH_SECONDS``; the resync loop then
re-renders every policy with the new prices. A missing ConfigMap means the built-in catalog;
one that does not parse keeps the last good catalog, and says so in the log and a metric.
"""

from __future__ import annotations

import logging
import threading
import time

import yaml

from tierwise.controller import kube, metrics
from tierwise.pricing import BUILTIN, CatalogError, PriceCatalog, parse_catalog

CATALOG_KEY = "catalog.yaml"
REFRESH_SECONDS = 10.0
log = logging.getLogger("tierwise.pricecatalog")

_lock = threading.Lock()
_ref: tuple[str, str] | None = None
_current: PriceCatalog = BUILTIN
_read_at = float("-inf")
_last_text: str | None = None


def configure(ref: str | None, default_namespace: str) -> None:
    """``ref`` is ``NAME`` or ``NAMESPACE/NAME``; None or empty uses the built-in catalog."""
    global _ref, _current, _read_at, _last_text
    with _lock:
        if ref:
            namespace, _, name = ref.rpartition("/")
            _ref = (namespace or default_namespace, name)
        else:
            _ref = None
        _current, _read_at, _last_text = BUILTIN, float("-inf"), None


def current() -> PriceCatalog:
    """The catalog to price with now (refreshed from the ConfigMap when due)."""
    global _current, _read_at, _last_text
    with _lock:
        if _ref is None or time.monotonic() - _read_at < REFRESH_SECONDS:
            return _current
        _read_at = time.monotonic()
        namespace, name = _ref
        try:
            config_map = kube.read_config_map(namespace, name)
        except Exception:
            log.exception("reading price catalog ConfigMap %s/%s failed; keeping the last", *_ref)
            return _current
        text = ((config_map or {}).get("data") or {}).get(CATALOG_KEY)
        if text == _last_text:
            return _current
        _last_text = text
        if text is None:
            _current = BUILTIN
            metrics.PRICE_CATALOG_INVALID.set(0)
            return _current
        try:
            _current = BUILTIN.overlay(
                parse_catalog(yaml.safe_load(text), source=f"configmap:{namespace}/{name}")
            )
        except (CatalogError, yaml.YAMLError) as exc:
            metrics.PRICE_CATALOG_INVALID.set(1)
            log.error(
                "price catalog %s/%s is invalid, keeping the last good one: %s",
                namespace,
                name,
                exc,
            )
            return _current
        metrics.PRICE_CATALOG_INVALID.set(0)
        log.info("price catalog %s/%s loaded (%s)", namespace, name, _current.date)
        return _current
