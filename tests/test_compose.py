"""The docker-compose stack: `docker-compose config` accepts it (with and without the gpu
profile), and the file says what the platform needs (services, health, GPU, settings, images).

Offline and fast: nothing is built, pulled or started. The `config` checks need a compose
command (Debian's `docker-compose`, installed by scripts/test-services.sh, or `docker compose`);
without one they skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.requirements import missing

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / "mfpo.env.example"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {"redis", "minio", "minio-init", "gateway", "worker-cpu", "worker-gpu", "flower", "trainer", "eval"}
PLATFORM = ("gateway", "worker-cpu", "worker-gpu")  # run the mfpo code; need broker + bucket
ONE_SHOT = {"minio-init"}
ENV_VARS = {
    "MFPO_REDIS_URL": "redis://redis:6379/0",
    "MFPO_S3_ENDPOINT": "minio:9000",
    "MFPO_S3_ACCESS_KEY": None,
    "MFPO_S3_SECRET_KEY": None,
    "MFPO_S3_BUCKET": "mfpo",
    "MFPO_S3_SECURE": "false",
    "MFPO_API_KEYS": None,
}
MODEL_ENV_VARS = ("MFPO_GROUNDING_MODEL", "MFPO_SAM_CHECKPOINT", "MFPO_SAM_TYPE")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEYS")
PLACEHOLDER_MARK = "change-me"
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}$")


# -- helpers ------------------------------------------------------------------------------------


def _compose_yaml() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    return _compose_yaml()["services"]


def _env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{ENV_EXAMPLE.name}: not KEY=VALUE: {line!r}"
            out[key.strip()] = value.strip()
    return out


def _default(value: Any) -> str:
    """The default of a `${VAR:-default}` value (the value must be one)."""
    match = INTERPOLATION.match(str(value))
    assert match, f"{value!r} is not ${{VAR:-default}}"
    return match["default"]


def _as_list(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form: no condition
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _nvidia_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return [d for d in devices if d.get("driver") == "nvidia" or "gpu" in (d.get("capabilities") or [])]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


def _base_images(instructions: list[tuple[str, str]]) -> list[str]:
    """FROM images with the global ARG defaults substituted."""
    defaults: dict[str, str] = {}
    for kw, args in instructions:
        if kw == "FROM":
            break
        if kw == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    images = []
    for kw, args in instructions:
        if kw == "FROM":
            image = args.split()[0]
            images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image))
    return images


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose_command()
    if command is None:
        message = (
            "neither `docker-compose` nor `docker compose` is installed (scripts/test-services.sh "
            "installs Debian's docker-compose)"
        )
        missing(message)
    return command


def _run_config(compose: list[str], tmp_path: Path, *args: str, env_file: Path | None = None) -> str:
    """`compose -f docker-compose.yml [--env-file F] ARGS config ...`, with no MFPO_*/COMPOSE_*
    variables from the caller and no stray `.env` (an empty env file stands in), so the file's
    own defaults are what is checked."""
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MFPO_", "COMPOSE_"))}
    cmd = [*compose, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, f"{shlex.join(cmd)} exited {result.returncode}:\n{result.stderr}"
    assert "is not set" not in result.stderr, result.stderr  # every variable has a default
    return result.stdout


# -- `docker-compose config` -----------------------------------------------------------------------


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"], ["--profile", "eval"]],
                         ids=["default", "gpu-profile", "eval-profile"])
def test_compose_config_is_valid(compose: list[str], tmp_path: Path, profile: list[str]) -> None:
    _run_config(compose, tmp_path, *profile, "config", "-q")


def test_compose_config_renders_the_example_defaults_without_any_env_file(compose: list[str], tmp_path: Path) -> None:
    rendered = yaml.safe_load(_run_config(compose, tmp_path, "--profile", "gpu", "config"))
    example = _env_example()
    for name in PLATFORM:
        env = rendered["services"][name]["environment"]
        for var in ENV_VARS:
            assert str(env[var]) == example[var], (name, var)
    gpu_env = rendered["services"]["worker-gpu"]["environment"]
    for var in MODEL_ENV_VARS:
        assert str(gpu_env[var]) == example[var]


def test_compose_env_file_overrides_the_defaults(compose: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "mfpo.env"
    env_file.write_text(
        ENV_EXAMPLE.read_text()
        + "\nMFPO_S3_SECRET_KEY=another-secret-value\nMFPO_S3_BUCKET=other-bucket\nMFPO_SAM_TYPE=vit_b\n"
    )
    rendered = yaml.safe_load(_run_config(compose, tmp_path, "--profile", "gpu", "config", env_file=env_file))
    services = rendered["services"]
    assert services["gateway"]["environment"]["MFPO_S3_SECRET_KEY"] == "another-secret-value"
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "another-secret-value"
    assert services["minio-init"]["environment"]["MFPO_S3_BUCKET"] == "other-bucket"
    assert services["worker-gpu"]["environment"]["MFPO_SAM_TYPE"] == "vit_b"


# -- the file itself -------------------------------------------------------------------------------


def test_services_are_the_platform_and_the_trainer() -> None:
    assert set(_services()) == SERVICES


def test_redis_keeps_an_append_only_file_on_a_named_volume() -> None:
    redis = _services()["redis"]
    assert str(redis["image"]).split(":")[0] == "redis" and str(redis["image"]).split(":")[1].startswith("7")
    command = _as_list(redis["command"])
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).split(":")[0] == "redis-data" and str(v).split(":")[1] == "/data" for v in redis["volumes"])
    assert "redis-cli ping" in " ".join(_as_list(redis["healthcheck"]["test"]))


def test_minio_and_its_one_shot_bucket_init() -> None:
    services = _services()
    minio, init = services["minio"], services["minio-init"]
    assert str(minio["image"]).startswith(("minio/minio", "quay.io/minio/minio"))
    command = _as_list(minio["command"])
    assert command[0] == "server" and "--console-address" in command
    assert "healthcheck" in minio
    assert str(init["image"]).startswith(("minio/mc", "quay.io/minio/mc"))
    assert _depends_on(init) == {"minio": "service_healthy"}
    script = " ".join(_as_list(init.get("entrypoint") or [])) + " " + " ".join(str(c) for c in init["command"])
    assert "mc mb --ignore-existing" in script and "MFPO_S3_BUCKET" in script
    assert init.get("restart", "no") == "no"  # one-shot: must exit and stay exited


def test_platform_waits_for_a_healthy_broker_and_the_bucket() -> None:
    services = _services()
    for name in PLATFORM:
        deps = _depends_on(services[name])
        assert deps.get("redis") == "service_healthy", name
        assert deps.get("minio-init") == "service_completed_successfully", name
    assert _depends_on(services["flower"]).get("redis") == "service_healthy"


def test_every_long_running_service_has_or_waits_on_a_healthcheck() -> None:
    services = _services()
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        waits = {dep for dep, cond in _depends_on(service).items() if cond != "service_started"}
        assert "healthcheck" in service or waits, f"{name}: no healthcheck and waits on none"
        for dep in waits:
            assert dep in services, f"{name} depends on unknown service {dep}"
        if "healthcheck" in service:
            assert not service["healthcheck"].get("disable"), name
            assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, name


def test_gateway_serves_on_8000_with_a_python_healthcheck() -> None:
    gateway = _services()["gateway"]
    assert _as_list(gateway["command"]) == ["mfpo", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert any(str(p).endswith("8000:8000") for p in gateway["ports"])
    test = _as_list(gateway["healthcheck"]["test"])
    assert "python" in test and "/healthz" in " ".join(test) and "curl" not in " ".join(test)


def test_workers_and_their_queues() -> None:
    services = _services()
    cpu, gpu = services["worker-cpu"], services["worker-gpu"]
    assert _as_list(cpu["command"]) == ["mfpo", "worker", "--queues", "cpu", "--beat"]  # the one reconcile beat
    assert _as_list(gpu["command"]) == ["mfpo", "worker", "--queues", "gpu"]
    assert cpu["build"]["dockerfile"] == services["gateway"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"


def test_gpu_worker_reserves_an_nvidia_gpu_behind_the_gpu_profile() -> None:
    services = _services()
    gpu = services["worker-gpu"]
    assert gpu.get("profiles") == ["gpu"]
    devices = _nvidia_devices(gpu)
    assert len(devices) == 1
    device = devices[0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device.get("count") in (1, "all") or device.get("device_ids")
    for name, service in services.items():
        if name not in ("worker-gpu", "trainer", "eval"):
            assert not _nvidia_devices(service), f"{name} must not reserve a GPU"
            assert not service.get("profiles"), f"{name} must run without a profile"


def test_trainer_is_a_gpu_job_behind_the_train_profile() -> None:
    trainer = _services()["trainer"]
    assert trainer.get("profiles") == ["train"] and _nvidia_devices(trainer)
    command = " ".join(_as_list(trainer["command"]))
    assert "mfpo train" in command and "--dataset" in command and "--model" in command and "--output" in command
    assert trainer["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert any(v.endswith(":/models:ro") for v in trainer["volumes"] if isinstance(v, str))


def test_eval_is_a_gpu_job_behind_the_eval_profile_from_the_run_to_the_object_store() -> None:
    import typer
    from typer.main import get_command

    from mfpo.eval.cli import eval_app
    from trainer.cli import merge

    service = _services()["eval"]
    assert service.get("profiles") == ["eval"] and _nvidia_devices(service)
    assert service["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    env = service["environment"]
    assert set(ENV_VARS) <= set(env)  # the shared settings: it reaches the store
    assert _default(env["MFPO_EVAL_OUTPUT"]).startswith(f"s3://{_default(env['MFPO_S3_BUCKET'])}/")
    assert _default(env["MFPO_EVAL_RUN"]).startswith("/runs/")
    mounts = {str(v).split(":")[-2]: str(v) for v in service["volumes"]}  # every mount is SOURCE:TARGET:ro
    assert mounts["/runs"] == "trainer-runs:/runs:ro" and mounts["/models"].endswith(":ro")
    assert mounts["/benchmarks"].endswith(":ro") and _depends_on(service) == {
        "minio-init": "service_completed_successfully"}
    shell, flag, script = service["command"]
    assert (shell, flag) == ("sh", "-c")
    lines = [re.sub(r"\$\$\{(\w+)\}", lambda m: _default(env[m[1]]), line)
             for line in script.strip().splitlines()]
    assert lines[0] == "set -e"
    merge_line, report_line, publish_line = (shlex.split(line) for line in lines[1:])
    assert merge_line[:2] == ["mfpo", "merge"] and report_line[:3] == ["mfpo", "eval", "report"]
    merge_app = typer.Typer()
    merge_app.command()(merge)
    get_command(merge_app).make_context("mfpo merge", merge_line[2:])  # flags `mfpo merge` accepts
    get_command(eval_app).commands["report"].make_context("mfpo eval report", report_line[3:])
    assert "/tmp/mfpo-eval/model" in merge_line and "/tmp/mfpo-eval/model" in report_line
    assert publish_line == ["exec", "python", "-m", "trainer.publish", "/tmp/mfpo-eval/report",
                            _default(env["MFPO_EVAL_OUTPUT"])]


def test_gpu_worker_models_come_from_env_and_a_read_only_mount() -> None:
    gpu = _services()["worker-gpu"]
    env = gpu["environment"]
    for var in MODEL_ENV_VARS:
        match = INTERPOLATION.match(str(env[var]))
        assert match and match["name"] == var, f"{var} must be ${{{var}:-default}}"
    assert _default(env["MFPO_SAM_CHECKPOINT"]).startswith("/models/")
    mounts = [str(v) for v in gpu["volumes"]]
    assert any(m.split(":")[-2:] == ["/models", "ro"] for m in mounts), mounts


def test_named_volumes_are_declared_and_used() -> None:
    data = _compose_yaml()
    declared = set(data.get("volumes") or {})
    assert {"redis-data", "minio-data"} <= declared
    used = set()
    for service in data["services"].values():
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if not source.startswith(("/", ".", "~", "$")):
                used.add(source)
    assert used == declared


def test_shared_env_block_has_every_setting_once_with_example_defaults() -> None:
    data = _compose_yaml()
    block = data["x-mfpo-env"]
    example = _env_example()
    assert set(ENV_VARS) <= set(block)
    assert set(block) <= set(example), "every variable of the compose file is documented in the example"
    for var, value in block.items():
        match = INTERPOLATION.match(str(value))
        assert match and match["name"] == var, f"{var}: {value!r} is not ${{{var}:-default}}"
        assert match["default"] == example[var], f"{var}: the file's default differs from {ENV_EXAMPLE.name}"
        if ENV_VARS.get(var) is not None:
            assert match["default"] == ENV_VARS[var], var
    for name in PLATFORM:
        env = data["services"][name]["environment"]
        assert {k: env[k] for k in block} == block, f"{name} gets the shared settings"
    # written once: each variable name appears once as a key in the raw file (the rest are merges)
    text = COMPOSE_FILE.read_text()
    for var in ENV_VARS:
        assert len(re.findall(rf"^\s*{var}:\s*&?[\w-]*\s*\"\$\{{", text, flags=re.MULTILINE)) == 1, var
    # the API key format the gateway parses: tenant:key with keys of 8+ characters
    for entry in _default(block["MFPO_API_KEYS"]).split(","):
        tenant, sep, key = entry.partition(":")
        assert tenant and sep and len(key) >= 8, entry


def test_no_secrets_but_placeholders() -> None:
    example = _env_example()
    for var, value in example.items():
        if SECRET_NAME.search(var):
            assert PLACEHOLDER_MARK in value, f"{ENV_EXAMPLE.name}: {var} must be a '{PLACEHOLDER_MARK}' placeholder"
    placeholders = set(example.values())
    data = _compose_yaml()
    for name, service in data["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.partition("=")[::2] for item in env)
        for var, value in env.items():
            if SECRET_NAME.search(var) or var.endswith(("ACCESS_KEY", "ROOT_USER")):
                match = INTERPOLATION.match(str(value))
                assert match, f"{name}.{var} is a literal secret; use ${{VAR:-placeholder}}"
                assert match["default"] in placeholders, f"{name}.{var}: default is not a placeholder"
    text = COMPOSE_FILE.read_text() + ENV_EXAMPLE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY", text)
    for s in _strings(data):
        assert not re.search(r"://[^/\s:@]+:[^/\s@$]+@", s), f"credentials inside a URL: {s!r}"


def test_build_dockerfiles_exist_and_images_are_named() -> None:
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            assert service.get("image"), name
            continue
        context = ROOT / (build["context"] if isinstance(build, dict) else build)
        dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        assert context.is_dir(), f"{name}: no build context {context}"
        assert (context / dockerfile).is_file(), f"{name}: no {dockerfile}"
        assert service.get("image"), f"{name}: tag the built image so services share it"


# -- Dockerfiles and .dockerignore ---------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/Dockerfile.cuda"])
def test_dockerfiles_run_as_non_root_offline(dockerfile: str) -> None:
    instructions = _dockerfile_instructions(ROOT / dockerfile)
    final = _final_stage(instructions)
    users = [args.split(":")[0] for kw, args in final if kw == "USER"]
    assert users, f"{dockerfile}: the final stage sets no USER"
    assert users[-1] not in {"root", "0"}, f"{dockerfile} runs as root"
    env = " ".join(args for kw, args in final if kw == "ENV")
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", env), f"{dockerfile}: HF_HUB_OFFLINE=1 missing"
    assert any(kw == "WORKDIR" for kw, _ in final)
    # layer cache: pyproject.toml is copied (and the dependencies installed) before the source
    copies = [args for kw, args in instructions if kw == "COPY" and "--from" not in args]
    first_pyproject = next(i for i, c in enumerate(copies) if "pyproject.toml" in c)
    first_all = next(i for i, c in enumerate(copies) if c.split()[0] == ".")
    assert first_pyproject < first_all
    assert not any(kw == "VOLUME" for kw, _ in instructions), "no source/data volumes baked in"


def test_cpu_dockerfile_uses_slim_python_and_cpu_torch() -> None:
    instructions = _dockerfile_instructions(ROOT / "docker" / "Dockerfile")
    assert all(image == "python:3.11-slim" for image in _base_images(instructions))
    runs = [args for kw, args in instructions if kw in {"RUN", "ARG"}]
    torch_at = next(i for i, r in enumerate(runs) if re.search(r"pip install .*\btorch\b", r))
    package_at = next(i for i, r in enumerate(runs) if '".[gateway,worker]"' in r)
    assert torch_at < package_at, "CPU torch must be installed before the package pulls torch from PyPI"
    assert any("download.pytorch.org/whl/cpu" in r for r in runs)


def test_cuda_dockerfile_uses_a_cuda_runtime_and_the_gpu_extra() -> None:
    instructions = _dockerfile_instructions(ROOT / "docker" / "Dockerfile.cuda")
    for image in _base_images(instructions):
        assert image.startswith(("nvidia/cuda:", "pytorch/pytorch:")) and "runtime" in image, image
    assert any('".[gateway,worker,gpu,trainer]"' in args for kw, args in instructions if kw == "RUN")


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for pattern in (".git", ".venv", "demo", "bench/results/tmp", "**/__pycache__", "**/*.pth", ".env"):
        assert pattern in patterns, pattern
    # what the images need stays in
    for needed in ("mfpo", "services", "worker", "pyproject.toml", "README.md"):
        assert needed not in patterns, needed


def test_the_regions_stage_is_routed_to_gpu_workers_only_when_models_are_set() -> None:
    """The gateway and CPU workers decide the regions queue from the model paths (never loading them): they
    see the same variables as the GPU worker, empty by default, so a stack without models stays on the cpu."""
    services = _services()
    for name in ("gateway", "worker-cpu"):
        env = services[name]["environment"]
        for var in ("MFPO_GROUNDING_MODEL", "MFPO_SAM_CHECKPOINT"):
            match = INTERPOLATION.match(str(env[var]))
            assert match and match["name"] == var and match["default"] == "", (name, var)
