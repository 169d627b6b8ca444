"""The e2e tier on kind (`pytest tests/e2e --cluster-backend=kind`, docs/kind.md).

pytest-kind's `KindCluster` creates the cluster with kind and kubectl built here
(`hack/kind env`: `--kind-bin`, `--kind-kubectl-bin` and `--kind-image` override them) and
loads our images with `load_docker_image`. The S3 server (versitygw) and the media server
then run *in the cluster*, as one Pod behind one Service, and everything reaches them by the
Service's DNS name: the worker Pods and the chart's operator through CoreDNS and
kube-proxy, this test process (bucket setup, downloading the presigned URLs) and the
operator it runs as a process through the node: the Service's ports are also its
NodePorts, and `svc_hosts` resolves the name to the node's address for Python here (no
change to this machine's resolver). pytest-kind is GPL-3.0: an optional test extra
(`pip install -e .[kind]`), imported only here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK_KIND = REPO_ROOT / "hack" / "kind"
INFRA_NAMESPACE = "clip-e2e-infra"
INFRA_SERVICE = "clip-e2e-infra"
INFRA_HOST = f"{INFRA_SERVICE}.{INFRA_NAMESPACE}.svc.cluster.local"
S3_PORT = 30070  # Service port == NodePort, so the same URL works in and out of the cluster
MEDIA_PORT = 30080
HOSTS_ENV = "CLIP_E2E_SVC_HOSTS"  # JSON {name: address} for svc_hosts in subprocesses

_SITECUSTOMIZE = f'''"""Written by tests/e2e/kind_backend.py: Service names -> the kind node."""
import json, os, socket
_hosts = json.loads(os.environ.get("{HOSTS_ENV}") or "{{}}")
_orig = socket.getaddrinfo
def _getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    return _orig(_hosts.get(host, host), *args, **kwargs)
socket.getaddrinfo = _getaddrinfo
'''


@dataclass
class KindEnv:
    cluster: Any  # pytest_kind.KindCluster
    kubeconfig: Path
    node_ip: str
    service_ip: str  # the infra Service's ClusterIP (the address the worker is allowed)
    shim_dir: Path  # holds sitecustomize.py for subprocesses (PYTHONPATH)

    @property
    def s3_endpoint(self) -> str:
        return f"http://{INFRA_HOST}:{S3_PORT}"

    @property
    def media_url(self) -> str:
        return f"http://{INFRA_HOST}:{MEDIA_PORT}"

    def describe(self) -> str:
        """`kubectl get nodes` and kube-system's Pods: what the tests run on."""
        kubectl = str(self.cluster.kubectl_path)
        nodes = _kubectl(kubectl, self.kubeconfig, "get", "nodes", "-o", "wide")
        pods = _kubectl(kubectl, self.kubeconfig, "-n", "kube-system", "get", "pods")
        return f"kind cluster {self.cluster.name}:\n{nodes}{pods}"

    def subprocess_env(self) -> dict[str, str]:
        """Env for a Python subprocess on this machine that must reach the Service by name."""
        path = os.environ.get("PYTHONPATH")
        return {
            HOSTS_ENV: json.dumps({INFRA_HOST: self.node_ip}),
            "PYTHONPATH": f"{self.shim_dir}{os.pathsep}{path}" if path else str(self.shim_dir),
        }


def hack_kind_env() -> dict[str, str]:
    out = subprocess.run(
        [str(HACK_KIND), "env"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return dict(
        line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line
    )


@contextlib.contextmanager
def svc_hosts(hosts: dict[str, str]) -> Iterator[None]:
    """Resolve these names (Service DNS names) to the given addresses in this process."""
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        return original(hosts.get(name, host), *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = original


def _docker(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def infra_image(python_image: str, media_root: Path, versitygw: Path) -> str:
    """A Python image of ours (clip-operator's: the smaller one, loaded anyway) + the test
    media + tests/mediaserver.py + versitygw, one image.

    Made with docker create/cp/commit (no registry, no Dockerfile); tagged by a digest of
    its inputs, so a second run reuses it.
    """
    server = REPO_ROOT / "tests" / "mediaserver.py"
    base_id = _docker("image", "inspect", "-f", "{{.Id}}", python_image)
    digest = hashlib.sha256(
        f"{base_id} {media_root.name} {versitygw.stat().st_size} {server.read_bytes()!r}".encode()
    ).hexdigest()[:12]
    tag = f"clip.local/e2e-infra:{digest}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    # Older ones (another clip-operator:dev, other media) would each keep a media layer.
    listed = _docker("images", "clip.local/e2e-infra", "--format", "{{.Repository}}:{{.Tag}}")
    for old in listed.split():
        subprocess.run(["docker", "rmi", old], capture_output=True, check=False)
    cid = _docker("create", python_image)
    try:
        _docker("cp", str(media_root), f"{cid}:/srv/media")
        _docker("cp", str(server), f"{cid}:/srv/mediaserver.py")
        _docker("cp", str(versitygw), f"{cid}:/srv/versitygw")
        _docker("commit", "-c", "ENTRYPOINT []", cid, tag)
    finally:
        _docker("rm", "-f", cid)
    return tag


def infra_manifest(
    image: str, access_key: str, secret_key: str, region: str
) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": INFRA_SERVICE}
    s3 = {
        "name": "versitygw",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["/srv/versitygw", "--port", ":7070", "--region", region, "--health",
                    "/health", "posix", "--sidecar", "/data/sidecar", "/data/root"],
        "env": [{"name": "ROOT_ACCESS_KEY", "value": access_key},
                {"name": "ROOT_SECRET_KEY", "value": secret_key}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": 7070}, "periodSeconds": 1},
    }  # fmt: skip
    media = {
        "name": "media",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python3", "/srv/mediaserver.py", "/srv/media", "--bind", "0.0.0.0",
                    "--port", "8080"],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }  # fmt: skip
    init = {
        "name": "dirs",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["mkdir", "-p", "/data/root", "/data/sidecar"],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INFRA_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": INFRA_SERVICE, "namespace": INFRA_NAMESPACE, "labels": labels},
            "spec": {
                "initContainers": [init],
                "containers": [s3, media],
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": INFRA_SERVICE, "namespace": INFRA_NAMESPACE},
            "spec": {
                "type": "NodePort",
                "selector": labels,
                "ports": [
                    {"name": "s3", "port": S3_PORT, "targetPort": 7070, "nodePort": S3_PORT},
                    {
                        "name": "media",
                        "port": MEDIA_PORT,
                        "targetPort": 8080,
                        "nodePort": MEDIA_PORT,
                    },
                ],
            },
        },
    ]


def _kubectl(kubectl: str, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _wait_images_listed(kubectl: str, kubeconfig: Path, images: list[str]) -> None:
    """Until the node's status lists every loaded image (the kubelet reports them some
    seconds after `kind load`; the tests check there before using imagePullPolicy Never)."""
    wanted = {i if "/" in i else f"docker.io/library/{i}" for i in images}
    deadline = time.monotonic() + 120
    while True:
        nodes = json.loads(_kubectl(kubectl, kubeconfig, "get", "nodes", "-o", "json"))
        listed = {n for node in nodes["items"] for img in node["status"].get("images", [])
                  for n in img.get("names", [])}  # fmt: skip
        missing = wanted - listed
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the kind node does not list {sorted(missing)} after 120 s")
        time.sleep(1)


def start(
    options: dict[str, str | None],
    state: Path,
    images: list[str],
    media_root: Path,
    versitygw: Path,
    s3_keys: tuple[str, str, str],
) -> KindEnv:
    """Build (cached), create the cluster through pytest-kind, load images, start the infra.

    `images` are loaded into the node; the last (clip-operator) also lends the infra image
    its Python.
    """
    from pytest_kind import KindCluster  # GPL-3.0 test extra: imported only here

    offline = not options.get("image")  # our node image, assembled here (hack/kind build)
    steps = [[str(HACK_KIND), "build"], [str(HACK_KIND), "network"]] if offline else []
    if not offline and not options.get("kind"):
        steps.append([str(REPO_ROOT / "hack" / "kind.d" / "build-bins.sh"), "kind"])
    if not offline and not options.get("kubectl"):
        steps.append([str(REPO_ROOT / "hack" / "build-k8s.sh"), "kubectl"])
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=7200, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed:\n{proc.stderr[-4000:]}")
    env = hack_kind_env()
    os.environ["PATH"] = env["PATH"]  # the docker wrapper first, for kind (hack/kind.d/bin)
    state.mkdir(parents=True, exist_ok=True)
    kubectl = options.get("kubectl") or env["KIND_KUBECTL"]
    kubeconfig = state / "kubeconfig"
    with contextlib.chdir(state):  # KindCluster makes .pytest-kind/ in the working directory
        cluster = KindCluster(
            options.get("name") or env["KIND_CLUSTER"],
            kubeconfig=kubeconfig,
            image=options.get("image") or env["KIND_NODE_IMAGE"],
            kind_path=Path(options.get("kind") or env["KIND_BIN"]),
            kubectl_path=Path(kubectl),
        )
    # hack/kind.d/cluster.yaml fits only our node image (no kindnetd, etcd 3.6.4-0).
    config = os.environ.get("CLIP_KIND_CONFIG") or (env["KIND_CONFIG"] if offline else None)
    cluster.create(config_file=config)
    infra = infra_image(images[-1], media_root, versitygw)  # the operator image's Python
    for image in [*images, infra]:
        cluster.load_docker_image(image)
    _wait_images_listed(kubectl, kubeconfig, [*images, infra])
    _kubectl(kubectl, kubeconfig, "apply", "-f", str(REPO_ROOT / "crds"))
    manifest = "\n---\n".join(json.dumps(d) for d in infra_manifest(infra, *s3_keys))
    _kubectl(kubectl, kubeconfig, "apply", "-f", "-", stdin=manifest)
    _kubectl(kubectl, kubeconfig, "-n", INFRA_NAMESPACE, "wait", "--for=condition=Ready",
             f"pod/{INFRA_SERVICE}", "--timeout=180s")  # fmt: skip
    node_ip = _kubectl(
        kubectl, kubeconfig, "get", "nodes", "-o",
        "jsonpath={.items[0].status.addresses[?(@.type=='InternalIP')].address}",
    ).strip()  # fmt: skip
    service_ip = _kubectl(
        kubectl, kubeconfig, "-n", INFRA_NAMESPACE, "get", "service", INFRA_SERVICE,
        "-o", "jsonpath={.spec.clusterIP}",
    ).strip()  # fmt: skip
    shim = state / "svc-hosts"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return KindEnv(cluster, kubeconfig, node_ip, service_ip, shim)


def wait_answers(url: str, timeout: float = 60) -> None:
    """Until `url` answers HTTP at all (the NodePort path from this machine works)."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
