"""Offline Kubernetes manifest validation for the test suite.

What is validated:

* Built-in kinds (``v1``, ``apps/v1``, ``batch/v1``, ``autoscaling/v2``, ``policy/v1``, ``networking.k8s.io/v1``,
  ``rbac.authorization.k8s.io/v1``, ...) go through ``kubernetes_validate.validate(..., strict=True)``, i.e. the
  upstream OpenAPI schemas with unknown fields rejected, for the requested Kubernetes version.
* The CRDs the platform uses -- KEDA ``keda.sh/v1alpha1`` ScaledObject / TriggerAuthentication and Kubeflow
  ``kubeflow.org/v1`` PyTorchJob -- are validated against JSON Schemas (draft 2020-12) in
  ``tests/data/k8s-crd-schemas/``. Those schemas are OUR OWN, hand-written from the documented upstream APIs (not
  copies of the upstream CRDs); they ``$ref`` the Kubernetes definitions (ObjectMeta, PodTemplateSpec,
  HorizontalPodAutoscalerBehavior, Quantity) of the same strict schema set, so e.g. PyTorchJob pod templates are
  checked exactly as strictly as a Deployment's.
* Any other kind (no schema available) is an error, never a silent pass.

Kubernetes types in the strict schemas are nullable (``["integer", "null"]``); a ``Quantity`` is a string or a number
and an ``IntOrString`` a string or an integer, so ``nvidia.com/gpu: 1`` and ``cpu: "500m"`` both validate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, VersionNotSupportedError, all_versions
from packaging.version import Version
from referencing import Registry, Resource

__all__ = [
    "CRD_SCHEMA_DIR",
    "ManifestInvalid",
    "load_yaml_documents",
    "schema_version",
    "validate_all",
    "validate_manifest",
]

CRD_SCHEMA_DIR = Path(__file__).resolve().parent.parent / "data" / "k8s-crd-schemas"
DEFAULT_KUBE_VERSION = "1.29.0"

# (apiVersion, kind) -> schema file in CRD_SCHEMA_DIR
CRD_SCHEMAS: dict[tuple[str, str], str] = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("kubeflow.org/v1", "PyTorchJob"): "pytorchjob-kubeflow-v1.json",
}

_K8S_SCHEMA_ROOT = Path(kubernetes_validate.__file__).resolve().parent / "kubernetes-json-schema"
_MAX_MESSAGE = 300


class ManifestInvalid(AssertionError):
    """A manifest failed validation (or could not be validated at all)."""


def _major_minor(version: str) -> Version:
    match = re.match(r"^v?(\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"not a Kubernetes version: {version!r}")
    return Version(f"{match.group(1)}.{match.group(2)}")


def schema_version(kube_version: str) -> str:
    """Bundled schema version for ``kube_version``: the latest not newer than it (as kubernetes_validate picks)."""
    wanted = _major_minor(kube_version)
    candidates = [v for v in all_versions() if _major_minor(v) <= wanted]
    if not candidates or wanted > _major_minor(all_versions()[-1]):
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {kube_version}; have {all_versions()}")
    return candidates[-1]


@lru_cache(maxsize=32)
def _definitions(version: str) -> dict[str, Any]:
    """The strict ``_definitions.json`` (``$id`` https://kubernetes.io/api/_definitions.json) for a schema version."""
    return json.loads((_K8S_SCHEMA_ROOT / f"v{version}-local-strict" / "_definitions.json").read_text())


@lru_cache(maxsize=32)
def _crd_schema(filename: str) -> dict[str, Any]:
    return json.loads((CRD_SCHEMA_DIR / filename).read_text())


@lru_cache(maxsize=32)
def _registry(version: str) -> Registry:
    """Registry holding the k8s definitions of ``version`` plus our CRD schemas, keyed by their ``$id``s."""
    contents = [_definitions(version), *(_crd_schema(name) for name in CRD_SCHEMAS.values())]
    return Registry().with_resources((c["$id"], Resource.from_contents(c)) for c in contents)


@lru_cache(maxsize=32)
def _crd_validator(version: str, filename: str) -> jsonschema.Draft202012Validator:
    schema = _crd_schema(filename)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=_registry(version))


def _scaledobject_semantics(obj: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """KEDA admission-webhook rules that a JSON Schema cannot express."""
    spec = obj.get("spec") or {}
    lo, hi, idle = spec.get("minReplicaCount"), spec.get("maxReplicaCount", 100), spec.get("idleReplicaCount")
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        yield "$.spec.minReplicaCount", f"minReplicaCount={lo} must not exceed maxReplicaCount={hi}"
    if isinstance(idle, int) and idle >= (lo if isinstance(lo, int) else 0):
        yield "$.spec.idleReplicaCount", f"idleReplicaCount={idle} must be less than minReplicaCount={lo or 0}"


_SEMANTIC_CHECKS: dict[tuple[str, str], Callable[[dict[str, Any]], Iterable[tuple[str, str]]]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): _scaledobject_semantics,
}


def _describe(error: jsonschema.ValidationError) -> str:
    """The jsonschema message, or for ``contains`` (whose message is a repr of the whole array) its description."""
    schema = error.validator_value
    if error.validator == "contains" and isinstance(schema, dict) and "description" in schema:
        return f"no item matches the required schema: {schema['description']}"
    return error.message


def _short(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def _label(obj: Any) -> str:
    if not isinstance(obj, dict):
        return f"<{type(obj).__name__}>"
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{obj.get('apiVersion', '?')} {obj.get('kind', '?')}/{name or '?'}"


def _fail(obj: Any, version: str, problems: list[tuple[str, str]]) -> ManifestInvalid:
    lines = [f"{_label(obj)} is invalid (Kubernetes {version} schemas):"]
    lines += [f"  {path}: {_short(message)}" for path, message in problems]
    return ManifestInvalid("\n".join(lines))


def validate_manifest(obj: dict[str, Any], kube_version: str = DEFAULT_KUBE_VERSION) -> None:
    """Validate one manifest; raise ``ManifestInvalid`` naming kind/name, JSON path and schema message."""
    version = schema_version(kube_version)
    if not isinstance(obj, dict):
        raise _fail(obj, version, [("$", f"manifest must be a mapping, got {type(obj).__name__}")])
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        raise _fail(obj, version, [("$", "apiVersion and kind must be non-empty strings")])

    crd_file = CRD_SCHEMAS.get((api_version, kind))
    if crd_file is not None:
        errors = sorted(_crd_validator(version, crd_file).iter_errors(obj), key=lambda e: list(map(str, e.path)))
        problems = [(e.json_path, _describe(e)) for e in errors]
        if not problems and (check := _SEMANTIC_CHECKS.get((api_version, kind))):
            problems = list(check(obj))
        if problems:
            raise _fail(obj, version, problems)
        return

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except jsonschema.ValidationError as e:  # kubernetes_validate.ValidationError subclasses it
        raise _fail(obj, version, [(e.json_path, e.message)]) from None
    except SchemaNotFoundError as e:
        raise _fail(obj, version, [("$", f"{e.message}; not a built-in kind nor a known CRD")]) from None
    except VersionNotSupportedError as e:  # pragma: no cover - schema_version() already rejects these
        raise ValueError(e.message) from None


def validate_all(docs: Iterable[dict[str, Any]], kube_version: str = DEFAULT_KUBE_VERSION) -> None:
    """Validate every document; raise one ``ManifestInvalid`` listing all failures."""
    failures: list[str] = []
    for index, doc in enumerate(docs):
        try:
            validate_manifest(doc, kube_version)
        except ManifestInvalid as e:
            failures.append(f"[document {index}] {e}")
    if failures:
        raise ManifestInvalid(f"{len(failures)} invalid manifest(s):\n" + "\n".join(failures))


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    """Parse a multi-document YAML stream (e.g. ``helm template`` output), dropping empty documents."""
    return [doc for doc in yaml.safe_load_all(text) if doc]
