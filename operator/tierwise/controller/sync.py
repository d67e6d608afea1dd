"""Bring objects' worlds in line with their desired state: ConfigMap, status, Events.

kopf-free, so the resync loop and the event handlers share it. One ``Reconciler`` per
operator (kept in kopf's memo) remembers what it last wrote:

- the config hash of each policy's ConfigMap, so an event whose render yields the same
  document costs no API call at all (the resync re-checks the real ConfigMaps, listed once);
- the status it last wrote to each object (until the object is deleted), so a handler that
  still sees an older status (the watch has not caught up with our own write, or the body
  was taken before the write) neither writes it again nor posts the same transition Event
  twice.

Each policy is synced under its own lock (its own event and a tier's event can both
trigger it), and policies are synced concurrently on a small thread pool: rendering is
quick, most of the time is spent waiting for the API server. One policy's failure is
logged and counted and never stops the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

from kubernetes.client.rest import ApiException

from tierwise.controller import kube, metrics, price_catalog, rollout
from tierwise.controller.conditions import Condition, now_iso, transitions
from tierwise.controller.injection import selects
from tierwise.controller.names import (
    CONFIG_HASH_ANNOTATION,
    config_map_name,
    promoted_config_map_name,
)
from tierwise.controller.objects import Observed, ParseCache, by_name
from tierwise.controller.ownership import (
    CONFIG_MAP_CONFLICT,
    STALLED,
    NotOwned,
    ensure_policy_owns,
    owned_by,
)
from tierwise.controller.pods import (
    PODS_CURRENT,
    IndexedPod,
    LiveConfig,
    PodView,
    count_pods,
    pods_condition,
    previous_condition,
    view_pods,
)
from tierwise.controller.reconcile import (
    MODEL_SUPPORTED,
    POLICY_LABEL,
    READY,
    cache_profile_status,
    config_map_up_to_date,
    desired_config_map,
    holds_config,
    label_selector_string,
    models_condition,
    policy_status,
    tier_status,
)
from tierwise.controller.rollout_state import ROLLOUT_FIELDS
from tierwise.evals.job import JobSettings
from tierwise.render import RenderResult, render_policy

# emit(involved, event_type, reason, message): posts a Kubernetes Event (events.emit).
Emit = Callable[[Mapping[str, Any], str, str, str], None]

log = logging.getLogger("tierwise.sync")

PLURALS = {
    "CascadePolicy": "cascadepolicies",
    "ModelTier": "modeltiers",
    "CacheProfile": "cacheprofiles",
}
# Status fields the operator owns; others (e.g. written by the eval rollout) are left alone.
OWN_STATUS_FIELDS = frozenset(
    {
        "observedGeneration",
        "conditions",
        "configMap",
        "configHash",
        "routeCount",
        "tierCount",
        "pods",
        "usedBy",
        "pricing",
        "responseCache",
        # The rollout's fields, as rollout.adjust_status puts them into the status
        # (a gated rollout also writes them itself before acting on a decision).
        *ROLLOUT_FIELDS,
    }
)
DEFAULT_WORKERS = 8


class Reconciler:
    def __init__(
        self, emit: Emit, workers: int = DEFAULT_WORKERS, *, evals: JobSettings | None = None
    ) -> None:
        self.emit = emit
        self.evals = evals or JobSettings()  # how eval Jobs are made (the operator's options)
        self.datasets = rollout.DatasetDigests()  # the eval datasets' digests, by version
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        # policy uid -> hash in its ConfigMap (None: known not to exist), and the
        # resourceVersion of the ConfigMap as last written or read in full
        self._config_hashes: dict[str, str | None] = {}
        self._config_versions: dict[str, str] = {}
        # policy uid -> when its ConfigMap was last written or read (monotonic), so a resync
        # does not act on a list made before a handler's newer write
        self._config_seen_at: dict[str, float] = {}
        self._statuses: dict[str, dict[str, Any]] = {}  # uid -> own status fields written
        self._inputs: dict[str, tuple[Any, ...]] = {}  # policy uid -> inputs of its last sync
        # policy uid -> (inputs, render result): a resync of an unchanged policy renders
        # nothing, and its document is serialized only when its ConfigMap must be compared.
        self._rendered: dict[str, tuple[tuple[Any, ...], RenderResult]] = {}
        # policy uid -> (generation, live config) whose pods were last counted (a policy's
        # own event counts them again only when its spec, so maybe its podSelector, or the
        # key variables its live config needs changed)
        self._pods_counted: dict[str, Any] = {}
        # policy uid -> the config last known to be in its live ConfigMap (pods are checked
        # against it; a candidate under evaluation is not live)
        self._live: dict[str, LiveConfig] = {}
        # policy uid -> hash of the promoted config in the operator's copy (gated policies)
        self._copies: dict[str, str] = {}
        # Parsed specs by uid and generation, for the resync (see objects.observe).
        self.parsed: ParseCache = {}
        # kopf's live pod index by namespace (indexes.pods_by_namespace), set at start-up:
        # pods are then counted from the watch, never listed. None: list them (tools, tests).
        self.pods_index: Mapping[str, Iterable[IndexedPod]] | None = None
        self._memory_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tierwise-sync")

    # -- CascadePolicy --------------------------------------------------------------------

    def sync_policy(
        self,
        policy: Observed,
        tiers: Iterable[Observed],
        profiles: Iterable[Observed],
        *,
        config_map: Mapping[str, Any] | bool | None = True,
        pods: Sequence[PodView] | bool | None = True,
        listed_at: float | None = None,
    ) -> dict[str, Any]:
        """Render ``policy`` and write its ConfigMap and status where they differ.

        ``config_map``: the policy's ConfigMap's metadata as listed by the caller (None: it
        does not exist) at ``listed_at`` (monotonic), or True to trust the remembered hash
        and read it only when unknown. A listing older than the operator's own last look at
        the ConfigMap is ignored; a listed resourceVersion other than the one the operator
        last wrote or read means someone else changed it: it is read in full and repaired.
        ``pods``: the selected pods as listed by the caller, True to list them now, False
        to keep the counts in the status (a tier change does not move pods; they are listed
        anyway when the key variables the live config needs changed).
        """
        with self._locks[policy.uid or repr(policy.key)], metrics.timed("CascadePolicy"):
            if listed_at is not None and self._config_seen_at.get(policy.uid, -1.0) > listed_at:
                config_map = True
            result = self._render(policy, tiers, profiles)
            has_config, write_error, gated = False, None, None
            conflict: Condition | None = None
            if result is not None and result.document is not None:
                try:
                    # Write the live config, or evaluate it first (spec.evaluation).
                    # The rollout decides from the status as last written (the observed one
                    # can lag behind the operator's own writes): otherwise it would restart
                    # its phase clock, and the status would change on every sync.
                    latest = dataclasses.replace(policy, status=self._previous_status(policy))
                    gated = rollout.reconcile(latest, result, tiers, self, config_map)
                    has_config = gated.has_config
                except ApiException as exc:
                    # Say so on this policy; the others go on (sync_policies isolates them).
                    reason = kube.api_message(exc)
                    write_error = (
                        f"writing ConfigMap {config_map_name(policy.name)} failed: {reason}"
                    )
                    log.warning("CascadePolicy %s/%s: %s", *policy.key, write_error)
                    has_config = self._config_exists(policy, True)
                except NotOwned as exc:
                    # Someone else's ConfigMap has our name: change nothing, say so, and
                    # look again next time (it may be renamed or deleted).
                    write_error, conflict = (
                        str(exc),
                        Condition(STALLED, True, CONFIG_MAP_CONFLICT, str(exc)),
                    )
                    log.warning("CascadePolicy %s/%s: %s", *policy.key, write_error)
                    self.forget_config(policy)
            else:
                has_config = self._config_exists(policy, config_map)
            live = self._live_config(policy, result, gated, write_error)
            counted_for = (policy.generation, live)
            last_counted = self._pods_counted.get(policy.uid, object())
            if pods is True and last_counted == counted_for:
                pods = False  # counted for this spec already; the resync refreshes them
            elif pods is False and live is not None and last_counted != counted_for:
                pods = True  # the live config needs other keys: see which pods have them
            if pods is True:
                pods = self._list_pods(policy)
            counts, pod_conditions = None, self._kept_pod_condition(policy)
            if pods is not None and pods is not False:
                assert not isinstance(pods, bool)
                counts = count_pods(pods, live)
                pod_conditions = [pods_condition(counts, live)] if live else pod_conditions
                self._pods_counted[policy.uid] = counted_for
            elif pods is None:
                pod_conditions = []  # no podSelector: no pods to judge
            status = policy_status(
                policy,
                result,
                counts,
                now_iso(),
                previous=self._previous_status(policy),
                has_config=has_config,
                write_error=write_error,
                no_live=gated.no_live if gated is not None and write_error is None else None,
                extra_conditions=[
                    *(gated.conditions if gated else ()),
                    *pod_conditions,
                    *self._models_condition(result),
                    *([conflict] if conflict else ()),
                ],
                write_reason=CONFIG_MAP_CONFLICT if conflict else None,
            )
            if gated is not None:
                rollout.adjust_status(status, gated)
            self._write_status(policy, status)
            if write_error is None:
                self._inputs[policy.uid] = inputs_key(policy, tiers, profiles)
            ready = any(c["type"] == READY and c["status"] == "True" for c in status["conditions"])
            metrics.RECONCILES.labels("CascadePolicy", "ready" if ready else "not_ready").inc()
            return status

    def up_to_date(
        self, policy: Observed, tiers: Iterable[Observed], profiles: Iterable[Observed]
    ) -> bool:
        """Whether the last sync of ``policy`` saw the same spec, tiers and profile: then an
        event that changed only its status (often our own write) needs no work."""
        return self._inputs.get(policy.uid) == inputs_key(policy, tiers, profiles)

    def _render(
        self, policy: Observed, tiers: Iterable[Observed], profiles: Iterable[Observed]
    ) -> RenderResult | None:
        if policy.resource is None:
            return None
        tiers, profiles = list(tiers), list(profiles)
        key = inputs_key(policy, tiers, profiles)
        cached = self._rendered.get(policy.uid)
        if cached is not None and cached[0] == key:
            return cached[1]
        result = render_policy(
            policy.resource, by_name(tiers), by_name(profiles), catalog=price_catalog.current()
        )
        self._rendered[policy.uid] = (key, result)
        return result

    def live_holds(
        self,
        policy: Observed,
        config_hash: str,
        config_map: Mapping[str, Any] | bool | None,
        shadow: str | None = None,
    ) -> bool:
        """Whether the live ConfigMap holds ``config_hash`` (and the shadow document
        ``shadow``, or none) as the operator last wrote or read it in full, known without an
        API call: True for ``config_map`` True trusts memory, a listing must show the
        resourceVersion last written or read (any edit changes it)."""
        config_hash = _with_shadow(config_hash, shadow)
        if config_map is True:
            return self._config_hashes.get(policy.uid, "unknown") == config_hash
        if not config_map:
            return False
        listed_version = (config_map.get("metadata") or {}).get("resourceVersion")
        return (
            listed_version == self._config_versions.get(policy.uid)
            and self._config_hashes.get(policy.uid) == config_hash
        )

    def write_live_config(
        self,
        policy: Observed,
        document: Mapping[str, Any],
        config_map: Mapping[str, Any] | bool | None = True,
        *,
        restore: bool = False,
        shadow: str | None = None,
    ) -> bool:
        """Put ``document`` into the policy's live ConfigMap (what running routers load),
        unless it is already there, comparing content and not only the hash annotation.
        ``restore``: the document is the config already promoted, so any write repairs a
        deleted or edited ConfigMap. ``shadow``: the shadow document to hold beside it (a
        candidate in the shadow stage), else none. Returns whether it wrote."""
        name = config_map_name(policy.name)
        if self.live_holds(policy, document["hash"], config_map, shadow):
            return False
        if config_map is True:
            known = self._config_hashes.get(policy.uid, "unknown")
            # Known not to exist: create it (a 409 below re-reads if someone was faster).
            current = None if known is None else kube.read_config_map(policy.namespace, name)
        elif not config_map:
            current = None
        else:
            current = kube.read_config_map(policy.namespace, name)
        # Built only now: serializing the document is the costly part of an unchanged sync.
        desired = desired_config_map(policy, document, shadow=shadow)
        believed = (self._config_hashes.get(policy.uid) or "").split("+")[0] == document["hash"]
        replaced, version, wrote = put_config_map(current, desired, policy)
        self._remember_config(policy, _with_shadow(document["hash"], shadow), version=version)
        if not wrote:
            return False
        if _holds_same_config(replaced, document["hash"]):
            return True  # only the shadow document beside the config changed
        metrics.CONFIG_WRITES.inc()
        repaired = _repair(replaced, document["hash"], restore or believed)
        if repaired is not None:
            self.emit(
                policy.reference(),
                "Warning",
                "LiveConfigRestored",
                f"ConfigMap {name} {repaired}; restored config {document['hash']}",
            )
        else:
            self.emit(
                policy.reference(),
                "Normal",
                "ConfigRendered",
                f"router config {document['hash']} written to ConfigMap {name}",
            )
        return True

    def keep_promoted_copy(self, policy: Observed, document: Mapping[str, Any]) -> None:
        """Keep the operator's copy of a gated policy's promoted config, from which its live
        ConfigMap is restored (deleted or edited) while another candidate is not promoted:
        the spec no longer renders the promoted config then."""
        if self._copies.get(policy.uid) == document["hash"]:
            return
        name = promoted_config_map_name(policy.name)
        current = kube.read_config_map(policy.namespace, name)
        desired = desired_config_map(policy, document, name)
        desired["metadata"]["labels"]["app.kubernetes.io/component"] = "promoted-config"
        put_config_map(current, desired, policy)
        with self._memory_lock:
            self._copies[policy.uid] = document["hash"]

    def _remember_config(
        self,
        policy: Observed,
        config_hash: str | None,
        current: Mapping[str, Any] | None = None,
        version: str | None = None,
    ) -> None:
        self._config_hashes[policy.uid] = config_hash
        self._config_seen_at[policy.uid] = time.monotonic()
        version = version or ((current or {}).get("metadata") or {}).get("resourceVersion")
        if version:
            self._config_versions[policy.uid] = str(version)

    def forget_config(self, policy: Observed) -> None:
        """Know nothing of the policy's ConfigMap: the next sync reads it again."""
        with self._memory_lock:
            self._config_hashes.pop(policy.uid, None)
            self._config_versions.pop(policy.uid, None)
            self._config_seen_at.pop(policy.uid, None)

    def _config_exists(self, policy: Observed, config_map: Mapping[str, Any] | bool | None) -> bool:
        if config_map is not True:
            return bool(config_map)
        if policy.uid in self._config_hashes:
            return self._config_hashes[policy.uid] is not None
        current = kube.read_config_map(policy.namespace, config_map_name(policy.name))
        if not owned_by(current, policy.uid):
            return False  # someone else's: not the policy's config (and not remembered)
        annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
        self._remember_config(
            policy,
            None if current is None else annotations.get(CONFIG_HASH_ANNOTATION, ""),
            current,
        )
        return current is not None

    def selected_pods(self, policy: Observed) -> tuple[PodView, ...]:
        """The pods ``policy`` selects (none when they cannot be known right now)."""
        pods = self._list_pods(policy)
        return pods if isinstance(pods, tuple) else ()

    def _list_pods(self, policy: Observed) -> tuple[PodView, ...] | bool | None:
        if self.pods_index is not None:
            selector = policy.pod_selector()
            if selector is None:
                return None
            return selected_pods(selector, self.pods_index.get(policy.namespace, ()))
        selector = label_selector_string(policy.pod_selector())
        if selector is None:
            return None
        try:
            return view_pods(kube.list_pods(policy.namespace, selector))
        except ApiException as exc:
            # Keep the last counts; the reconcile of the policy itself goes on.
            log.warning("counting pods of %s/%s failed: %s", *policy.key, exc.status)
            return False

    def _live_config(
        self,
        policy: Observed,
        result: RenderResult | None,
        gated: rollout.RolloutStatus | None,
        write_error: str | None,
    ) -> LiveConfig | None:
        """The config the policy's sidecars load now, when known: the rendered one once it
        is in the live ConfigMap, else the one remembered for the live hash."""
        known = self._live.get(policy.uid)
        if gated is None or write_error is not None or result is None:
            return known  # nothing was written: the live ConfigMap holds what it held
        document = result.document
        live_hash = gated.live_hash
        if document is not None and live_hash == document["hash"]:
            known = LiveConfig(
                document["hash"],
                config_map_name(policy.name),
                frozenset(k.env for k in result.key_envs),
            )
            with self._memory_lock:
                self._live[policy.uid] = known
            return known
        return known if known is not None and known.hash == live_hash else None

    def _models_condition(self, result: RenderResult | None) -> list[Condition]:
        """Whether the rendered config's routes use models that retired (checked each sync:
        a retirement date passes without any object changing)."""
        if result is None or result.document is None:
            return []
        return [models_condition(result.document, price_catalog.current(), date.today())]

    def _kept_pod_condition(self, policy: Observed) -> list[Condition]:
        kept = previous_condition(self._previous_status(policy).get("conditions"))
        return [kept] if kept is not None else []

    # -- ModelTier and CacheProfile -------------------------------------------------------

    def sync_tier(self, tier: Observed, policies: Iterable[Observed]) -> None:
        with metrics.timed("ModelTier"):
            used_by = sum(1 for p in policies if not p.deleting and p.uses_tier(tier.name))
            previous = self._previous_status(tier)
            status = tier_status(tier, used_by, now_iso(), previous, price_catalog.current())
            self._write_status(tier, status)
            metrics.RECONCILES.labels("ModelTier", "ok").inc()

    def sync_cache_profile(self, profile: Observed, policies: Iterable[Observed]) -> None:
        with metrics.timed("CacheProfile"):
            used_by = sum(1 for p in policies if not p.deleting and p.uses_profile(profile.name))
            previous = self._previous_status(profile)
            status = cache_profile_status(profile, used_by, now_iso(), previous)
            self._write_status(profile, status)
            metrics.RECONCILES.labels("CacheProfile", "ok").inc()

    # -- many at once ---------------------------------------------------------------------

    async def sync_policies(
        self,
        policies: Sequence[Observed],
        tiers: Sequence[Observed],
        profiles: Sequence[Observed],
        options_for: Callable[[Observed], Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        """Sync ``policies`` concurrently; each failure is logged on its own.
        ``options_for(policy)``: per-policy keyword arguments of ``sync_policy``."""
        if not policies:
            return
        loop = asyncio.get_running_loop()

        def one(policy: Observed) -> dict[str, Any]:
            extra = options_for(policy) if options_for else {}
            return self.sync_policy(policy, tiers, profiles, **{**options, **extra})

        results = await asyncio.gather(
            *(loop.run_in_executor(self._pool, one, p) for p in policies),
            return_exceptions=True,
        )
        for policy, outcome in zip(policies, results, strict=True):
            if isinstance(outcome, BaseException):
                log.error("sync of CascadePolicy %s/%s failed: %r", *policy.key, outcome)

    def guarded(self, sync: Callable[..., Any], obj: Observed, *args: Any, **kwargs: Any) -> None:
        """Run one sync; log its failure instead of stopping the caller's loop."""
        try:
            sync(obj, *args, **kwargs)
        except Exception:
            log.exception("sync of %s %s/%s failed", obj.kind, obj.namespace, obj.name)

    def forget(self, obj: Observed) -> None:
        """Drop what is remembered about a deleted object."""
        with self._memory_lock:
            self._config_hashes.pop(obj.uid, None)
            self._config_seen_at.pop(obj.uid, None)
            self._config_versions.pop(obj.uid, None)
            self._statuses.pop(obj.uid, None)
            self._inputs.pop(obj.uid, None)
            self._rendered.pop(obj.uid, None)
            self._pods_counted.pop(obj.uid, None)
            self._live.pop(obj.uid, None)
            self._copies.pop(obj.uid, None)
            self.parsed.pop(obj.uid, None)

    # -- status ---------------------------------------------------------------------------

    def _previous_status(self, obj: Observed) -> dict[str, Any]:
        """The observed status, with the operator's own fields as last written when the
        watch has not shown that write yet."""
        with self._memory_lock:
            written = self._statuses.get(obj.uid)
            observed = dict(obj.status)
            if written is None:
                return observed
            if _own(observed) == written:
                return observed
            # Kept even once the watch has shown our write: a handler may still act on a
            # body older than it (taken before it waited for the policy's lock), and would
            # otherwise write the old status back and post the same transition again.
            merged = {k: v for k, v in observed.items() if k not in OWN_STATUS_FIELDS}
            return {**merged, **written}

    def _write_status(self, obj: Observed, status: dict[str, Any]) -> None:
        previous = self._previous_status(obj)
        if _own(previous) == _own(status):
            return  # nothing changed: no write, so no event storm from our own updates
        if not kube.patch_status(
            PLURALS[obj.kind], obj.namespace, obj.name, _patch(previous, status)
        ):
            return
        with self._memory_lock:
            self._statuses[obj.uid] = _own(status)
        before = {c.get("type") for c in previous.get("conditions") or ()}
        for condition in transitions(previous.get("conditions"), status["conditions"]):
            ok = condition["status"] == "True"
            # PodsCurrent: news when pods cannot serve, and when that is over (not when a
            # new policy's pods are fine from the start).
            if condition["type"] == READY or (
                condition["type"] == PODS_CURRENT and (not ok or condition["type"] in before)
            ):
                event_type = "Normal" if ok else "Warning"
                self.emit(obj.reference(), event_type, condition["reason"], condition["message"])
            elif condition["type"] == MODEL_SUPPORTED and condition["status"] == "False":
                self.emit(obj.reference(), "Warning", condition["reason"], condition["message"])


def inputs_key(
    policy: Observed, tiers: Iterable[Observed], profiles: Iterable[Observed]
) -> tuple[Any, ...]:
    """What a policy's render depends on: its own spec generation, the generations of the
    tiers and profile it names (present or not), and the price catalog in use."""
    used = set(policy.tier_names())
    profile = policy.cache_profile_name()
    return (
        id(price_catalog.current()),
        policy.generation,
        policy.deleting,
        # Rollout break-glass annotations change no generation but do change the work.
        tuple(
            sorted((k, v) for k, v in policy.annotations.items() if k.startswith("tierwise.dev/"))
        ),
        tuple(sorted((t.name, t.uid, t.generation) for t in tiers if t.name in used)),
        tuple(sorted((p.name, p.uid, p.generation) for p in profiles if p.name == profile)),
    )


def put_config_map(
    current: Mapping[str, Any] | None, desired: dict[str, Any], policy: Observed
) -> tuple[Mapping[str, Any] | None, str | None, bool]:
    """Create or replace ``desired`` (a ConfigMap of ``policy``) unless ``current`` (as read)
    already is it, data and all; someone else's ConfigMap of that name is never written
    (``NotOwned``). Returns (the ConfigMap as it was before, the resourceVersion now, whether
    it wrote)."""
    meta = desired["metadata"]
    ensure_policy_owns(policy, current)
    if config_map_up_to_date(current, desired):
        return current, _version(current), False
    try:
        return current, kube.create_or_replace_config_map(current, desired), True
    except ApiException as exc:
        if exc.status != 409:
            raise
    # Someone wrote it since it was read or listed (a handler, another replica): read it
    # again and write only if it still differs.
    current = kube.read_config_map(meta["namespace"], meta["name"])
    ensure_policy_owns(policy, current)
    if config_map_up_to_date(current, desired):
        return current, _version(current), False
    return current, kube.create_or_replace_config_map(current, desired), True


def _with_shadow(config_hash: str, shadow: str | None) -> str:
    """What the operator remembers the live ConfigMap holds: the config's hash, and the
    digest of the shadow document beside it, if any."""
    if shadow is None:
        return config_hash
    return f"{config_hash}+{hashlib.sha256(shadow.encode()).hexdigest()[:16]}"


def _holds_same_config(replaced: Mapping[str, Any] | None, config_hash: str) -> bool:
    """Whether a rewritten live ConfigMap already held ``config_hash`` intact (so the write
    only added or removed the shadow document: no repair, no new config)."""
    return holds_config(replaced, config_hash) is not None


def _version(config_map: Mapping[str, Any] | None) -> str | None:
    version = ((config_map or {}).get("metadata") or {}).get("resourceVersion")
    return str(version) if version else None


def _repair(replaced: Mapping[str, Any] | None, config_hash: str, expected: bool) -> str | None:
    """What happened to a live ConfigMap the operator had to rewrite with ``config_hash``,
    when that was a repair: it claimed that config with other data (edited, made invalid),
    or it was gone or held another config while that config was meant to be there
    (``expected``). None for a new config."""
    if replaced is None:
        return "was deleted" if expected else None
    annotations = (replaced.get("metadata") or {}).get("annotations") or {}
    claimed = annotations.get(CONFIG_HASH_ANNOTATION)
    if claimed == config_hash:
        return "was edited outside the operator: its data was not that config"
    if expected:
        return f"was edited outside the operator: it held {claimed or 'an unlabelled config'}"
    return None


def _own(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k in OWN_STATUS_FIELDS}


def _patch(previous: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch: our fields as desired, and null for own fields that went away."""
    patch = _own(status)
    for key in _own(previous):
        if key not in patch:
            patch[key] = None
    return patch


def selected_pods(selector: Any, pods: Iterable[IndexedPod]) -> tuple[PodView, ...]:
    """The views of the indexed ``pods`` that ``selector`` (a LabelSelector) selects."""
    return tuple(p.view for p in list(pods) if selects(selector, p.labels))


def config_maps_by_policy(configmaps: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Any]:
    """ConfigMaps listed by the policy label, keyed by (namespace, policy name)."""
    found: dict[tuple[str, str], Any] = {}
    for cm in configmaps:
        meta = cm.get("metadata") or {}
        policy = (meta.get("labels") or {}).get(POLICY_LABEL)
        if policy and meta.get("name") == config_map_name(policy):
            found[(meta.get("namespace"), policy)] = cm
    return found
