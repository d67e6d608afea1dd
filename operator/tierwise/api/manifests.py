"""Tierwise resources as parsed objects, and loading them from manifest files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tierwise import API_VERSION
from tierwise.api.models import CacheProfileSpec, CascadePolicySpec, ModelTierSpec
from tierwise.api.parsing import SpecError, parse

MODEL_TIER = "ModelTier"
CACHE_PROFILE = "CacheProfile"
CASCADE_POLICY = "CascadePolicy"
SPEC_TYPES: dict[str, type] = {
    MODEL_TIER: ModelTierSpec,
    CACHE_PROFILE: CacheProfileSpec,
    CASCADE_POLICY: CascadePolicySpec,
}
DEFAULT_NAMESPACE = "default"
# A policy's name is the tierwise.dev/policy label value of its ConfigMap and eval Jobs.
MAX_POLICY_NAME = 63
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Resource:
    """One Tierwise object: its kind, identity and parsed spec."""

    kind: str
    namespace: str
    name: str
    spec: Any
    source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def parse_resource(
    obj: dict[str, Any], *, source: str = "", default_namespace: str = DEFAULT_NAMESPACE
) -> Resource:
    """Parse one object (a manifest document or an API server object) of a Tierwise kind."""
    kind = obj.get("kind")
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    if kind not in SPEC_TYPES:
        raise SpecError("kind", f"not a Tierwise kind: {kind!r}")
    if obj.get("apiVersion") != API_VERSION:
        raise SpecError("apiVersion", f"must be {API_VERSION}, got {obj.get('apiVersion')!r}")
    if not name:
        raise SpecError("metadata.name", "required field is missing")
    if kind == CASCADE_POLICY and len(str(name)) > MAX_POLICY_NAME:
        # As the CRD's rule on metadata.name: the name is a label value of what it makes.
        raise SpecError(
            "metadata.name",
            f"a CascadePolicy name must be at most {MAX_POLICY_NAME} characters: it becomes"
            f" the tierwise.dev/policy label value of its ConfigMap and eval Jobs",
        )
    label = f"{kind} {name}"
    try:
        spec = parse(SPEC_TYPES[kind], obj.get("spec") or {}, "spec")
    except SpecError as exc:
        raise SpecError(exc.path, f"{exc.message} (in {label})") from exc
    namespace = metadata.get("namespace") or default_namespace
    return Resource(kind=kind, namespace=namespace, name=name, spec=spec, source=source)


def load_manifests(
    paths: Iterable[str | Path], *, default_namespace: str = DEFAULT_NAMESPACE
) -> list[Resource]:
    """Tierwise resources in files or directories (recursively), multi-document YAML.

    Documents of other kinds (Deployments, Secrets, ...) are skipped, so a whole GitOps
    directory can be given. Objects without a namespace get ``default_namespace``, as
    ``kubectl apply -n`` would place them.
    """
    resources = []
    for source, doc in load_documents(paths):
        if doc.get("kind") in SPEC_TYPES:
            try:
                resources.append(
                    parse_resource(doc, source=source, default_namespace=default_namespace)
                )
            except SpecError as exc:
                raise SpecError(exc.path, f"{exc.message} [{source}]") from exc
    return resources


def load_documents(paths: Iterable[str | Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object in the manifest files (any kind, ``List`` items flattened), with its
    source ``FILE#INDEX``."""
    for file in _manifest_files(paths):
        for index, doc in enumerate(_documents(file)):
            if isinstance(doc, dict):
                yield f"{file}#{index}", doc


def _manifest_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.suffix in _MANIFEST_SUFFIXES and p.is_file()
            )
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")


def _documents(file: Path) -> Iterator[Any]:
    with file.open(encoding="utf-8") as stream:
        for doc in yaml.safe_load_all(stream):
            if doc is None:
                continue
            if isinstance(doc, dict) and doc.get("kind") == "List":
                yield from doc.get("items") or []
            else:
                yield doc
