"""The chart's dashboards as kube-prometheus-stack's Grafana finds and loads them.

kube-prometheus-stack runs Grafana with the k8s-sidecar: it watches ConfigMaps whose label
`grafana.sidecar.dashboards.label` (default `grafana_dashboard`) has the value
`labelValue` (default "1"), in `searchNamespace`, writes every data key as a file into the
folder its `folderAnnotation` names, and Grafana's file provisioning loads each file by
its `uid`. Its Prometheus datasource is the default one (`isDefault: true`, uid
`prometheus`). The tests below play that part on `helm template` output (no Grafana: it is
AGPL), and render the chart twice, as before and after an upgrade, to show the uids and
ConfigMap names stay, so an upgrade replaces the dashboards instead of adding copies.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_chart import CHART, REPO, by_kind, helm

# kube-prometheus-stack's defaults for the sidecar, plus the folder annotation users set.
SIDECAR = {"label": "grafana_dashboard", "labelValue": "1", "folderAnnotation": "grafana_folder"}
# The datasources kube-prometheus-stack provisions (its grafana.sidecar.datasources defaults).
DATASOURCES = [
    {"name": "Prometheus", "type": "prometheus", "uid": "prometheus", "isDefault": True},
    {"name": "Alertmanager", "type": "alertmanager", "uid": "alertmanager", "isDefault": False},
]
VALUES = {
    "grafanaDashboards.enabled": "true",
    "grafanaDashboards.annotations.grafana_folder": "Clips",
}
SOURCES = {p.name: json.loads(p.read_text()) for p in sorted((REPO / "dashboards").glob("*.json"))}


def render(chart: Path = CHART, release: str = "clip", **sets: str) -> list[dict[str, Any]]:
    args = ["template", release, str(chart), "--namespace", "monitoring", "--skip-tests"]
    for key, value in {**VALUES, **sets}.items():
        args += ["--set", f"{key}={value}"]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def sidecar_files(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the sidecar writes: {folder/file: dashboard}, from the ConfigMaps it selects."""
    files: dict[str, dict[str, Any]] = {}
    for cm in by_kind(docs, "ConfigMap"):
        meta = cm["metadata"]
        if (meta.get("labels") or {}).get(SIDECAR["label"]) != SIDECAR["labelValue"]:
            continue
        folder = (meta.get("annotations") or {}).get(SIDECAR["folderAnnotation"], "")
        for key, text in cm["data"].items():
            path = f"{folder}/{key}"
            assert path not in files, f"two ConfigMaps write {path}"
            files[path] = json.loads(text)
    return files


def resolve_datasource(variable: dict[str, Any]) -> dict[str, Any]:
    """Grafana's choice for a datasource variable: its current value, where "default" (or
    none) means the default datasource when that is of the variable's type."""
    assert variable["type"] == "datasource"
    pattern = re.compile(variable.get("regex") or ".*")
    candidates = [
        d for d in DATASOURCES if d["type"] == variable["query"] and pattern.fullmatch(d["name"])
    ]
    assert candidates, f"no {variable['query']} datasource matches {pattern.pattern!r}"
    current = (variable.get("current") or {}).get("value") or "default"
    if current == "default":
        return next((d for d in candidates if d["isDefault"]), candidates[0])
    return next(d for d in candidates if current in (d["uid"], d["name"]))


def datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def test_sidecar_selects_every_dashboard_by_label_and_value_into_the_folder() -> None:
    files = sidecar_files(render())
    assert sorted(files) == [f"Clips/{name}" for name in SOURCES]
    for path, dashboard in files.items():
        assert dashboard == SOURCES[path.split("/", 1)[1]], "the chart ships dashboards/ as is"


def test_configmaps_carry_exactly_the_sidecar_label_value_and_folder_annotation() -> None:
    maps = by_kind(render(), "ConfigMap")
    assert len(maps) == len(SOURCES)
    for cm in maps:
        meta = cm["metadata"]
        assert meta["labels"][SIDECAR["label"]] == "1"  # a string: the label selector's value
        assert meta["annotations"] == {SIDECAR["folderAnnotation"]: "Clips"}
        assert meta["namespace"] == "monitoring"
        ((key, text),) = cm["data"].items()
        assert key.endswith(".json"), "Grafana's file provider loads *.json only"
        # kubectl/Argo CD client-side apply keep a copy in an annotation limited to 256 KiB.
        assert len(text.encode()) < 256 * 1024


def test_a_wrong_label_value_is_not_selected() -> None:
    docs = render(**{"grafanaDashboards.labelValue": "yes"})
    assert sidecar_files(docs) == {}, "the sidecar's selector is grafana_dashboard=1"


def test_configmaps_go_to_the_namespace_the_sidecar_searches() -> None:
    for cm in by_kind(render(**{"grafanaDashboards.namespace": "grafana"}), "ConfigMap"):
        assert cm["metadata"]["namespace"] == "grafana"


def test_datasource_variable_resolves_to_the_default_prometheus() -> None:
    for path, dashboard in sidecar_files(render()).items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        chosen = resolve_datasource(variables["datasource"])
        assert chosen["uid"] == "prometheus", path
        text = json.dumps(dashboard)
        assert "__inputs" not in dashboard and "${DS_" not in text, path
        # Every datasource reference of a panel, query and variable goes through the variable.
        refs = list(datasource_refs(dashboard))
        assert len(refs) > 10, path
        assert all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs), path


def test_cluster_and_namespace_variables_default_to_everything() -> None:
    """Single-cluster users (no `cluster` label) and any namespace see data by default."""
    for path, dashboard in sidecar_files(render()).items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert list(variables) == ["datasource", "cluster", "namespace", "job"], path
        for name in ("cluster", "namespace"):
            var = variables[name]
            assert var["includeAll"] is True and var["allValue"] == ".*", (path, name)
            assert var["current"] == {"text": "All", "value": "$__all"}, (path, name)
            assert "label_values(clip_jobs_inflight" in var["query"]["query"]
            assert var["query"]["query"].endswith(f", {name})")
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                for selector in re.findall(r"\b[a-z_:]+\{([^}]*)\}", target["expr"]):
                    for label in ("cluster", "namespace", "job"):
                        assert f'{label}=~"${label}"' in selector, (path, target["expr"])


def test_uids_and_names_stay_across_an_upgrade(tmp_path: Path) -> None:
    before = render(release="clip")
    # The next release: a bumped chart and app version, and different values.
    upgraded = tmp_path / "clip-operator"
    shutil.copytree(CHART, upgraded)
    chart_yaml = upgraded / "Chart.yaml"
    meta = yaml.safe_load(chart_yaml.read_text())
    meta["version"], meta["appVersion"] = "9.9.9", "9.9.9"
    chart_yaml.write_text(yaml.safe_dump(meta))
    after = render(
        upgraded,
        release="clip",
        **{"image.tag": "9.9.9", "operator.inFlightLimit": "50", "replicas": "3"},
    )
    old_maps = {cm["metadata"]["name"]: cm for cm in by_kind(before, "ConfigMap")}
    new_maps = {cm["metadata"]["name"]: cm for cm in by_kind(after, "ConfigMap")}
    assert sorted(new_maps) == sorted(old_maps), "an upgrade must replace, not add, ConfigMaps"
    assert any(
        m["metadata"]["labels"].get("helm.sh/chart") == "clip-operator-9.9.9"
        for m in new_maps.values()
    ), "the second render is the upgraded chart"
    old_files, new_files = sidecar_files(before), sidecar_files(after)
    assert sorted(new_files) == sorted(old_files)
    for path in old_files:
        assert new_files[path]["uid"] == old_files[path]["uid"], path
    assert {f["uid"] for f in new_files.values()} == {"clip-overview", "clip-operator"}
    # Grafana keys a provisioned dashboard by uid, and links use /d/<uid>.
    assert len({f["uid"] for f in new_files.values()}) == len(new_files)
    for dashboard in new_files.values():
        assert dashboard["id"] is None, "a fixed id would clash with Grafana's own"
