"""The offline manifest validator in tests/support/k8s.py: strict built-in kinds, our KEDA/Kubeflow CRD schemas,
unknown kinds rejected, and Kubernetes-version selection. Offline and fast."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from kubernetes_validate.utils import latest_version
from support.k8s import (
    CRD_SCHEMA_DIR,
    CRD_SCHEMAS,
    ManifestInvalid,
    load_yaml_documents,
    schema_version,
    validate_all,
    validate_manifest,
)

LATEST = latest_version()
VERSIONS = ["1.28.0", LATEST]


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gateway", "labels": {"app": "gateway"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "gateway"}},
            "template": {
                "metadata": {"labels": {"app": "gateway"}},
                "spec": {
                    "containers": [
                        {
                            "name": "gateway",
                            "image": "mfpo/gateway:latest",
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": 2}},
                            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                        }
                    ]
                },
            },
        },
    }


def scaled_object() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker-gpu", "labels": {"app": "worker-gpu"}},
        "spec": {
            "scaleTargetRef": {"name": "worker-gpu"},
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "minReplicaCount": 0,
            "maxReplicaCount": 4,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 300,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        }
                    }
                }
            },
            "triggers": [
                {
                    "type": "redis",
                    "metadata": {"address": "redis:6379", "listName": "gpu", "listLength": "5"},
                    "authenticationRef": {"name": "redis-auth"},
                }
            ],
        },
    }


def trigger_auth() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "redis-auth"},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": "mfpo-redis", "key": "password"}]},
    }


def _replica(replicas: int) -> dict[str, Any]:
    return {
        "replicas": replicas,
        "restartPolicy": "OnFailure",
        "template": {
            "metadata": {"labels": {"app": "trainer"}},
            "spec": {
                "containers": [
                    {
                        "name": "pytorch",
                        "image": "mfpo/trainer:latest",
                        "command": ["python", "-m", "trainer.train"],
                        "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
                        "ports": [{"name": "pytorchjob-port", "containerPort": 23456}],
                        "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "32Gi"}},
                    }
                ]
            },
        },
    }


def pytorch_job() -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "train"},
        "spec": {
            "pytorchReplicaSpecs": {"Master": _replica(1), "Worker": _replica(1)},
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3, "ttlSecondsAfterFinished": 3600},
            "nprocPerNode": "1",
        },
    }


def _invalid(obj: dict[str, Any], *fragments: str, kube_version: str = "1.29.0") -> str:
    with pytest.raises(ManifestInvalid) as info:
        validate_manifest(obj, kube_version)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- built-in kinds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_valid_deployment_passes(version: str) -> None:
    validate_manifest(deployment(), version)


def test_unknown_container_field_fails_strict() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    _invalid(obj, "Deployment/gateway", "$.spec.template.spec.containers[0]", "imagePullPolice")


def test_string_replicas_fails() -> None:
    obj = deployment()
    obj["spec"]["replicas"] = "2"
    _invalid(obj, "$.spec.replicas", "'2' is not of type")


def test_gpu_limit_quantity_int_or_string() -> None:
    obj = deployment()
    limits = obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    for value in (1, "1", 0.5, "100m"):
        limits["nvidia.com/gpu"] = value
        validate_manifest(obj)
    limits["nvidia.com/gpu"] = [1]
    _invalid(obj, "limits")


def test_unknown_kind_fails() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    _invalid(widget, "Widget/w", "Couldn't find schema")


@pytest.mark.parametrize("obj", [[], {"kind": "Service"}, {"apiVersion": "v1", "kind": ""}])
def test_malformed_documents_fail(obj: Any) -> None:
    with pytest.raises(ManifestInvalid):
        validate_manifest(obj)


def test_other_builtins_pass() -> None:
    docs = load_yaml_documents(
        """
---
apiVersion: v1
kind: Service
metadata: {name: gateway}
spec:
  selector: {app: gateway}
  ports: [{name: http, port: 80, targetPort: http}]
---
# empty document above and below are skipped
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: gateway}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: gateway}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: gateway}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: gateway}
  minReplicas: 1
  maxReplicas: 3
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
"""
    )
    assert [d["kind"] for d in docs] == ["Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Role"]
    validate_all(docs)


def test_validate_all_collects_every_error() -> None:
    bad_deploy = deployment()
    bad_deploy["spec"]["replicas"] = "2"
    bad_so = scaled_object()
    del bad_so["spec"]["triggers"]
    with pytest.raises(ManifestInvalid) as info:
        validate_all([deployment(), bad_deploy, trigger_auth(), bad_so])
    message = str(info.value)
    assert message.startswith("2 invalid manifest(s)")
    assert "[document 1]" in message and "Deployment/gateway" in message
    assert "[document 3]" in message and "ScaledObject/worker-gpu" in message
    assert "[document 0]" not in message and "[document 2]" not in message


# --- KEDA -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_valid_keda_objects_pass(version: str) -> None:
    validate_all([scaled_object(), trigger_auth()], version)


def test_scaledobject_non_string_trigger_metadata_fails() -> None:
    obj = scaled_object()
    obj["spec"]["triggers"][0]["metadata"]["listLength"] = 5
    _invalid(obj, "ScaledObject/worker-gpu", "$.spec.triggers[0].metadata.listLength", "5 is not of type 'string'")


def test_scaledobject_without_triggers_fails() -> None:
    obj = scaled_object()
    del obj["spec"]["triggers"]
    _invalid(obj, "$.spec", "'triggers' is a required property")
    obj["spec"]["triggers"] = []
    _invalid(obj, "$.spec.triggers")


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("spec", "maxReplicas"), 4, "'maxReplicas' was unexpected"),
        (("spec", "maxReplicaCount"), -1, "less than the minimum"),
        (("spec", "scaleTargetRef", "nam"), "x", "'nam' was unexpected"),
        (("spec", "triggers", 0, "metricType"), "Average", "is not one of"),
        (("spec", "triggers", 0, "authenticationRef", "kind"), "Secret", "is not one of"),
        (("spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleUp"), {"bogus": 1}, "bogus"),
        (("spec", "minReplicaCount"), 5, "must not exceed maxReplicaCount"),
        (("spec", "idleReplicaCount"), 0, "idleReplicaCount=0 must be less than minReplicaCount=0"),
    ],
)
def test_scaledobject_field_errors(path: tuple[Any, ...], value: Any, fragment: str) -> None:
    obj = scaled_object()
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _invalid(obj, fragment)


def test_triggerauthentication_secret_ref_requires_key() -> None:
    obj = trigger_auth()
    del obj["spec"]["secretTargetRef"][0]["key"]
    _invalid(obj, "TriggerAuthentication/redis-auth", "$.spec.secretTargetRef[0]", "'key' is a required property")


# --- Kubeflow PyTorchJob --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_valid_pytorchjob_passes(version: str) -> None:
    validate_manifest(pytorch_job(), version)


def test_pytorchjob_pod_template_is_strict() -> None:
    obj = pytorch_job()
    obj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["gpus"] = 1
    _invalid(obj, "PyTorchJob/train", "$.spec.pytorchReplicaSpecs.Worker.template.spec.containers[0]", "'gpus'")


def test_pytorchjob_env_and_ports_typed_by_k8s() -> None:
    obj = pytorch_job()
    obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"][0]["value"] = 1
    _invalid(obj, "env[0].value")


def test_pytorchjob_chief_replica_type_fails() -> None:
    obj = pytorch_job()
    obj["spec"]["pytorchReplicaSpecs"]["Chief"] = obj["spec"]["pytorchReplicaSpecs"].pop("Master")
    _invalid(obj, "$.spec.pytorchReplicaSpecs", "'Chief' was unexpected")


def test_pytorchjob_requires_pytorch_container() -> None:
    obj = pytorch_job()
    obj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = "trainer"
    _invalid(obj, "$.spec.pytorchReplicaSpecs.Worker.template.spec.containers", "named 'pytorch'")


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2), "1 was expected"),
        (lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"].update(restartPolicy="Sometimes"), "is not one of"),
        (lambda j: j["spec"]["runPolicy"].update(cleanPodPolicy="Some"), "is not one of"),
        (lambda j: j["spec"].update(nprocPerNode=1), "is not of type 'string'"),
        (lambda j: j["spec"].pop("pytorchReplicaSpecs"), "'pytorchReplicaSpecs' is a required property"),
        (lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"].update(replicas=-1), "less than the minimum"),
        (
            lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].pop("image"),
            "'image' is a required property",
        ),
        (lambda j: j["metadata"].update(labelz={}), "'labelz' was unexpected"),
    ],
)
def test_pytorchjob_field_errors(mutate: Any, fragment: str) -> None:
    obj = pytorch_job()
    mutate(obj)
    _invalid(obj, fragment)


# --- versions and schema files --------------------------------------------------------------------------------


def test_schema_version_selection() -> None:
    assert schema_version("1.28.0") == "1.28.0"
    assert schema_version("v1.29.7") == "1.29.0"
    assert schema_version(LATEST) == LATEST
    with pytest.raises(ValueError):
        schema_version("1.99.0")
    with pytest.raises(ValueError):
        schema_version("1.2.0")


def test_version_specific_fields() -> None:
    """Pod-level `resources` exists from 1.32: rejected for 1.28, accepted for the latest, in both paths."""
    deploy = deployment()
    deploy["spec"]["template"]["spec"]["resources"] = {"limits": {"cpu": "4"}}
    job = pytorch_job()
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["resources"] = {"limits": {"cpu": "4"}}
    for obj in (deploy, job):
        validate_manifest(copy.deepcopy(obj), LATEST)
        message = _invalid(obj, "'resources' was unexpected", kube_version="1.28.0")
        assert "Kubernetes 1.28.0" in message


@pytest.mark.parametrize("filename", sorted(set(CRD_SCHEMAS.values())))
def test_crd_schema_files_are_ours_and_valid(filename: str) -> None:
    schema = json.loads((CRD_SCHEMA_DIR / filename).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "Hand-written" in schema["description"] and "follows" in schema["description"]
    assert schema["properties"]["spec"].get("additionalProperties") is False or "$ref" in schema["properties"]["spec"]
