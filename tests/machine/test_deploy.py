"""The Kubernetes manifests, the examples and the Dockerfile, checked without a cluster:
schemas of a current Kubernetes, the references between objects, the commands the image
runs, and a Dockerfile linter."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from csi import PLUGIN_NAME
from csi.checks import modify_parameters, volume_parameters
from storaged.config import parse_size
from tests.helpers import shoal

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.34.0"
CRD_KINDS = {"VolumeSnapshotClass", "VolumeSnapshot"}

sys.path.insert(0, str(DEPLOY))
import render  # noqa: E402  (deploy/render.py is a script, not a package)


def load(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every object under ``directory``, its subdirectories too (namespace/)."""
    return [
        (str(p.relative_to(directory)), doc)
        for p in sorted(directory.glob("**/*.yaml"))
        for doc in yaml.safe_load_all(p.read_text())
        if doc
    ]


MANIFESTS = load(DEPLOY / "kubernetes")
# what 'kubectl apply/delete -f deploy/kubernetes/' touches: the files at the top only
MAIN = [(n, d) for n, d in MANIFESTS if "/" not in n]
EXAMPLES = load(DEPLOY / "examples")


def of_kind(kind: str, docs: list[tuple[str, dict]] = MANIFESTS) -> list[dict[str, Any]]:
    return [d for _, d in docs if d["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, its pod spec) for every Deployment, StatefulSet, DaemonSet and Job."""
    return [
        (d, d["spec"]["template"]["spec"])
        for _, d in MANIFESTS
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def containers() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    return [(w, spec, c) for w, spec in pod_specs() for c in spec["containers"]]


def our_containers() -> list[dict[str, Any]]:
    image = render.load_settings(DEPLOY / "settings.toml")["image"]
    return [c for _, _, c in containers() if c["image"] == image]


def flag_value(args: list[str], flag: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


# -- generated, and valid --------------------------------------------------------------------


def test_manifests_are_rendered_from_the_settings(tmp_path: Path) -> None:
    assert render.main(["--out", str(tmp_path)]) == 0
    fresh = {str(p.relative_to(tmp_path)): p.read_text() for p in tmp_path.glob("**/*.yaml")}
    committed = {
        str(p.relative_to(DEPLOY / "kubernetes")): p.read_text()
        for p in (DEPLOY / "kubernetes").glob("**/*.yaml")
    }
    assert fresh == committed, "run 'python deploy/render.py' and commit deploy/kubernetes/"


def test_render_refuses_impossible_settings(tmp_path: Path) -> None:
    text = (DEPLOY / "settings.toml").read_text().replace("replicas = 2 ", "replicas = 5 ")
    (tmp_path / "s.toml").write_text(text)
    assert render.main(["--settings", str(tmp_path / "s.toml"), "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize(
    "name, doc",
    MANIFESTS + EXAMPLES,
    ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in MANIFESTS + EXAMPLES],
)
def test_every_object_validates_against_the_kubernetes_schema(name: str, doc: dict) -> None:
    if doc["kind"] in CRD_KINDS:
        # Not in Kubernetes' own schemas: the external-snapshotter CRDs define them.
        assert doc["apiVersion"] == "snapshot.storage.k8s.io/v1"
        if doc["kind"] == "VolumeSnapshotClass":
            assert doc["driver"] == PLUGIN_NAME and doc["deletionPolicy"] in ("Delete", "Retain")
        else:
            assert doc["spec"]["source"]["persistentVolumeClaimName"]
            assert doc["spec"]["volumeSnapshotClassName"] in {
                d["metadata"]["name"] for d in of_kind("VolumeSnapshotClass")
            }
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_an_uninstall_of_the_main_files_keeps_the_namespace_and_its_data() -> None:
    """'kubectl delete -f deploy/kubernetes/' must not delete the namespace: that deletes
    the meta role's and chunk servers' PVCs, every volume's data. The namespace lives in
    namespace/, which 'kubectl apply|delete -f DIR' does not descend into; nothing in the
    main files holds data (PVCs come from the StatefulSets' claim templates, which a
    StatefulSet's deletion keeps), and the cluster secret is made by a Job, not a file."""
    namespaces = [(n, d) for n, d in MANIFESTS if d["kind"] == "Namespace"]
    assert [n for n, _ in namespaces] == [render.NAMESPACE_FILE]
    assert not [d for _, d in MAIN if d["kind"] in ("Namespace", "PersistentVolumeClaim", "Secret")]
    for _, workload in MAIN:
        if workload["kind"] == "StatefulSet":
            policy = workload["spec"].get("persistentVolumeClaimRetentionPolicy", {})
            assert policy.get("whenDeleted", "Retain") == "Retain"
    namespace = namespaces[0][1]["metadata"]["name"]
    for _, doc in MAIN:
        cluster_scoped = doc["kind"] in (
            "ClusterRole",
            "ClusterRoleBinding",
            "CSIDriver",
            "StorageClass",
            "VolumeSnapshotClass",
        )
        assert cluster_scoped or doc["metadata"]["namespace"] == namespace, doc["metadata"]


def test_the_namespace_admits_the_privileged_pods_it_runs() -> None:
    """Pod Security Admission: under a cluster default of baseline the node plugin and the
    mounter (privileged, hostPath, SYS_ADMIN) would be rejected without these labels."""
    ns_labels = of_kind("Namespace")[0]["metadata"]["labels"]
    privileged_pods = [
        w
        for w, spec in pod_specs()
        if any(c.get("securityContext", {}).get("privileged") for c in spec["containers"])
    ]
    assert len(privileged_pods) == 2  # the node plugin and the mounter
    for mode in ("enforce", "audit", "warn"):
        assert ns_labels[f"pod-security.kubernetes.io/{mode}"] == "privileged"


def _immutable(doc: dict[str, Any]) -> Any:
    """The fields of an object Kubernetes refuses to change in place."""
    spec = doc.get("spec", {})
    if doc["kind"] == "Job":
        return spec  # selector and template, and the rest is not worth changing
    if doc["kind"] == "StatefulSet":
        return [
            spec["selector"],
            spec["serviceName"],
            spec.get("podManagementPolicy"),
            spec["volumeClaimTemplates"],
        ]
    if doc["kind"] in ("Deployment", "DaemonSet"):
        return spec["selector"]
    if doc["kind"] == "CSIDriver":
        return spec
    return None


@pytest.mark.parametrize("change", ["image", "tls"])
def test_an_upgrade_or_tls_changes_no_immutable_field(tmp_path: Path, change: str) -> None:
    """'kubectl apply' of a rendering with a new image (an upgrade) or with TLS on must
    succeed: an object of the same kind and name keeps every immutable field."""
    text = (DEPLOY / "settings.toml").read_text()
    text = (
        text.replace("shoalfs:0.1.0", "shoalfs:0.2.0")
        if change == "image"
        else text.replace('secret = ""', 'secret = "shoalfs-tls"')
    )
    (tmp_path / "s.toml").write_text(text)
    assert render.main(["--settings", str(tmp_path / "s.toml"), "--out", str(tmp_path / "k")]) == 0
    before = {(d["kind"], d["metadata"]["name"]): d for _, d in MANIFESTS}
    after = {(d["kind"], d["metadata"]["name"]): d for _, d in load(tmp_path / "k")}
    changed = [key for key in before.keys() & after.keys() if before[key] != after[key]]
    assert changed  # the rendering did change something
    for key in changed:
        assert _immutable(before[key]) == _immutable(after[key]), key
    # the Job is a new one under a new name when its template changed
    jobs_before = {k for k in before if k[0] == "Job"}
    assert len(jobs_before) == 1 and all(
        d["spec"]["ttlSecondsAfterFinished"] > 0 for k, d in before.items() if k[0] == "Job"
    )
    if change == "image":
        assert jobs_before != {k for k in after if k[0] == "Job"}


# -- references between objects ------------------------------------------------------------


def test_services_select_the_pods_they_serve() -> None:
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        served = [
            w
            for w, _ in pod_specs()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert served, f"Service {service['metadata']['name']} selects no pods"
        for w in served:
            ports = {
                p["name"]
                for c in w["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports
        for w in served:
            if w["kind"] == "StatefulSet":
                assert w["spec"]["serviceName"] == service["metadata"]["name"]


def test_service_accounts_secrets_and_roles_exist() -> None:
    accounts = {d["metadata"]["name"] for d in of_kind("ServiceAccount")}
    for workload, spec in pod_specs():
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts, workload["metadata"]["name"]
    [job] = of_kind("Job")
    assert job["metadata"]["name"].startswith("shoalfs-secret-init-")
    secret = flag_value(job["spec"]["template"]["spec"]["containers"][0]["args"], "--name")
    for workload, spec in pod_specs():
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == secret, workload["metadata"]["name"]
                assert volume["secret"]["defaultMode"] & 0o077 == 0  # storaged's rule
    for binding in of_kind("RoleBinding") + of_kind("ClusterRoleBinding"):
        role_kind = binding["roleRef"]["kind"]
        one(role_kind, binding["roleRef"]["name"])
        for subject in binding["subjects"]:
            assert subject["name"] in accounts


def test_the_secret_is_mounted_never_passed_on_a_command_line() -> None:
    assert not of_kind("Secret"), "no secret value is written into the manifests"
    for workload, spec, c in containers():
        for env in c.get("env", []):
            assert "secretKeyRef" not in env.get("valueFrom", {})
        if "--secret-file" in c.get("args", []):
            path = flag_value(c["args"], "--secret-file")
            mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            assert "secret" in volume and mount["readOnly"], workload["metadata"]["name"]


def test_driver_names_agree() -> None:
    driver = of_kind("CSIDriver")[0]
    assert driver["metadata"]["name"] == PLUGIN_NAME
    assert driver["spec"]["attachRequired"] is False
    assert driver["spec"]["fsGroupPolicy"] == "File"
    assert driver["spec"]["volumeLifecycleModes"] == ["Persistent"]
    for sc in of_kind("StorageClass"):
        assert sc["provisioner"] == PLUGIN_NAME and sc["allowVolumeExpansion"] is True
        volume_parameters(sc["parameters"], {})  # the driver accepts them (raises if not)
    names = {d["metadata"]["name"] for d in of_kind("StorageClass")}
    for doc in of_kind("PersistentVolumeClaim", EXAMPLES):
        assert doc["spec"]["storageClassName"] in names
    for vac in of_kind("VolumeAttributesClass", EXAMPLES):
        assert vac["driverName"] == PLUGIN_NAME
        modify_parameters(vac["parameters"])  # ControllerModifyVolume accepts them


def test_examples_followed_in_order_fit_together() -> None:
    """docs/deploy.md applies pvc.yaml, resize.yaml, then clone.yaml: a clone cannot be
    smaller than its source, so the clone asks at least the resized size."""

    def size(name: str) -> int:
        [claim] = [d for n, d in EXAMPLES if n == name and d["kind"] == "PersistentVolumeClaim"]
        return parse_size(claim["spec"]["resources"]["requests"]["storage"])

    assert size("clone.yaml") >= max(size("pvc.yaml"), size("resize.yaml"))
    # a read-only container must not try to create the file it reads
    pod = next(d for n, d in EXAMPLES if n == "shared-pod.yaml" and d["kind"] == "Pod")
    reader = next(c for c in pod["spec"]["containers"] if c["name"] == "reader")
    assert reader["volumeMounts"][0]["readOnly"] and "touch" not in " ".join(reader["command"])


def _socket_paths(spec: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """Where the file ``path`` (inside ``container``) really is: volume name + sub path."""
    best = max(
        (m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"])),
        key=lambda m: len(m["mountPath"]),
    )
    volume = next(v for v in spec["volumes"] if v["name"] == best["name"])
    base = volume["hostPath"]["path"] if "hostPath" in volume else f"<{best['name']}>"
    return base + path[len(best["mountPath"]) :]


def test_sidecars_and_the_driver_share_the_socket() -> None:
    for name in ("shoalfs-csi-controller", "shoalfs-csi-node"):
        workload = one("Deployment" if "controller" in name else "DaemonSet", name)
        spec = workload["spec"]["template"]["spec"]
        driver = next(c for c in spec["containers"] if c["name"] == "shoalfs-csi")
        endpoint = flag_value(driver["args"], "--endpoint").removeprefix("unix://")
        where = _socket_paths(spec, driver, endpoint)
        sidecars = [c for c in spec["containers"] if c is not driver]
        assert sidecars
        for sidecar in sidecars:
            address = flag_value(sidecar["args"], "--csi-address")
            assert _socket_paths(spec, sidecar, address) == where, sidecar["name"]
        registrar = [c for c in sidecars if c["name"] == "node-driver-registrar"]
        for c in registrar:
            assert flag_value(c["args"], "--kubelet-registration-path") == where


def _nested_under_bidirectional(mounts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(Bidirectional mount, mount inside its tree) pairs of one container's volumeMounts."""
    paths = [m["mountPath"].rstrip("/") for m in mounts]
    return [
        (m["mountPath"], p)
        for m in mounts
        if m.get("mountPropagation") == "Bidirectional"
        for p in paths
        if p.startswith(m["mountPath"].rstrip("/") + "/")
    ]


def test_no_volume_mount_lies_under_a_bidirectional_one_of_the_same_container() -> None:
    """A volumeMount inside a Bidirectional mount's tree is propagated back to the node at
    every container start and never removed: on a real node they stacked up 2^n - 1 (8,191
    after ~13 restarts of the node plugin, and the node stopped running pods)."""
    bidirectional = 0
    for workload, _, c in containers():
        mounts = c.get("volumeMounts", [])
        bidirectional += sum(m.get("mountPropagation") == "Bidirectional" for m in mounts)
        assert not _nested_under_bidirectional(mounts), (workload["metadata"]["name"], c["name"])
    assert bidirectional >= 2  # the node plugin and the mounter
    # the rule catches the layout that leaked (the node plugin before the fix)
    assert _nested_under_bidirectional(
        [
            {
                "name": "kubelet-dir",
                "mountPath": "/var/lib/kubelet",
                "mountPropagation": "Bidirectional",
            },
            {"name": "plugin-dir", "mountPath": "/var/lib/kubelet/plugins/csi.shoalfs.dev"},
        ]
    )


def test_the_node_plugin_reaches_the_mounter_and_both_see_kubelet_mounts() -> None:
    node = one("DaemonSet", "shoalfs-csi-node")["spec"]["template"]["spec"]
    mounter = one("DaemonSet", "shoalfs-mounter")
    mspec = mounter["spec"]["template"]["spec"]
    driver, mc = node["containers"][0], mspec["containers"][0]
    asked = flag_value(driver["args"], "--mounter").removeprefix("unix://")
    assert _socket_paths(node, driver, asked) == _socket_paths(
        mspec, mc, flag_value(mc["args"], "--socket")
    )
    for _spec, c in ((node, driver), (mspec, mc)):
        assert c["securityContext"]["privileged"] is True
        kubelet = [m for m in c["volumeMounts"] if m["mountPath"] == "/var/lib/kubelet"]
        assert kubelet and kubelet[0]["mountPropagation"] == "Bidirectional"
    # replacing a mounter pod ends its node's mounts: never automatically, never on a probe
    assert mounter["spec"]["updateStrategy"]["type"] == "OnDelete"
    assert "livenessProbe" not in mc
    # Prometheus scrapes the mounter for every mount of its node (csi/mountmetrics.py)
    ports = {p["name"]: p["containerPort"] for p in mc["ports"]}
    assert flag_value(mc["args"], "--metrics-listen").endswith(f":{ports['metrics']}")
    assert mc["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert mc["resources"]["limits"]["memory"]


def test_every_container_has_resources_and_probes_where_they_serve() -> None:
    for workload, _, c in containers():
        assert c["resources"]["limits"]["memory"], (workload["metadata"]["name"], c["name"])
        assert c["resources"]["requests"]["cpu"]
    for name in ("shoalfs-meta", "shoalfs-chunk"):
        c = one("StatefulSet", name)["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert flag_value(c["args"], "--metrics-listen").endswith(f":{ports['metrics']}")
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_meta_address_names_the_meta_service() -> None:
    service = one("Service", "shoalfs-meta")
    expected = (
        f"tcp://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:"
        f"{service['spec']['ports'][0]['port']}"
    )
    for c in our_containers():
        if "--meta" in c["args"]:
            assert flag_value(c["args"], "--meta") == expected


def test_environment_references_are_defined() -> None:
    for _, _, c in containers():
        defined = {e["name"] for e in c.get("env", [])}
        for arg in c.get("args", []):
            for var in re.findall(r"\$\((\w+)\)", arg):
                assert var in defined, (c["name"], arg)


# -- the image ------------------------------------------------------------------------------


@cache
def help_text(subcommand: str) -> str:
    result = shoal(subcommand, "--help", timeout=60)
    assert result.returncode == 0, (
        f"'shoal {subcommand}' is not a shoal subcommand: {result.stderr}"
    )
    return result.stdout


def test_every_command_the_manifests_run_is_a_real_shoal_command() -> None:
    checked = 0
    for c in our_containers():
        assert "command" not in c, "our containers use the image's entry point, 'shoal'"
        subcommand, *rest = c["args"]
        text = help_text(subcommand)
        for token in rest:
            if token.startswith("--"):
                flag = token.split("=", 1)[0]
                assert re.search(rf"(^|[\s\[]){re.escape(flag)}([\s=,\]]|$)", text, re.M), (
                    f"'shoal {subcommand}' has no {flag}"
                )
                checked += 1
        positional = [
            t
            for i, t in enumerate(rest)
            if not t.startswith("--") and (i == 0 or not rest[i - 1].startswith("--"))
        ]
        if subcommand == "secret":
            assert positional == ["kubernetes"]
    assert checked > 20


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, *rest = line.split(None, 1)
            instructions.append((word, rest[0] if rest else ""))
    return instructions


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_names_packages_that_exist_and_copies_what_exists() -> None:
    packages: set[str] = set()
    for instruction, rest in dockerfile_instructions():
        if instruction == "RUN" and "apt-get install" in rest:
            words = shlex.split(rest.split("apt-get install", 1)[1].split("&&")[0])
            packages |= {w for w in words if not w.startswith("-")}
        if instruction == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
    assert {"python3", "fuse3"} <= packages
    base = {
        rest.split()[0] for instruction, rest in dockerfile_instructions() if instruction == "FROM"
    }
    assert base == {"debian:bookworm-slim"}
    codename = Path("/etc/os-release").read_text()
    assert "bookworm" in codename, (
        "the package check needs this machine's apt lists to be bookworm's, the image's base"
    )
    result = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *sorted(packages)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"apt-cache knows not all of {sorted(packages)} (run "
        f"'apt-get update' if the lists are empty): {result.stderr}"
    )
    assert result.stdout.count("\nPackage: ") + result.stdout.startswith("Package: ") == len(
        packages
    )


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    copied = {
        rest.split()[0].rstrip("/")
        for instruction, rest in dockerfile_instructions()
        if instruction == "COPY" and not rest.startswith("--from")
    }
    assert not copied & ignored


def test_tls_setting_reaches_every_process_that_holds_the_secret(tmp_path: Path) -> None:
    text = (DEPLOY / "settings.toml").read_text().replace('secret = ""', 'secret = "shoalfs-tls"')
    assert 'secret = "shoalfs-tls"' in text
    (tmp_path / "s.toml").write_text(text)
    assert render.main(["--settings", str(tmp_path / "s.toml"), "--out", str(tmp_path / "k")]) == 0
    docs = load(tmp_path / "k")
    holders = 0
    for _, doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        spec = doc["spec"]["template"]["spec"]
        for c in spec["containers"]:
            names = {m["name"] for m in c.get("volumeMounts", [])}
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "cluster-secret" not in names:
                assert "SHOAL_TLS_DIR" not in env
                continue
            holders += 1
            mount = next(m for m in c["volumeMounts"] if m["name"] == "cluster-tls")
            assert env["SHOAL_TLS_DIR"] == mount["mountPath"] and mount["readOnly"]
            volume = next(v for v in spec["volumes"] if v["name"] == "cluster-tls")
            assert volume["secret"]["secretName"] == "shoalfs-tls"
    # meta, chunk, CSI controller, CSI node, mounter
    assert holders == sum(
        1
        for _, _, c in containers()
        if "cluster-secret" in {m["name"] for m in c.get("volumeMounts", [])}
    )
    assert holders >= 5
    assert all(
        "SHOAL_TLS_DIR" not in {e["name"] for e in c.get("env", [])} for _, _, c in containers()
    ), "TLS is off in the default manifests"


# The oldest release of each upstream sidecar that speaks the Kubernetes APIs the manifests
# rely on, for the Kubernetes release they are validated against (K8S_VERSION), and why.
SIDECAR_MINIMUM = {
    # storage.k8s.io/v1 VolumeAttributesClass (GA in 1.34; v1beta1 is gone there): the
    # provisioner reads a PVC's class at creation, the resizer calls ModifyVolume on a change
    "csi-provisioner": ((6, 0, 0), "VolumeAttributesClass v1"),
    "csi-resizer": ((2, 0, 0), "VolumeAttributesClass v1"),
    "csi-snapshotter": ((8, 0, 0), "snapshot.storage.k8s.io/v1 with the v8 CRDs"),
    "csi-node-driver-registrar": ((2, 10, 0), "kubelet plugin registration v1"),
    "livenessprobe": ((2, 12, 0), "CSI Probe"),
}


def test_sidecars_speak_the_api_versions_of_the_kubernetes_release_we_target() -> None:
    pinned = render.load_settings(DEPLOY / "settings.toml")["sidecars"]
    seen = set()
    for image in pinned.values():
        name, tag = image.rsplit("/", 1)[1].split(":")
        version = tuple(int(x) for x in tag.removeprefix("v").split("."))
        minimum, why = SIDECAR_MINIMUM[name]
        assert version >= minimum, f"{name} {tag} is older than v{minimum} ({why})"
        seen.add(name)
    assert seen == set(SIDECAR_MINIMUM)
    used = {c["image"] for _, _, c in containers()}
    assert set(pinned.values()) <= used


def test_sidecar_arguments_are_current_and_the_installation_is_one_name() -> None:
    controller = one("Deployment", "shoalfs-csi-controller")["spec"]["template"]["spec"]
    node = one("DaemonSet", "shoalfs-csi-node")["spec"]["template"]["spec"]
    provisioner = next(c for c in controller["containers"] if c["name"] == "csi-provisioner")
    # Topology has been on by default since csi-provisioner v5; the gate only warned
    assert not any(a.startswith("--feature-gates") for a in provisioner["args"])
    drivers = [
        next(c for c in spec["containers"] if c["name"] == "shoalfs-csi")
        for spec in (controller, node)
    ]
    names = {flag_value(d["args"], "--installation") for d in drivers}
    assert names == {of_kind("Namespace")[0]["metadata"]["name"]}


def test_chunk_servers_claim_the_size_of_their_volume() -> None:
    """On hostPath-backed storage a chunk server would report the node's whole disk."""
    chunk = one("StatefulSet", "shoalfs-chunk")
    args = chunk["spec"]["template"]["spec"]["containers"][0]["args"]
    claim = chunk["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert flag_value(args, "--capacity") == claim
