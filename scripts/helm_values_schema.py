"""Write helm/mfpo/values.schema.json (JSON Schema draft-07, which Helm 3 and 4 both read).

    python scripts/helm_values_schema.py           # write it
    python scripts/helm_values_schema.py --check   # exit 1 when the file differs (the tests run this)

Every object is closed (``additionalProperties: false``): a misspelt key fails ``helm install``
with the list of valid ones instead of being ignored. ``trainer.config`` is derived from the
trainer's own ``TrainConfig`` (trainer/config.py), so a chart value the trainer would reject
(an unknown option, a loss it does not know) is rejected before a GPU is taken.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "helm" / "mfpo" / "values.schema.json"
LOSSES = ["mfpo", "dpo", "mdpo", "adavip"]
STRATEGIES = ["multi_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp"]
SAM_TYPES = ["vit_h", "vit_l", "vit_b", "vit_tiny"]

Schema = dict[str, Any]


# -- building blocks ----------------------------------------------------------------------------


def obj(properties: dict[str, Schema], description: str = "", required: list[str] | None = None) -> Schema:
    out: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if description:
        out["description"] = description
    if required:
        out["required"] = required
    return out


def string(description: str = "", **extra: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def number(description: str = "", exclusive_minimum: float | None = None, minimum: float | None = None,
           **extra: Any) -> Schema:
    out: Schema = {"type": "number", **extra}
    if exclusive_minimum is not None:
        out["exclusiveMinimum"] = exclusive_minimum
    if minimum is not None:
        out["minimum"] = minimum
    if description:
        out["description"] = description
    return out


def integer(description: str = "", minimum: int | None = 0, **extra: Any) -> Schema:
    out: Schema = {"type": "integer", **extra}
    if minimum is not None:
        out["minimum"] = minimum
    if description:
        out["description"] = description
    return out


def boolean(description: str = "") -> Schema:
    return {"type": "boolean", **({"description": description} if description else {})}


def string_map(description: str = "") -> Schema:
    out: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
    return {**out, "description": description} if description else out


def free_object(description: str) -> Schema:
    """A Kubernetes structure passed through as is (affinity, a volume source, ...)."""
    return {"type": "object", "description": description}


def object_list(description: str) -> Schema:
    return {"type": "array", "items": {"type": "object"}, "description": description}


QUANTITY: Schema = {"type": ["string", "number"], "description": "A Kubernetes quantity, e.g. 500m, 2, 4Gi"}
SIZE: Schema = {
    "type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[mkMGTPE])?$", "description": "A size, e.g. 4Gi"
}


def resources(description: str = "Resource requests and limits") -> Schema:
    quantities = {"type": "object", "additionalProperties": QUANTITY}
    return obj({"requests": quantities, "limits": quantities}, description)


def image(description: str) -> Schema:
    return obj(
        {
            "registry": string("Registry (empty: none)"),
            "repository": string("Repository", minLength=1),
            "tag": {"type": ["string", "number"], "description": "Tag"},
            "pullPolicy": string("Pull policy", enum=["Always", "IfNotPresent", "Never"]),
        },
        description,
    )


def mfpo_image(description: str) -> Schema:
    schema = image(description)
    digest = string("Digest (sha256:...); replaces the tag", pattern=r"^(|sha256:[a-f0-9]{64})$")
    schema["properties"]["digest"] = digest
    return schema


def persistence(description: str) -> Schema:
    return obj(
        {
            "enabled": boolean("Keep the data on a PersistentVolumeClaim"),
            "size": SIZE,
            "storageClass": string("StorageClass (empty: the cluster default)"),
            "accessModes": {
                "type": "array",
                "minItems": 1,
                "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]},
            },
        },
        description,
    )


def scheduling() -> dict[str, Schema]:
    return {
        "nodeSelector": string_map("Node labels"),
        "tolerations": object_list("Tolerations"),
        "affinity": free_object("Affinity"),
    }


def pod_metadata() -> dict[str, Schema]:
    return {"podAnnotations": string_map("Pod annotations"), "podLabels": string_map("Pod labels")}


PROBE_TIMINGS: dict[str, Schema] = {
    "initialDelaySeconds": integer(),
    "periodSeconds": integer(minimum=1),
    "timeoutSeconds": integer(minimum=1),
    "failureThreshold": integer(minimum=1),
}


def probe(description: str) -> Schema:
    return obj(PROBE_TIMINGS, description)


def ping_probe(description: str) -> Schema:
    """A worker's liveness probe: the timings, and whether it is on."""
    return obj({"enabled": boolean("Restart a worker that stops answering a Celery ping"), **PROBE_TIMINGS},
               description)


def keda(description: str) -> Schema:
    return obj(
        {
            "enabled": boolean("Scale with a KEDA ScaledObject on the queue length"),
            "minReplicaCount": integer("Fewest pods"),
            "maxReplicaCount": integer("Most pods", minimum=1),
            "listLength": integer("Queued tasks per pod", minimum=1),
            "activationListLength": integer("Queued tasks above which KEDA scales up from zero"),
            "pollingInterval": integer("Seconds between looks at the queue", minimum=1),
            "cooldownPeriod": integer("Seconds of an empty queue before scaling to zero"),
        },
        description,
    )


# -- trainer.config from TrainConfig ------------------------------------------------------------


def _draft07(prop: Schema) -> Schema:
    """pydantic's (2020-12) property schema as draft-07, without titles and defaults."""
    out = {k: v for k, v in prop.items() if k not in ("title", "default")}
    if "prefixItems" in out:  # a fixed-length tuple
        out["items"] = [_draft07(p) for p in out.pop("prefixItems")]
    if "anyOf" in out:
        out["anyOf"] = [_draft07(p) for p in out["anyOf"]]
    if "items" in out and isinstance(out["items"], dict):
        out["items"] = _draft07(out["items"])
    return out


def train_config() -> Schema:
    from trainer.config import TrainConfig  # the installed package (make install)

    properties = {
        name: _draft07(prop)
        for name, prop in TrainConfig.model_json_schema()["properties"].items()
        if name != "loss"  # trainer.loss is its own value (the --loss flag)
    }
    return obj(properties, "TrainConfig options of the run (trainer/config.py), written to the --config file")


# -- the chart ----------------------------------------------------------------------------------


def values_schema() -> Schema:
    gpu_pod = {
        "nodeSelector": string_map("Node labels of GPU nodes"),
        "tolerations": object_list("Tolerations of the GPU nodes' taints"),
        "runtimeClassName": string("RuntimeClass (empty: the cluster default)"),
        "affinity": free_object("Affinity"),
    }
    properties: dict[str, Schema] = {
        "global": obj(
            {
                "imageRegistry": string("Registry of every image"),
                "imagePullSecrets": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
            "Global parameters",
        ),
        "nameOverride": string("Replaces the chart name in resource names"),
        "fullnameOverride": string("Replaces the release-chart prefix"),
        "commonLabels": string_map("Labels of every resource"),
        "commonAnnotations": string_map("Annotations of every resource"),
        "image": mfpo_image("The CPU image (gateway, CPU workers, beat)"),
        "gpuImage": mfpo_image("The CUDA image (GPU workers, trainer)"),
        "serviceAccount": obj(
            {
                "create": boolean(),
                "name": string(),
                "annotations": string_map(),
                "automountServiceAccountToken": boolean(),
            },
            "ServiceAccount of the pods",
        ),
        "podSecurityContext": free_object("Pod security context of the mfpo pods"),
        "containerSecurityContext": free_object("Security context of every container"),
        "settings": obj(
            {
                "queuePrefix": string("Prefix of the Celery queue names", pattern=r"^[A-Za-z0-9_.-]*$"),
                "maxBodyBytes": integer(minimum=1024),
                "maxUploadBytes": integer(minimum=1024),
                "maxItemsPerRequest": integer(minimum=1),
                "maxTextChars": integer(minimum=1),
                "maxImagePixels": integer(minimum=1),
                "rateLimitPerMinute": integer(minimum=1),
                "visibilityTimeoutS": integer(minimum=60),
                "taskMaxRetries": integer(),
                "retryBackoffMaxS": integer(minimum=1),
                "reconcileIntervalS": integer(minimum=1),
                "chunkSize": integer(minimum=1, maximum=4096),
                "chunkMaxBytes": integer(minimum=1024),
                "heartbeatIntervalS": number(exclusive_minimum=0),
                "overdueAfterS": number(exclusive_minimum=0),
                "queuedTimeoutS": number(exclusive_minimum=0),
                "submissionLeaseS": number(exclusive_minimum=0),
                "closeWaitS": number(minimum=0),
                "maxWorkingPixels": integer(minimum=1),
                "extraEnv": object_list("Extra environment variables (EnvVar list)"),
            },
            "Platform settings (MFPO_* variables)",
        ),
        "auth": obj(
            {
                "apiKeys": {
                    "type": "array",
                    "items": obj(
                        {
                            "tenant": string("Tenant", pattern=r"^[A-Za-z0-9_.-]+$"),
                            "key": string("API key", minLength=8, pattern=r"^[^,:\s]+$"),
                        },
                        required=["tenant", "key"],
                    ),
                },
                "existingSecret": string(),
                "existingSecretKey": string(minLength=1),
            },
            "Gateway API keys",
        ),
        "objectStore": obj(
            {
                "endpoint": string("host:port of an external S3 endpoint", pattern=r"^([^/:\s]+(:[0-9]+)?)?$"),
                "secure": boolean(),
                "bucket": string("Bucket", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
                "createBucket": boolean(),
                "accessKey": string(),
                "secretKey": string("Secret key (8+ characters)", pattern=r"^(|.{8,})$"),
                "existingSecret": string(),
                "existingSecretAccessKeyKey": string(minLength=1),
                "existingSecretSecretKeyKey": string(minLength=1),
                "publicEndpoint": string("host:port clients reach the store at", pattern=r"^([^/:\s]+(:[0-9]+)?)?$"),
                "publicSecure": boolean(),
            },
            "Object store",
        ),
        "minio": obj(
            {
                "enabled": boolean(),
                "image": image("MinIO image"),
                "persistence": persistence("MinIO's volume"),
                "ingress": obj(
                    {
                        "enabled": boolean(),
                        "className": string(),
                        "host": string("Host name", minLength=1),
                        "annotations": string_map(),
                        "tls": object_list("Ingress TLS entries"),
                    },
                    "An Ingress on MinIO's S3 port (presigned URLs)",
                ),
                "resources": resources(),
                **scheduling(),
            },
            "In-chart MinIO",
        ),
        "redis": obj(
            {
                "enabled": boolean(),
                "image": image("Redis image"),
                "auth": obj(
                    {
                        "enabled": boolean(),
                        "password": string(),
                        "existingSecret": string(),
                        "existingSecretPasswordKey": string(minLength=1),
                    }
                ),
                "persistence": persistence("Redis' volume"),
                "resources": resources(),
                **scheduling(),
            },
            "In-chart Redis",
        ),
        "externalRedis": obj(
            {
                "host": string(),
                "port": integer(minimum=1, maximum=65535),
                "database": integer(maximum=15),
                "tls": boolean(),
                "username": string(),
                "password": string(),
                "existingSecret": string(),
                "existingSecretPasswordKey": string(minLength=1),
            },
            "External Redis",
        ),
        "models": obj(
            {
                "existingClaim": string("PVC of the weights"),
                "volume": free_object("Any other volume source of the weights"),
                "mountPath": string(pattern=r"^/"),
                "groundingModel": string(pattern=r"^/"),
                "samCheckpoint": string(pattern=r"^/"),
                "samType": string(enum=SAM_TYPES),
                "clipModel": string("CLIP folder (adavip negatives); empty: off", pattern=r"^(/.*)?$"),
                "inpaintingModel": string("diffusers inpainting folder (adavip); empty: the classical fill",
                                          pattern=r"^(/.*)?$"),
                "policyModel": string("LLaVA-1.5 folder (mbpo negatives); empty: off", pattern=r"^(/.*)?$"),
            },
            "Model weights",
        ),
        "gateway": obj(
            {
                "replicaCount": integer("Gateway pods"),
                "containerPort": integer(minimum=1, maximum=65535),
                "resources": resources(),
                "tmpSizeLimit": SIZE,
                "terminationGracePeriodSeconds": integer(),
                "livenessProbe": probe("GET /healthz"),
                "readinessProbe": probe("GET /readyz"),
                "startupProbe": probe("GET /healthz"),
                "service": obj(
                    {
                        "type": string(enum=["ClusterIP", "NodePort", "LoadBalancer"]),
                        "port": integer(minimum=1, maximum=65535),
                        "annotations": string_map(),
                    }
                ),
                "ingress": obj(
                    {
                        "enabled": boolean(),
                        "className": string(),
                        "annotations": string_map(),
                        "hosts": {
                            "type": "array",
                            "items": obj(
                                {
                                    "host": string(),
                                    "paths": {
                                        "type": "array",
                                        "items": obj(
                                            {
                                                "path": string(pattern=r"^/"),
                                                "pathType": string(enum=["Prefix", "Exact", "ImplementationSpecific"]),
                                            },
                                            required=["path", "pathType"],
                                        ),
                                    },
                                },
                                required=["host", "paths"],
                            ),
                        },
                        "tls": object_list("Ingress TLS entries"),
                    }
                ),
                "autoscaling": obj(
                    {
                        "enabled": boolean(),
                        "minReplicas": integer(minimum=1),
                        "maxReplicas": integer(minimum=1),
                        "targetCPUUtilizationPercentage": integer(minimum=1, maximum=100),
                    }
                ),
                "pdb": obj({"enabled": boolean(), "minAvailable": {"type": ["integer", "string"], "minimum": 0}}),
                "metrics": obj({"scrapeAnnotations": boolean("Prometheus scrape annotations for GET /metrics")}),
                **pod_metadata(),
                **scheduling(),
                "topologySpreadConstraints": object_list("Topology spread constraints"),
            },
            "The REST gateway",
        ),
        "workerCpu": obj(
            {
                "replicaCount": integer("CPU worker pods"),
                "concurrency": integer("Worker processes per pod", minimum=1),
                "resources": resources(),
                "tmpSizeLimit": SIZE,
                "terminationGracePeriodSeconds": integer(),
                "livenessProbe": ping_probe("Celery ping of the CPU workers"),
                "keda": keda("KEDA on the cpu queue"),
                **pod_metadata(),
                **scheduling(),
            },
            "CPU workers",
        ),
        "workerGpu": obj(
            {
                "enabled": boolean(),
                "replicaCount": integer("GPU worker pods"),
                "gpus": integer("GPUs per pod", minimum=1),
                "resources": resources(),
                "tmpSizeLimit": SIZE,
                "shmSizeLimit": SIZE,
                "terminationGracePeriodSeconds": integer(),
                **gpu_pod,
                "livenessProbe": ping_probe("Celery ping of the GPU workers"),
                "keda": keda("KEDA on the gpu queue"),
                **pod_metadata(),
            },
            "GPU workers",
        ),
        "beat": obj(
            {"enabled": boolean(), "resources": resources(), "nodeSelector": string_map(),
             "tolerations": object_list("Tolerations")},
            "The periodic reconcile",
        ),
        "flower": obj(
            {
                "enabled": boolean(),
                "port": integer(minimum=1, maximum=65535),
                "resources": resources(),
            },
            "Flower",
        ),
        "trainer": obj(
            {
                "enabled": boolean(),
                "runName": string("Run name (a DNS label)", pattern=r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$"),
                "dataset": string("s3://bucket/prefix or a folder", pattern=r"^(|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|/.*)$"),
                "model": string("Model folder", minLength=1),
                "output": string("Output URI", pattern=r"^(|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|/.*)$"),
                "loss": string("Loss", enum=LOSSES),
                "config": train_config(),
                "gpus": integer("GPUs per node", minimum=1),
                "strategy": string("accelerate configuration", enum=STRATEGIES),
                "resources": resources(),
                "scratchSizeLimit": SIZE,
                "shmSizeLimit": SIZE,
                "backoffLimit": integer(),
                "activeDeadlineSeconds": integer(),
                "ttlSecondsAfterFinished": integer(),
                **gpu_pod,
                "podAnnotations": string_map(),
                "pytorchJob": obj(
                    {
                        "enabled": boolean(),
                        "nodes": integer("Nodes of the run", minimum=1),
                        "port": integer(minimum=1, maximum=65535),
                        "cleanPodPolicy": string(enum=["None", "Running", "All"]),
                    }
                ),
            },
            "The training Job",
        ),
        "eval": obj(
            {
                "enabled": boolean(),
                "config": free_object("ReportConfig of mfpo eval report (mfpo/eval/benchmarks.py), the --config file"),
                "output": string("Report URI (empty: <trainer output>/eval)",
                                 pattern=r"^(|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$"),
                "compare": boolean("Also evaluate trainer.model (--compare)"),
                "extraArgs": {"type": "array", "items": {"type": "string"}},
                "waitSeconds": integer("Longest wait for the trainer run"),
                "gpus": integer("GPUs of the eval step", minimum=1),
                "resources": resources("The eval step"),
                "mergeResources": resources("The merge step"),
                "publishResources": resources("The publish step"),
                "scratchSizeLimit": SIZE,
                "shmSizeLimit": SIZE,
                "benchmarks": obj({"existingClaim": string("PVC of the benchmark files"),
                                   "mountPath": string(pattern=r"^/")}),
                "judgeKeySecret": obj({"name": string("Secret of the judge's API key"), "key": string(minLength=1)}),
                "backoffLimit": integer(),
                "activeDeadlineSeconds": integer(),
                "ttlSecondsAfterFinished": integer(),
                **gpu_pod,
                "podAnnotations": string_map(),
            },
            "The evaluation Job (mfpo eval report on the trainer's run)",
        ),
        "networkPolicy": obj(
            {
                "enabled": boolean(),
                "gatewayIngressFrom": object_list("NetworkPolicyPeers allowed to reach the gateway"),
                "kedaNamespace": string(),
                "extraMinioIngressFrom": object_list("More NetworkPolicyPeers allowed to reach MinIO"),
            },
            "NetworkPolicies",
        ),
    }
    schema = obj(properties, "Values of the mfpo chart (written by scripts/helm_values_schema.py)")
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "mfpo chart values", **schema}


def render() -> str:
    return json.dumps(values_schema(), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is not what this script writes")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not SCHEMA_PATH.exists() or SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is stale: run python scripts/helm_values_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
