"""What a container would see, rebuilt on the host: environment, volumes, file paths.

Used by :mod:`harness.podrunner`. A container's files live at absolute paths
(``/etc/tierwise/dataset``); on the host they are materialised in a per-pod directory instead,
and every occurrence of a mount path in the command, args, env values and working directory is
rewritten to the local directory. Programs that take their paths from arguments or the
environment (as Tierwise's do) therefore find their files; paths compiled into a program are
not rewritten.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (kind, namespace, name) -> the object's data as text, or None when it does not exist.
DataLookup = Callable[[str, str, str], dict[str, str] | None]
# (namespace, service account, audience, expiration) -> a bound token.
TokenIssuer = Callable[[str, str, str | None, int], str]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class ConfigError(RuntimeError):
    """The pod refers to something that does not exist (kubelet: CreateContainerConfigError)."""


@dataclass
class PathMap:
    """Container paths -> host paths, longest container path first."""

    entries: list[tuple[str, Path]] = field(default_factory=list)

    def add(self, container_path: str, host_path: Path) -> None:
        self.entries.append((container_path.rstrip("/") or "/", host_path))
        self.entries.sort(key=lambda entry: len(entry[0]), reverse=True)

    def rewrite(self, text: str) -> str:
        """Replace container paths that start a path in ``text`` (``--x=/data/a`` too).

        One pass, longest path first: a host path put in by one mount is never rewritten again
        by another (the runner's directory may itself lie under a mount path such as /tmp).
        """
        if not self.entries:
            return text
        hosts = {container: str(host) for container, host in self.entries}
        alternatives = "|".join(re.escape(container) for container, _ in self.entries)
        pattern = r"(?<![\w.\-/])(" + alternatives + r")(?=/|$|[^\w.\-])"
        return re.sub(pattern, lambda m: hosts[m.group(1)], text)

    def host_path(self, container_path: str) -> Path | None:
        rewritten = self.rewrite(container_path)
        return Path(rewritten) if rewritten != container_path else None


# -- environment ----------------------------------------------------------------------------


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """The downward API subset a container commonly reads (``fieldRef.fieldPath``)."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "spec.nodeName": spec.get("nodeName", ""),
        # The pod runner gives each pod a loopback address of its own.
        "status.podIP": pod.get("status", {}).get("podIP") or "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def _ref_value(ref: Mapping[str, Any], kind: str, namespace: str, lookup: DataLookup) -> str | None:
    data = lookup(kind, namespace, ref["name"])
    optional = ref.get("optional", False)
    # The kubelet's own messages (CreateContainerConfigError).
    if data is None and not optional:
        raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    value = None if data is None else data.get(ref["key"])
    if value is None and not optional:
        raise ConfigError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
    return value


def container_env(
    pod: Mapping[str, Any], container: Mapping[str, Any], lookup: DataLookup
) -> dict[str, str]:
    """The container's environment from ``envFrom`` then ``env``, with $(VAR) expansion."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = _env_from_source(source)
        data = lookup(kind, namespace, ref["name"])
        if data is None and not ref.get("optional", False):
            raise ConfigError(f"{kind} {namespace}/{ref['name']} not found")
        prefix = source.get("prefix", "")
        env.update({prefix + k: v for k, v in (data or {}).items()})
    for entry in container.get("env", []):
        value = _env_value(pod, entry, namespace, lookup, env)
        if value is not None:
            env[entry["name"]] = value
    return env


def _env_from_source(source: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    if "configMapRef" in source:
        return "ConfigMap", source["configMapRef"]
    if "secretRef" in source:
        return "Secret", source["secretRef"]
    raise ConfigError(f"unsupported envFrom source {sorted(source)}")


def _env_value(
    pod: Mapping[str, Any],
    entry: Mapping[str, Any],
    namespace: str,
    lookup: DataLookup,
    env: Mapping[str, str],
) -> str | None:
    if "valueFrom" not in entry:
        return expand(entry.get("value", ""), env)
    source = entry["valueFrom"]
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "configMapKeyRef" in source:
        return _ref_value(source["configMapKeyRef"], "ConfigMap", namespace, lookup)
    if "secretKeyRef" in source:
        return _ref_value(source["secretKeyRef"], "Secret", namespace, lookup)
    raise ConfigError(f"unsupported valueFrom for {entry['name']}: {sorted(source)}")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names expand, $$ escapes, unknown stay literal."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)", substitute, text)


# -- volumes ---------------------------------------------------------------------------------


@dataclass
class VolumeSources:
    """How volume contents are fetched (from the API server, in the pod runner)."""

    lookup: DataLookup
    issue_token: TokenIssuer
    ca_bundle: str


def materialise_volumes(
    pod: Mapping[str, Any], root: Path, sources: VolumeSources
) -> dict[str, Path]:
    """Write every volume of the pod under ``root``; returns volume name -> directory."""
    directories: dict[str, Path] = {}
    for volume in pod.get("spec", {}).get("volumes", []):
        directory = root / volume["name"]
        directory.mkdir(parents=True, exist_ok=True)
        for relative, content in _volume_files(pod, volume, sources):
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        directories[volume["name"]] = directory
    return directories


def _volume_files(
    pod: Mapping[str, Any], volume: Mapping[str, Any], sources: VolumeSources
) -> Iterable[tuple[str, bytes]]:
    namespace = pod["metadata"]["namespace"]
    if "configMap" in volume:
        yield from _keyed_files("ConfigMap", volume["configMap"], namespace, sources.lookup)
    elif "secret" in volume:
        ref = {**volume["secret"], "name": volume["secret"].get("secretName", "")}
        yield from _keyed_files("Secret", ref, namespace, sources.lookup)
    elif "projected" in volume:
        for projection in volume["projected"].get("sources", []):
            yield from _projection_files(pod, projection, sources)
    elif "downwardAPI" in volume:
        yield from _downward_files(pod, volume["downwardAPI"].get("items", []))
    # emptyDir and everything else: an empty directory is the closest local equivalent.


def _keyed_files(
    kind: str, ref: Mapping[str, Any], namespace: str, lookup: DataLookup
) -> Iterable[tuple[str, bytes]]:
    data = lookup(kind, namespace, ref["name"])
    if data is None:
        if ref.get("optional", False):
            return
        raise ConfigError(f"{kind} {namespace}/{ref['name']} not found")
    items = ref.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] in data:
            yield item["path"], data[item["key"]].encode()
        elif not ref.get("optional", False):
            raise ConfigError(f"{kind} {namespace}/{ref['name']} has no key {item['key']!r}")


def _projection_files(
    pod: Mapping[str, Any], projection: Mapping[str, Any], sources: VolumeSources
) -> Iterable[tuple[str, bytes]]:
    namespace = pod["metadata"]["namespace"]
    if "serviceAccountToken" in projection:
        spec = projection["serviceAccountToken"]
        account = pod.get("spec", {}).get("serviceAccountName", "default")
        token = sources.issue_token(
            namespace, account, spec.get("audience"), int(spec.get("expirationSeconds", 3607))
        )
        yield spec["path"], token.encode()
    elif "configMap" in projection:
        # kube-root-ca.crt may not be published yet in a brand-new namespace.
        if projection["configMap"].get("name") == "kube-root-ca.crt":
            yield "ca.crt", sources.ca_bundle.encode()
        else:
            yield from _keyed_files("ConfigMap", projection["configMap"], namespace, sources.lookup)
    elif "secret" in projection:
        yield from _keyed_files("Secret", projection["secret"], namespace, sources.lookup)
    elif "downwardAPI" in projection:
        yield from _downward_files(pod, projection["downwardAPI"].get("items", []))


def _downward_files(
    pod: Mapping[str, Any], items: Iterable[Mapping[str, Any]]
) -> Iterable[tuple[str, bytes]]:
    for item in items:
        if "fieldRef" in item:
            yield item["path"], field_value(pod, item["fieldRef"]["fieldPath"]).encode()


def secret_text(data: Mapping[str, str] | None) -> dict[str, str] | None:
    """Secret ``data`` is base64; containers see the decoded bytes."""
    if data is None:
        return None
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}


def mount_paths(
    container: Mapping[str, Any], volumes: Mapping[str, Path], scratch: Path
) -> PathMap:
    """The container's view: its volume mounts and its termination-message file."""
    paths = PathMap()
    for mount in container.get("volumeMounts", []):
        directory = volumes.get(mount["name"])
        if directory is None:
            raise ConfigError(f"volumeMount {mount['name']!r} names no volume")
        paths.add(mount["mountPath"], directory / mount.get("subPath", ""))
    message_path = container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
    paths.add(message_path, scratch / "termination-message")
    return paths
