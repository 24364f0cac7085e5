"""The deployment files, checked without a container engine: they parse, they name processes and
modules that exist, their probes hit real routes, they run as non-root, and every variable they set
(and every variable the code reads) is documented in docs/configuration.md."""

from __future__ import annotations

import re

import pytest
import yaml
from django.urls import resolve

from tests.servers import ROOT

DEPLOY = ROOT / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()
PROXY_ROUTES = {"/healthz", "/readyz", "/v1/models", "/v1/chat/completions"}


def k8s_docs() -> list[dict]:
    return [doc for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers(kind: str = "Deployment") -> dict[str, dict]:
    found = {}
    for doc in k8s_docs():
        if doc["kind"] in (kind, "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                found[doc["metadata"]["name"]] = container
    return found


def test_every_manifest_parses_and_is_named():
    assert K8S, "no Kubernetes manifests"
    for doc in k8s_docs():
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert doc["metadata"]["name"]


def test_compose_file_parses_and_runs_every_process():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"postgres", "redis", "migrate", "web", "proxy", "worker", "beat"} <= set(compose["services"])


def test_every_procfile_process_but_the_fakes_has_a_deployment():
    procfile = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    deployed = " ".join(" ".join(c["command"]) for c in containers().values())
    for name, command in procfile.items():
        if name in {"fake", "stripe"}:  # bundled stand-ins for providers and Stripe: dev only
            continue
        program = command.split()[0].rsplit("/", 1)[-1]  # gunicorn / celery
        target = command.split()[1] if program == "gunicorn" else " ".join(command.split()[1:4])
        assert target in deployed, f"Procfile process {name!r} ({target}) has no deployment"


@pytest.mark.parametrize("module", ["config.wsgi", "proxy.asgi", "config.celery"])
def test_modules_the_commands_name_exist(module):
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    commands = " ".join(" ".join(c["command"]) for c in containers().values())
    named = {"config.wsgi": "config.wsgi:application", "proxy.asgi": "proxy.asgi:app", "config.celery": "-A config"}
    assert named[module] in commands


def test_probes_hit_real_routes():
    for name, container in containers().items():
        for probe in ("readinessProbe", "livenessProbe"):
            http = container.get(probe, {}).get("httpGet")
            if not http:
                continue
            if name == "turnpike-proxy":
                assert http["path"] in PROXY_ROUTES
            else:
                assert resolve(http["path"]).url_name == "healthz"


def test_images_run_as_non_root():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "requirements.lock" in dockerfile
    for doc in k8s_docs():
        if doc["kind"] in ("Deployment", "Job"):
            assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_secret_is_a_template_with_nothing_real_in_it():
    (secret,) = [d for d in k8s_docs() if d["kind"] == "Secret"]
    assert all("REPLACE_ME" in value for value in secret["stringData"].values())


def documented(name: str) -> bool:
    return f"`{name}`" in CONFIG_DOC or re.search(rf"`{re.escape(name)}[`,]", CONFIG_DOC) is not None


def test_every_variable_the_deployment_sets_is_documented():
    names = set()
    for doc in k8s_docs():
        if doc["kind"] in ("ConfigMap", "Secret"):
            names |= set(doc.get("data") or {}) | set(doc.get("stringData") or {})
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            names.add(line.split("=", 1)[0].strip())
    missing = sorted(n for n in names if not documented(n))
    assert not missing, f"not in docs/configuration.md: {missing}"


def test_every_variable_the_code_reads_is_documented():
    pattern = re.compile(r'(?:env_str|env_int|env_bool|env_list|_float|_int|environ\.get)\(\s*"([A-Z][A-Z0-9_]+)"')
    sources = [*ROOT.joinpath("config").rglob("*.py"), ROOT / "proxy" / "config.py"]
    names = {name for path in sources for name in pattern.findall(path.read_text())}
    assert "TURNPIKE_MASTER_KEY" in names and "TURNPIKE_PROXY_AUTH_TTL" in names  # the scan works
    missing = sorted(n for n in names if not documented(n))
    assert not missing, f"not in docs/configuration.md: {missing}"


def test_the_proxy_spool_is_on_a_persistent_volume_shared_by_every_proxy_pod():
    """Usage spooled while Redis is down must outlive the pod (an emptyDir dies with it), and a pod scaled
    away must leave its files where the remaining pods replay them."""
    (config,) = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    spool_dir = config["data"]["TURNPIKE_PROXY_SPOOL_DIR"]
    (proxy,) = [d for d in k8s_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "turnpike-proxy"]
    pod = proxy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == spool_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" not in volume
    claims = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "PersistentVolumeClaim"}
    claim = claims[volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    # the non-root proxy can write to it: the volume belongs to the image's group
    gid = re.search(r"groupadd\b.*--gid (\d+) turnpike", (DEPLOY / "Dockerfile").read_text())
    assert gid and pod["securityContext"]["fsGroup"] == int(gid.group(1))


def test_the_image_user_is_numeric_so_kubernetes_can_verify_run_as_non_root():
    (user,) = re.findall(r"^USER\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), f"USER {user}: the kubelet refuses runAsNonRoot for a name"


def test_compose_keeps_the_spool_in_a_named_volume_and_runs_redis_as_required():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    proxy = compose["services"]["proxy"]
    spool_dir = proxy["environment"]["TURNPIKE_PROXY_SPOOL_DIR"]
    named = [v.split(":")[0] for v in proxy["volumes"] if v.split(":")[1] == spool_dir]
    assert named and named[0] in compose["volumes"], "the spool must be a named volume, not the container's disk"
    redis_command = " ".join(compose["services"]["redis"]["command"])
    assert "--maxmemory-policy noeviction" in redis_command  # docs/configuration.md, "Redis requirements"
    assert "--appendonly yes" in redis_command
    for name in ("proxy", "worker", "beat", "web", "redis", "postgres"):
        assert compose["services"][name].get("restart") == "unless-stopped", f"{name} is not restarted"
