"""The Helm chart (helm/mfpo): linted and rendered by a real Helm engine (the helm-python-sdk wheel), every
rendered manifest validated offline against the Kubernetes API schemas (tests/support/k8s.py), and the fields
that matter checked: GPU limits on GPU pods only, no secret in a ConfigMap, probes, security contexts, the
trainer's command line against the values, KEDA on the right queue, the values schema rejecting bad values.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from support.k8s import load_yaml_documents, validate_all

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "mfpo"
RELEASE, NAMESPACE = "mfpo", "ml"
FULLNAME = "mfpo"  # the release name contains the chart name
KUBE_VERSIONS = ("1.27.0", "1.37.0")  # the chart's kubeVersion floor, and the newest schemas we have

# Known secret values: none of them may appear outside a Secret.
API_KEY = "sk-tenant-a-0123456789"
S3_SECRET = "s3-secret-value-abcdefgh"
S3_ACCESS = "s3-access-value-ijkl"
REDIS_PASSWORD = "redis-password-mnopqrst"
SECRET_VALUES = {
    "auth": {"apiKeys": [{"tenant": "acme", "key": API_KEY}]},
    "objectStore": {"accessKey": S3_ACCESS, "secretKey": S3_SECRET},
    "redis": {"auth": {"password": REDIS_PASSWORD}},
}
MODELS = {"models": {"existingClaim": "mfpo-weights"}}
DATASET = "s3://mfpo/tenants/acme/jobs/0123abcd/out"

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "gpu-workers": {
        **MODELS, "workerGpu": {"enabled": True, "replicaCount": 2, "gpus": 2, "runtimeClassName": "nvidia"},
    },
    "external-storage-and-broker": {
        "minio": {"enabled": False},
        "redis": {"enabled": False},
        "objectStore": {"endpoint": "s3.eu-west-1.amazonaws.com", "bucket": "team-mfpo", "existingSecret": "s3-creds",
                        "existingSecretAccessKeyKey": "AWS_ACCESS_KEY_ID",
                        "existingSecretSecretKeyKey": "AWS_SECRET_ACCESS_KEY"},
        "externalRedis": {"host": "redis.infra.svc", "port": 6380, "database": 3, "tls": True,
                          "existingSecret": "redis-creds", "existingSecretPasswordKey": "password"},
        "auth": {"existingSecret": "mfpo-api-keys", "existingSecretKey": "keys"},
    },
    "trainer": {
        **MODELS,
        "trainer": {"enabled": True, "runName": "llava7b-mfpo", "dataset": DATASET, "loss": "mfpo", "gpus": 4,
                    "strategy": "deepspeed_zero3", "config": {"beta": 0.2, "eta": 0.5, "weights": [1.0, 0.5, 0.25],
                                                                "learning_rate": 1e-5, "mixed_precision": "bf16"}},
    },
    "trainer-one-gpu": {**MODELS, "trainer": {"enabled": True, "dataset": DATASET, "loss": "adavip", "gpus": 1}},
    "keda": {**MODELS, "settings": {"queuePrefix": "prod-"},
             "workerCpu": {"keda": {"enabled": True, "minReplicaCount": 1, "maxReplicaCount": 8}},
             "workerGpu": {"enabled": True, "keda": {"enabled": True, "minReplicaCount": 0, "maxReplicaCount": 3}}},
    "pytorchjob": {
        **MODELS,
        "trainer": {"enabled": True, "runName": "multinode", "dataset": DATASET, "loss": "mdpo", "gpus": 8,
                    "pytorchJob": {"enabled": True, "nodes": 3}},
    },
    "eval": {
        **MODELS,
        "trainer": {"enabled": True, "runName": "llava7b-mfpo", "dataset": DATASET, "gpus": 2},
        "eval": {"enabled": True, "gpus": 1, "benchmarks": {"existingClaim": "mfpo-benchmarks"},
                 "judgeKeySecret": {"name": "judge-api", "key": "token"}, "extraArgs": ["--dtype", "bfloat16"],
                 "config": {"pope": {"splits": ["/benchmarks/pope/coco_pope_random.json"],
                                     "image_dir": "/benchmarks/coco/val2014"},
                            "generation": {"batch_size": 4, "max_new_tokens": 256}}},
    },
    "everything": {
        **MODELS,
        **SECRET_VALUES,
        "global": {"imagePullSecrets": ["regcred"]},
        "commonLabels": {"team": "alignment"},
        "gateway": {"ingress": {"enabled": True, "className": "nginx", "tls": [{"hosts": ["mfpo.example.com"],
                                                                               "secretName": "mfpo-tls"}]},
                    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}},
        "workerGpu": {"enabled": True, "keda": {"enabled": True}},
        "workerCpu": {"keda": {"enabled": True}},
        "flower": {"enabled": True},
        "minio": {"ingress": {"enabled": True, "host": "s3.mfpo.example.com",
                              "tls": [{"hosts": ["s3.mfpo.example.com"], "secretName": "s3-tls"}]}},
        "networkPolicy": {"enabled": True},
        "trainer": {"enabled": True, "dataset": DATASET, "gpus": 2},
        "eval": {"enabled": True},
    },
}


# -- rendering ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def chart() -> Any:
    return helm_python.Chart.load(str(CHART))


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@cache
def _render_cached(values_json: str) -> tuple[dict[str, Any], ...]:
    rendered = chart().render(json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(load_yaml_documents(text))
    return tuple(docs)


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_render_cached(json.dumps(values, sort_keys=True))))


def notes(values: dict[str, Any]) -> str:
    rendered = chart().render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {[d['metadata']['name'] for d in of_kind(docs, kind)]}"
    return matches[0]


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``Kind/name[/replica]``, pod template) of every workload."""
    for doc in docs:
        label = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield label, doc["spec"]["template"]
        elif doc["kind"] == "Pod":  # the `helm test` pod
            yield label, doc
        elif doc["kind"] == "PyTorchJob":
            for replica, spec in doc["spec"]["pytorchReplicaSpecs"].items():
                yield f"{label}/{replica}", spec["template"]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for label, template in pod_templates(docs):
        for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            yield f"{label}/{container['name']}", template, container


def component(doc_or_template: dict[str, Any]) -> str:
    return doc_or_template["metadata"]["labels"]["app.kubernetes.io/component"]


def container_of(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return named(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]


# -- lint, render, validate ---------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_is_clean(scenario: str) -> None:
    report = helm_python.lint(str(CHART), SCENARIOS[scenario], strict=True, namespace=NAMESPACE,
                              kube_version="v1.29.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_manifest_is_valid_kubernetes(scenario: str, kube_version: str) -> None:
    docs = render(SCENARIOS[scenario])
    assert docs
    validate_all(docs, kube_version)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "two resources of one kind share a name"
    for doc in docs:
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE and labels["app.kubernetes.io/part-of"] == "mfpo"


def test_default_install_runs_the_whole_platform() -> None:
    docs = render({})
    deployments = {component(d) for d in of_kind(docs, "Deployment")}
    assert deployments == {"gateway", "worker-cpu", "beat"}
    assert {component(d) for d in of_kind(docs, "StatefulSet")} == {"redis", "minio"}
    assert not of_kind(docs, "Job") and not of_kind(docs, "ScaledObject") and not of_kind(docs, "NetworkPolicy")
    assert of_kind(docs, "PodDisruptionBudget") and of_kind(docs, "ServiceAccount")
    for sts in of_kind(docs, "StatefulSet"):
        claims = sts["spec"]["volumeClaimTemplates"]
        assert claims[0]["metadata"]["name"] == "data" and claims[0]["spec"]["resources"]["requests"]["storage"]


# -- the fields that matter ---------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_gpu_limits_only_on_gpu_pods(scenario: str) -> None:
    values = merge(chart().values, SCENARIOS[scenario])
    for label, template, container in containers(render(SCENARIOS[scenario])):
        limits = container["resources"].get("limits", {})
        requests = container["resources"].get("requests", {})
        kind = component(template)
        if kind == "worker-gpu":
            assert limits.get("nvidia.com/gpu") == values["workerGpu"]["gpus"], label
        elif kind == "trainer":
            assert limits.get("nvidia.com/gpu") == values["trainer"]["gpus"], label
        elif kind == "eval":  # the GPU is the eval step's; merging (CPU) and publishing need none
            want = values["eval"]["gpus"] if container["name"] == "eval" else None
            assert limits.get("nvidia.com/gpu") == want and "nvidia.com/gpu" not in requests, label
        else:
            assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in requests, label
            spec = template["spec"]
            assert "runtimeClassName" not in spec, label
            assert "nvidia.com/gpu.present" not in spec.get("nodeSelector", {}), label


def test_gpu_workers_land_on_gpu_nodes_with_models_and_route_the_regions_stage() -> None:
    docs = render(SCENARIOS["gpu-workers"])
    deployment = named(docs, "Deployment", f"{FULLNAME}-worker-gpu")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    container = spec["containers"][0]
    assert container["image"].endswith("-cuda")
    assert container["command"] == ["mfpo", "worker", "--queues", "gpu", "--gpus", "2"]  # a process per GPU
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "mfpo-weights", "readOnly": True}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    # The gateway and CPU workers see the model paths (so regions go to the gpu queue) but never mount them.
    settings = named(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]
    assert settings["MFPO_GROUNDING_MODEL"].startswith("/models/") and settings["MFPO_SAM_CHECKPOINT"]
    for name in ("gateway", "worker-cpu"):
        mounts = container_of(docs, "Deployment", f"{FULLNAME}-{name}")["volumeMounts"]
        assert all(m["name"] != "models" for m in mounts)
    default_settings = named(render({}), "ConfigMap", f"{FULLNAME}-settings")["data"]
    assert "MFPO_GROUNDING_MODEL" not in default_settings  # no GPU workers: regions stay on the cpu queue


def test_gpu_pods_without_a_models_volume_are_refused() -> None:
    with pytest.raises(helm_python.HelmError, match=r"models\.existingClaim"):
        chart().render({"workerGpu": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    docs = render({"workerGpu": {"enabled": True}, "models": {"volume": {"nfs": {"server": "nfs", "path": "/w"}}}})
    volumes = named(docs, "Deployment", f"{FULLNAME}-worker-gpu")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "nfs": {"server": "nfs", "path": "/w"}} in volumes


def _texts_outside_secrets(docs: list[dict[str, Any]]) -> str:
    return "\n".join(yaml.safe_dump(d) for d in docs if d["kind"] != "Secret")


@pytest.mark.parametrize("scenario", ["everything", "external-storage-and-broker", "default"])
def test_secrets_never_leave_the_secret(scenario: str) -> None:
    import base64

    values = merge(SCENARIOS[scenario], SECRET_VALUES) if scenario != "external-storage-and-broker" else SCENARIOS[
        scenario]
    docs = render(values)
    outside = _texts_outside_secrets(docs)
    for secret in (API_KEY, S3_SECRET, S3_ACCESS, REDIS_PASSWORD):
        assert secret not in outside
    secrets = of_kind(docs, "Secret")
    for secret in secrets:
        for value in secret.get("data", {}).values():
            assert base64.b64decode(value).decode() not in outside or not base64.b64decode(value)
    for config_map in of_kind(docs, "ConfigMap"):
        for key in config_map["data"]:
            assert not re.search(r"SECRET_KEY|ACCESS_KEY|PASSWORD|^MFPO_API_KEYS$", key), (config_map, key)
    # Containers get secrets by reference only, never as literal values.
    for label, _template, container in containers(docs):
        for env in container.get("env", []):
            if re.search(r"SECRET|PASSWORD|ACCESS_KEY|API_KEYS$", env["name"]):
                assert "valueFrom" in env and "value" not in env, (label, env)


def test_the_chart_secret_holds_the_given_values() -> None:
    import base64

    docs = render(SCENARIOS["everything"])
    data = {k: base64.b64decode(v).decode() for k, v in named(docs, "Secret", FULLNAME)["data"].items()}
    assert data == {"api-keys": f"acme:{API_KEY}", "s3-access-key": S3_ACCESS, "s3-secret-key": S3_SECRET,
                    "redis-password": REDIS_PASSWORD}
    generated = {k: base64.b64decode(v).decode() for k, v in named(render({}), "Secret", FULLNAME)["data"].items()}
    assert generated["api-keys"].startswith("default:") and len(generated["api-keys"]) == len("default:") + 32
    assert len(generated["s3-secret-key"]) >= 8 and generated["redis-password"]
    assert "tenant \"default\"" in notes({})


def test_existing_secrets_are_used_and_no_chart_secret_is_made() -> None:
    docs = render(SCENARIOS["external-storage-and-broker"])
    assert not of_kind(docs, "Secret") and not of_kind(docs, "StatefulSet")
    gateway = named(docs, "Deployment", f"{FULLNAME}-gateway")["spec"]["template"]["spec"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in gateway["containers"][0]["env"] if "valueFrom" in e}
    assert env["MFPO_S3_ACCESS_KEY"] == {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    assert env["MFPO_S3_SECRET_KEY"] == {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["MFPO_REDIS_PASSWORD"] == {"name": "redis-creds", "key": "password"}
    keys = next(v for v in gateway["volumes"] if v["name"] == "api-keys")["secret"]
    assert keys == {"secretName": "mfpo-api-keys", "items": [{"key": "keys", "path": "api-keys"}]}
    mount = next(m for m in gateway["containers"][0]["volumeMounts"] if m["name"] == "api-keys")
    keys_file = next(e["value"] for e in gateway["containers"][0]["env"] if e["name"] == "MFPO_API_KEYS_FILE")
    assert keys_file == f"{mount['mountPath']}/api-keys" and mount["readOnly"] is True
    settings = named(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]
    assert settings["MFPO_S3_ENDPOINT"] == "s3.eu-west-1.amazonaws.com" and settings["MFPO_S3_SECURE"] == "true"
    assert settings["MFPO_S3_BUCKET"] == "team-mfpo" and settings["MFPO_S3_CREATE_BUCKET"] == "false"
    assert settings["MFPO_REDIS_URL"] == "rediss://redis.infra.svc:6380/3"


def test_external_endpoints_are_required() -> None:
    with pytest.raises(helm_python.HelmError, match=r"objectStore\.endpoint is required"):
        chart().render({"minio": {"enabled": False}}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm_python.HelmError, match=r"objectStore\.accessKey"):
        chart().render({"minio": {"enabled": False}, "objectStore": {"endpoint": "s3:9000"}}, name=RELEASE,
                       namespace=NAMESPACE)


@pytest.mark.parametrize("scenario", ["default", "everything", "external-storage-and-broker"])
def test_the_pods_settings_are_what_the_platform_reads(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MFPO_* variable the chart sets is one of the platform's settings (PlatformSettings, GatewaySettings,
    S3Settings), and the ConfigMap + Secret, read the way the pods read them, make valid settings that reach the
    chart's endpoints."""
    from mfpo.jobs.settings import PlatformSettings, env_names
    from services.gateway.settings import GatewaySettings

    docs = render(merge(SCENARIOS[scenario], SECRET_VALUES) if scenario == "default" else SCENARIOS[scenario])
    known = env_names(PlatformSettings, GatewaySettings)
    env: dict[str, str] = dict(named(docs, "ConfigMap", f"{FULLNAME}-settings")["data"])
    for _label, _template, container in containers(docs):
        for var in container.get("env", []):
            if var["name"].startswith("MFPO_"):
                env[var["name"]] = "from-secret-" + var["name"].lower()
    unknown = sorted(k for k in env if k.startswith("MFPO_") and k not in known)
    assert not unknown, f"the platform does not read {unknown}"
    for key in list(os.environ):
        if key.startswith("MFPO_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MFPO_API_KEYS_FILE", raising=False)  # a mounted file in the gateway pod
    settings = PlatformSettings()
    GatewaySettings()
    services = {d["metadata"]["name"] for d in of_kind(docs, "Service")}
    host = settings.redis_url.split("://", 1)[1].split(":", 1)[0]
    assert host in services or scenario == "external-storage-and-broker"
    s3 = settings.s3
    assert s3.endpoint and (s3.endpoint.split(":")[0] in services or not s3.create_bucket)
    assert settings.broker_url().startswith(settings.redis_url.split("://")[0] + "://:from-secret-mfpo_redis_password@")


def test_gateway_probes_hit_the_health_routes_on_a_declared_port() -> None:
    docs = render({})
    container = container_of(docs, "Deployment", f"{FULLNAME}-gateway")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["command"][-1] == str(ports["http"])
    service = named(docs, "Service", f"{FULLNAME}-gateway")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    from services.gateway.app import create_app

    routes = create_app().openapi()["paths"]
    assert "get" in routes["/healthz"] and "get" in routes["/readyz"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_pod_runs_as_non_root_on_a_read_only_root_with_resources(scenario: str) -> None:
    for label, template, container in containers(render(SCENARIOS[scenario])):
        pod_security = template["spec"]["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0, label
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, label
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, label
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"], label
        for key in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][key]), (label, key)
        # A read-only root needs somewhere to write: /tmp (or the data volume) is a volume.
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts or "/data" in mounts, label
        assert template["spec"].get("automountServiceAccountToken") is False, label


def test_exactly_one_beat_and_workers_without_it() -> None:
    docs = render({"workerCpu": {"replicaCount": 5}})
    beat = named(docs, "Deployment", f"{FULLNAME}-beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    assert container_of(docs, "Deployment", f"{FULLNAME}-beat")["command"] == ["mfpo", "beat"]
    worker = container_of(docs, "Deployment", f"{FULLNAME}-worker-cpu")
    assert "inspect ping" in worker["livenessProbe"]["exec"]["command"][-1]  # run for real in test_worker_deploy
    assert "livenessProbe" not in container_of(docs, "Deployment", f"{FULLNAME}-beat")
    assert "--beat" not in worker["command"] and named(docs, "Deployment", f"{FULLNAME}-worker-cpu")["spec"][
        "replicas"] == 5


# -- KEDA -----------------------------------------------------------------------------------------


def test_keda_scales_each_worker_on_its_own_queue() -> None:
    from mfpo.jobs.settings import PlatformSettings
    from worker.app import create_celery, queue_name

    docs = render(SCENARIOS["keda"])
    app = create_celery(PlatformSettings(queue_prefix="prod-"))
    objects = {component(d): d for d in of_kind(docs, "ScaledObject")}
    assert set(objects) == {"worker-cpu", "worker-gpu"}
    auth = of_kind(docs, "TriggerAuthentication")
    assert len(auth) == 1
    secret_ref = auth[0]["spec"]["secretTargetRef"][0]
    gateway_env = {e["name"]: e for e in container_of(docs, "Deployment", f"{FULLNAME}-gateway")["env"]}
    assert secret_ref["parameter"] == "password"
    assert {k: secret_ref[k] for k in ("name", "key")} == gateway_env["MFPO_REDIS_PASSWORD"]["valueFrom"][
        "secretKeyRef"]
    for kind, scaled in objects.items():
        queue = kind.removeprefix("worker-")
        target = scaled["spec"]["scaleTargetRef"]
        assert target["name"] == f"{FULLNAME}-{kind}" and target["kind"] == "Deployment"
        assert "replicas" not in named(docs, "Deployment", f"{FULLNAME}-{kind}")["spec"]  # KEDA owns it
        trigger = scaled["spec"]["triggers"][0]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue_name(app, queue) == f"prod-{queue}"
        assert trigger["metadata"]["address"] == f"{FULLNAME}-redis:6379"
        assert trigger["authenticationRef"]["name"] == auth[0]["metadata"]["name"]
    gpu = objects["worker-gpu"]["spec"]
    assert gpu["minReplicaCount"] == 0 and gpu["maxReplicaCount"] == 3


# -- the trainer ----------------------------------------------------------------------------------


def _flags(args: list[str]) -> dict[str, str]:
    assert len(args) % 2 == 0, args
    return dict(zip(args[::2], args[1::2], strict=True))


def _train_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [c for c in of_kind(docs, "ConfigMap") if component(c) == "trainer"]
    return json.loads(config_map["data"]["config.json"])


@pytest.mark.parametrize("scenario", ["trainer", "trainer-one-gpu", "pytorchjob"])
def test_the_trainers_arguments_match_the_values(scenario: str) -> None:
    from trainer.config import TrainConfig

    values = merge(chart().values, SCENARIOS[scenario])
    docs = render(SCENARIOS[scenario])
    trainer = values["trainer"]
    workloads = [d for d in docs if d["kind"] in ("Job", "PyTorchJob")]
    assert len(workloads) == 1 and workloads[0]["metadata"]["name"] == f"{FULLNAME}-train-{trainer['runName']}"
    for label, template, container in containers(workloads):
        flags = _flags(container["args"])
        assert flags == {"--dataset": trainer["dataset"], "--model": trainer["model"],
                         "--output": f"s3://{values['objectStore']['bucket']}/runs/{trainer['runName']}",
                         "--loss": trainer["loss"], "--config": "/etc/mfpo/train/config.json"}, label
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/etc/mfpo/train"] == "train-config" and mounts["/models"] == "models"
        assert template["spec"]["restartPolicy"] in ("Never", "OnFailure")
    config = _train_config(docs)
    assert config == trainer["config"]
    TrainConfig.model_validate({**config, "loss": trainer["loss"]})  # what `mfpo train --config` will accept


def test_one_gpu_runs_mfpo_train_and_several_run_accelerate_launch() -> None:
    one = named(render(SCENARIOS["trainer-one-gpu"]), "Job", f"{FULLNAME}-train-run-1")
    assert one["spec"]["template"]["spec"]["containers"][0]["command"] == ["mfpo", "train"]
    docs = render(SCENARIOS["trainer"])
    job = named(docs, "Job", f"{FULLNAME}-train-llava7b-mfpo")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["accelerate", "launch"] and command[-2:] == ["-m", "trainer"]
    launch = _flags(command[2:-2])
    assert launch["--num_processes"] == "4" and launch["--num_machines"] == "1"
    assert launch["--config_file"] == "/app/configs/accelerate/deepspeed_zero3.yaml"
    assert (ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml").is_file()  # the image copies the repo to /app
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    config = _train_config(docs)
    assert config["beta"] == 0.2 and config["weights"] == [1.0, 0.5, 0.25] and config["learning_rate"] == 1e-5


def test_every_accelerate_strategy_of_the_schema_ships_a_config() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for strategy in schema["properties"]["trainer"]["properties"]["strategy"]["enum"]:
        assert (ROOT / "configs" / "accelerate" / f"{strategy}.yaml").is_file(), strategy


def test_pytorchjob_launches_gpus_processes_on_every_node(tmp_path: Path) -> None:
    """The Master and Workers run one shell line: run it with the variables the training operator sets and a
    stand-in `accelerate` that prints its arguments."""
    docs = render(SCENARIOS["pytorchjob"])
    (job,) = of_kind(docs, "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    assert not of_kind(docs, "Job")
    fake = tmp_path / "accelerate"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    fake.chmod(0o755)
    for replica, rank in (("Master", 0), ("Worker", 2)):
        container = replicas[replica]["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch"
        assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in container["ports"]
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "WORLD_SIZE": "3", "RANK": str(rank),
               "MASTER_ADDR": "multinode-master-0", "MASTER_PORT": "23456"}
        out = subprocess.run([*container["command"], *container["args"]], env=env, capture_output=True, text=True,
                             check=True).stdout.splitlines()
        assert out[0] == "launch" and out[out.index("-m") + 1] == "trainer"
        launch = _flags(out[1 : out.index("-m")])
        assert launch == {"--config_file": "/app/configs/accelerate/multi_gpu.yaml", "--num_machines": "3",
                          "--machine_rank": str(rank), "--main_process_ip": "multinode-master-0",
                          "--main_process_port": "23456", "--num_processes": "24"}
        assert out[out.index("-m") + 2:] == container["args"]


def test_the_trainer_needs_a_dataset() -> None:
    with pytest.raises(helm_python.HelmError, match=r"trainer\.dataset is required"):
        chart().render({**MODELS, "trainer": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)


# -- network policies -----------------------------------------------------------------------------


def _allowed_components(policy: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule.get("from", []):
            for expression in peer.get("podSelector", {}).get("matchExpressions", []):
                out |= set(expression["values"])
    return out


def test_network_policies_let_only_the_platform_reach_redis_and_minio() -> None:
    docs = render(SCENARIOS["everything"])
    redis = named(docs, "NetworkPolicy", f"{FULLNAME}-redis")
    minio = named(docs, "NetworkPolicy", f"{FULLNAME}-minio")
    assert _allowed_components(redis) == {"gateway", "worker-cpu", "worker-gpu", "beat", "flower"}
    assert _allowed_components(minio) == {"gateway", "worker-cpu", "worker-gpu", "trainer", "eval"}
    peers = [p for rule in redis["spec"]["ingress"] for p in rule["from"]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in peers
    assert redis["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    workers = named(docs, "NetworkPolicy", f"{FULLNAME}-workers")
    assert workers["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in workers["spec"]  # nothing gets in
    # The selected pods exist: every component named in a policy is a rendered workload's component.
    workloads = {component(t) for _label, t in pod_templates(docs)}
    assert _allowed_components(redis) | _allowed_components(minio) <= workloads


# -- the eval Job ---------------------------------------------------------------------------------


def _eval_pod(docs: list[dict[str, Any]], run: str = "llava7b-mfpo") -> dict[str, dict[str, Any]]:
    spec = named(docs, "Job", f"{FULLNAME}-eval-{run}")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]} | {"": spec}


def test_the_eval_job_waits_for_the_run_then_merges_evaluates_and_publishes() -> None:
    import typer
    from typer.main import get_command

    from mfpo.eval.benchmarks import ReportConfig
    from mfpo.eval.cli import eval_app
    from trainer.cli import merge as merge_command

    values = merge(chart().values, SCENARIOS["eval"])
    docs = render(SCENARIOS["eval"])
    pod = _eval_pod(docs)
    spec, run = pod[""], "s3://mfpo/runs/llava7b-mfpo"
    assert [c["name"] for c in spec["initContainers"]] == ["merge", "eval"]  # in this order, then publish
    assert [c["name"] for c in spec["containers"]] == ["publish"] and spec["restartPolicy"] == "Never"
    step = pod["merge"]
    assert step["command"] == ["mfpo", "merge"]
    assert _flags(step["args"]) == {"--adapter": f"{run}/final", "--base": values["trainer"]["model"],
                                    "--out": "/tmp/mfpo-eval/model", "--wait": "604800"}
    merge_app = typer.Typer()
    merge_app.command()(merge_command)
    get_command(merge_app).make_context("mfpo merge", list(step["args"]))  # flags `mfpo merge` accepts
    step = pod["eval"]
    assert step["command"] == ["mfpo", "eval", "report"]
    assert _flags(step["args"]) == {"--config": "/etc/mfpo/eval/config.json", "--model": "/tmp/mfpo-eval/model",
                                    "--out": "/tmp/mfpo-eval/report", "--compare": values["trainer"]["model"],
                                    "--dtype": "bfloat16"}
    get_command(eval_app).commands["report"].make_context("mfpo eval report", list(step["args"]))
    (config_map,) = [c for c in of_kind(docs, "ConfigMap") if component(c) == "eval"]
    assert json.loads(config_map["data"]["config.json"]) == values["eval"]["config"]
    for config in (values["eval"]["config"], chart().values["eval"]["config"]):  # the scenario's and the default
        ReportConfig.model_validate(config)  # what `mfpo eval report --config` will accept
    mounts = {m["mountPath"]: m for m in step["volumeMounts"]}
    assert mounts["/etc/mfpo/eval"]["name"] == "eval-config" and mounts["/benchmarks"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["benchmarks"]["persistentVolumeClaim"] == {"claimName": "mfpo-benchmarks", "readOnly": True}
    env = {e["name"]: e for e in step["env"]}
    assert env["MFPO_JUDGE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "judge-api", "key": "token"}
    assert pod["publish"]["args"] == ["/tmp/mfpo-eval/report", f"{run}/eval"]
    for name in ("merge", "eval", "publish"):  # every step reaches the object store
        assert {"MFPO_S3_ACCESS_KEY", "MFPO_S3_SECRET_KEY"} <= {e["name"] for e in pod[name]["env"]}, name
        assert {m["mountPath"] for m in pod[name]["volumeMounts"]} >= {"/tmp"}, name
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_the_publish_step_copies_the_report_folder(tmp_path: Path) -> None:
    """The publish step's command, run for real on a local folder (an s3:// URI takes the same store code)."""
    pod = _eval_pod(render(SCENARIOS["eval"]))
    report = tmp_path / "report"
    (report / "plots").mkdir(parents=True)
    (report / "report.json").write_text('{"pope": {}}')
    (report / "plots" / "margins.png").write_bytes(b"png")
    command = pod["publish"]["command"]
    assert command == ["python", "-m", "trainer.publish"]
    result = subprocess.run([sys.executable, *command[1:], str(report), str(tmp_path / "store")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "store" / "report.json").read_text() == '{"pope": {}}'
    assert (tmp_path / "store" / "plots" / "margins.png").read_bytes() == b"png"


def test_the_eval_job_needs_a_run_in_the_object_store_and_benchmark_files() -> None:
    local = merge(SCENARIOS["eval"], {"trainer": {"output": "/models/runs/x"}})
    with pytest.raises(Exception, match=re.escape("trainer.output must be empty or s3://")):
        render(local)
    with pytest.raises(Exception, match=re.escape("eval.config is required")):
        render(merge(SCENARIOS["eval"], {"eval": {"config": None}}))
    elsewhere = _eval_pod(render(merge(SCENARIOS["eval"], {"eval": {"output": "s3://reports/exp", "compare": False,
                                                                     "extraArgs": []}})))
    assert elsewhere["publish"]["args"][-1] == "s3://reports/exp" and "--compare" not in elsewhere["eval"]["args"]
    assert "benchmarks" not in {v["name"] for v in _eval_pod(render(SCENARIOS["everything"]), "run-1")[""][
        "volumes"]}


# -- values and schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway": {"replicaCount": -1}}, "/gateway/replicaCount"),
        ({"workerCpu": {"replicaCount": -3}}, "/workerCpu/replicaCount"),
        ({"workerGpu": {"gpus": "2"}}, "/workerGpu/gpus"),
        ({"trainer": {"gpus": "8"}}, "/trainer/gpus"),
        ({"trainer": {"loss": "ppo"}}, "/trainer/loss"),
        ({"trainer": {"config": {"learning_rat": 1e-5}}}, "learning_rat"),
        ({"trainer": {"config": {"curriculum": "hard-first"}}}, "/trainer/config/curriculum"),
        ({"trainer": {"strategy": "horovod"}}, "/trainer/strategy"),
        ({"trainer": {"runName": "Run_1"}}, "/trainer/runName"),
        ({"gatway": {"replicaCount": 2}}, "gatway"),
        ({"redis": {"persistence": {"size": 8}}}, "/redis/persistence/size"),
        ({"auth": {"apiKeys": [{"tenant": "a", "key": "short"}]}}, "/auth/apiKeys/0/key"),
        ({"objectStore": {"secretKey": "short"}}, "/objectStore/secretKey"),
        ({"models": {"samType": "vit_xl"}}, "/models/samType"),
        ({"eval": {"gpus": 0}}, "/eval/gpus"),
        ({"eval": {"output": "/local/report"}}, "/eval/output"),
        ({"eval": {"waitSecond": 60}}, "waitSecond"),
    ],
)
def test_bad_values_fail_the_schema(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        chart().render(values, name=RELEASE, namespace=NAMESPACE)


def test_the_values_schema_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "helm_values_schema.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_trainer_config_schema_is_the_trainers_own() -> None:
    from trainer.config import TrainConfig

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["trainer"]["properties"]
    assert set(schema["config"]["properties"]) == set(TrainConfig.model_fields) - {"loss"}
    assert schema["loss"]["enum"] == TrainConfig.model_json_schema()["properties"]["loss"]["enum"]


def _leaves(values: Any, schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values, following the schema: an object with known properties is a section, anything
    else (a list, a free-form map such as nodeSelector or resources) one value. A key the schema lacks fails."""
    if isinstance(values, dict) and "properties" in schema and prefix != "trainer.config":
        for key, value in values.items():
            path = f"{prefix}.{key}" if prefix else key
            assert key in schema["properties"], f"{path} is not in values.schema.json"
            yield from _leaves(value, schema["properties"][key], path)
    else:
        yield prefix


def _documented_paths() -> set[str]:
    text = (CHART / "values.yaml").read_text()
    return set(re.findall(r"^## @param (\S+) \S", text, flags=re.MULTILINE))


def test_every_value_is_documented_and_in_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    documented = _documented_paths()
    leaves = list(_leaves(values, schema))
    assert len(leaves) > 150
    for path in leaves:
        ancestors = {path.rsplit(".", n)[0] for n in range(path.count(".") + 1)}
        assert ancestors & documented, f"{path} has no `## @param`"
    for path in documented:
        node: Any = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"`## @param {path}` documents no value"
            node = node[part]
    for path in _schema_sections(schema):  # no schema entry without a value behind it
        node = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"values.schema.json has {path}, values.yaml does not"
            node = node[part]


def _schema_sections(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if prefix.startswith("trainer.config"):
            continue
        yield path
        yield from _schema_sections(sub, path)


# -- the README's commands ------------------------------------------------------------------------


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Deploy on Kubernetes")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_values_and_training_command_render() -> None:
    """The GPU-cluster values and the `helm upgrade` of the README's Kubernetes section, as a user would run them."""
    import shlex

    section = _readme_section()
    values = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL)[1])
    command = re.search(r"```bash\n(helm upgrade .*?)\n```", section, flags=re.DOTALL)[1]
    argv = shlex.split(command.replace("\\\n", " ").split("\nkubectl")[0])
    for flag, value in itertools.pairwise(argv):
        if flag == "--set":
            values = merge(values, helm_python.parse_set_string(value))
        elif flag == "--set-json":
            values = merge(values, helm_python.parse_set_json(value))
    docs = render(values)
    validate_all(docs, KUBE_VERSIONS[-1])
    (job,) = of_kind(docs, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert _flags(container["args"])["--dataset"].startswith("s3://team-mfpo/tenants/")
    assert "--num_processes" in container["command"] and "8" in container["command"]
    assert _train_config(docs)["beta"] == 0.1
    assert {component(d) for d in of_kind(docs, "ScaledObject")} == {"worker-cpu", "worker-gpu"}
    assert not of_kind(docs, "StatefulSet") or {component(d) for d in of_kind(docs, "StatefulSet")} == {"redis"}
    with pytest.raises(helm_python.HelmValuesError, match="/trainer/config/beta"):  # why the README uses --set-json
        chart().render(merge(values, helm_python.parse_set_string("trainer.config.beta=0.1")), name=RELEASE,
                       namespace=NAMESPACE)


def test_presigned_urls_name_an_address_clients_reach() -> None:
    """Item and gallery images are presigned URLs: on a cluster they must name MinIO's Ingress (or the given
    public endpoint), not the in-cluster Service."""
    docs = render(SCENARIOS["everything"])
    settings = named(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]
    assert settings["MFPO_S3_PUBLIC_ENDPOINT"] == "s3.mfpo.example.com" and settings["MFPO_S3_PUBLIC_SECURE"] == "true"
    ingress = named(docs, "Ingress", f"{FULLNAME}-minio")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress["spec"]["rules"][0]["host"] == "s3.mfpo.example.com"
    assert backend == {"name": f"{FULLNAME}-minio", "port": {"name": "s3"}}
    assert "MFPO_S3_PUBLIC_ENDPOINT" not in named(render({}), "ConfigMap", f"{FULLNAME}-settings")["data"]
    external = render({**SCENARIOS["external-storage-and-broker"],
                       "objectStore": {**SCENARIOS["external-storage-and-broker"]["objectStore"],
                                       "publicEndpoint": "cdn.example.com:8443", "publicSecure": True}})
    settings = named(external, "ConfigMap", f"{FULLNAME}-settings")["data"]
    assert settings["MFPO_S3_PUBLIC_ENDPOINT"] == "cdn.example.com:8443"


def test_the_chart_matches_the_package_and_its_images() -> None:
    """appVersion is the package's version (image tags default to it); the paths the chart runs exist in the
    images: /app is the build context minus .dockerignore, so configs/accelerate must not be ignored."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart().metadata["appVersion"] == version
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert not {"configs", "configs/accelerate"} & set(ignored)
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert "COPY --from=build /src /app" in text and "USER 10001:10001" in text, dockerfile
    assert chart().values["podSecurityContext"]["runAsUser"] == 10001


def test_helm_test_checks_readiness_through_the_service_and_prometheus_finds_the_metrics() -> None:
    docs = render({})
    (pod,) = of_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert f"http://{FULLNAME}-gateway:80/readyz" in script
    annotations = named(docs, "Deployment", f"{FULLNAME}-gateway")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == "8000"


def test_keda_reads_an_external_redis_with_an_acl_user() -> None:
    import base64

    values = {**SCENARIOS["external-storage-and-broker"], **MODELS,
              "externalRedis": {**SCENARIOS["external-storage-and-broker"]["externalRedis"], "username": "mfpo-queues"},
              "workerGpu": {"enabled": True, "keda": {"enabled": True}}}
    docs = render(values)
    validate_all(docs, KUBE_VERSIONS[-1])
    (auth,) = of_kind(docs, "TriggerAuthentication")
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {"password": ("redis-creds", "password"), "username": (FULLNAME, "redis-username")}
    assert base64.b64decode(named(docs, "Secret", FULLNAME)["data"]["redis-username"]).decode() == "mfpo-queues"
    (scaled,) = of_kind(docs, "ScaledObject")
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    assert metadata["address"] == "redis.infra.svc:6380" and metadata["enableTLS"] == "true"
    assert metadata["databaseIndex"] == "3"
    settings = named(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]
    assert settings["MFPO_REDIS_URL"] == "rediss://mfpo-queues@redis.infra.svc:6380/3"
