"""The chart runs every mfpo container with a read-only root filesystem and only /tmp writable (an emptyDir).
Here the gateway, a CPU worker and beat run exactly so: each in its own mount namespace where ``/`` is
remounted read-only and /tmp is a fresh tmpfs, with the environment of the chart's settings ConfigMap. A job
submitted over HTTP (an upload, which spools to /tmp, and inline items) ends in its dataset.

Real parts: the chart rendered by Helm, ``unshare`` + ``mount`` (Linux), the local Redis, moto S3 over HTTP,
``mfpo serve`` / ``mfpo worker`` / ``mfpo beat`` processes.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import helm_python
import pytest
from support.images import data_uri
from support.k8s import load_yaml_documents
from support.platform import REPO, CeleryWorker, Gateway, redis_url_for_tests, wait_for, xdist_index
from support.requirements import missing
from support.s3_server import running_s3_server

from mfpo.synth import SynthConfig, generate_scenes

# Inside a private mount namespace: /tmp a new tmpfs, then / (and everything on it) read-only, then the command.
# The checkout (with its venv) stays where it is, read-only, also when it lies under /tmp (a CI clone may).
SANDBOX_SCRIPT = f"""set -e
repo={shlex.quote(str(REPO))}
mount --make-rprivate /
mkdir -p /mnt/mfpo-checkout && mount --bind "$repo" /mnt/mfpo-checkout
mount -t tmpfs -o size=1g,mode=1777 tmpfs /tmp
mkdir -p "$repo" && mount --bind /mnt/mfpo-checkout "$repo"
mount -o remount,bind,ro /
mount -o remount,bind,ro "$repo"
exec "$@"
"""
READ_ONLY_ROOT = ["unshare", "--mount", "--", "sh", "-c", SANDBOX_SCRIPT, "read-only-root"]
KEY = "ro-tenant-key-0001"


def _sandbox_or_skip() -> None:
    reason = ""
    if shutil.which("unshare") is None:
        reason = "unshare is not installed"
    else:
        repo = shlex.quote(str(REPO))
        check = f"touch /tmp/ok && ! touch {repo}/.ro-probe 2>/dev/null && ! touch /.ro-probe 2>/dev/null"
        probe = subprocess.run([*READ_ONLY_ROOT, "sh", "-c", check], capture_output=True, text=True)
        if probe.returncode != 0:
            reason = f"cannot make a read-only mount namespace here: {probe.stderr.strip()[:200]}"
        (REPO / ".ro-probe").unlink(missing_ok=True)
    if reason:
        missing(reason)


def chart_settings() -> dict[str, str]:
    """The settings ConfigMap the chart gives every mfpo container (default values)."""
    rendered = helm_python.Chart.load(str(REPO / "helm" / "mfpo")).render({}, name="mfpo", namespace="ml")
    docs = load_yaml_documents(rendered["mfpo/templates/configmap.yaml"])
    return {str(k): str(v) for k, v in docs[0]["data"].items()}


@pytest.fixture(scope="module")
def sandboxed_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    _sandbox_or_skip()
    redis_url = redis_url_for_tests(4 + xdist_index())
    with running_s3_server() as s3:
        bucket = f"ro-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, **chart_settings(), **s3.env(),
               # the test's endpoints instead of the in-cluster ones; keys by variable instead of a mounted file
               "MFPO_REDIS_URL": redis_url, "MFPO_S3_BUCKET": bucket, "MFPO_QUEUE_PREFIX": f"ro{uuid.uuid4().hex[:8]}-",
               "MFPO_API_KEYS": f"acme:{KEY}", "MFPO_RECONCILE_INTERVAL_S": "10", "OMP_NUM_THREADS": "1"}
        assert env["HOME"] == "/tmp" and env["PYTHONDONTWRITEBYTECODE"] == "1"
        gateway = Gateway(env, command_prefix=READ_ONLY_ROOT).start(timeout_s=120)
        worker = CeleryWorker(env, queues="cpu", concurrency=1, command_prefix=READ_ONLY_ROOT).start()
        beat_log = tmp_path_factory.mktemp("beat") / "beat.log"
        with beat_log.open("wb") as out:
            beat = subprocess.Popen([*READ_ONLY_ROOT, str(Path(sys.executable).parent / "mfpo"), "beat"], cwd=REPO,
                                    env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield {"gateway": gateway, "worker": worker, "beat": beat, "beat_log": beat_log}
        finally:
            beat.terminate()
            beat.wait(timeout=20)
            worker.stop()
            gateway.stop()


def test_the_platform_works_with_only_tmp_writable(sandboxed_platform: dict, tmp_path: Path) -> None:
    import httpx

    gateway: Gateway = sandboxed_platform["gateway"]
    path = generate_scenes(SynthConfig(n=6, seed=31, width=80, height=64), tmp_path / "scenes")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    inline = [{**row, "image": data_uri((path.parent / row["image"]).read_bytes())} for row in rows[3:]]
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        job_id = c.post("/v1/jobs", json={"name": "read-only"}, headers=headers).json()["id"]
        archive = io.BytesIO()  # an upload: JSONL + a zip of its images; the multipart body spools to /tmp
        with zipfile.ZipFile(archive, "w") as z:
            for row in rows[:3]:
                z.writestr(row["image"], (path.parent / row["image"]).read_bytes())
        jsonl = "\n".join(json.dumps(row) for row in rows[:3]).encode()
        r = c.post(f"/v1/jobs/{job_id}/uploads", headers=headers,
                   files={"file": ("items.jsonl", jsonl), "images": ("images.zip", archive.getvalue())})
        assert r.status_code == 200 and len(r.json()["accepted"]) == 3, r.text
        r = c.post(f"/v1/jobs/{job_id}/items", json={"items": inline}, headers=headers)
        assert r.status_code == 200 and len(r.json()["accepted"]) == 3, r.text
        assert c.post(f"/v1/jobs/{job_id}/close", headers=headers).status_code == 200

        def finished() -> bool:
            return c.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "finished"

        wait_for(finished, 240, "the job to finish on a read-only root",
                 diagnostics=lambda: sandboxed_platform["worker"].log()[-4000:] + gateway.log()[-2000:])
        lines = c.get(f"/v1/jobs/{job_id}/dataset", headers=headers).text.splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == sorted(r["id"] for r in rows)
        assert c.get("/readyz").status_code == 200
    for log in (sandboxed_platform["worker"].log(), gateway.log()):
        assert "Read-only file system" not in log


def test_beat_schedules_on_a_read_only_root(sandboxed_platform: dict) -> None:
    log: Path = sandboxed_platform["beat_log"]
    wait_for(lambda: "Sending due task reconcile-active-jobs" in log.read_text(errors="replace"), 40,
             "beat to send the periodic reconcile", diagnostics=lambda: log.read_text(errors="replace")[-3000:])
    assert sandboxed_platform["beat"].poll() is None
    assert "Read-only file system" not in log.read_text(errors="replace")
