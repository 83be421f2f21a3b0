#!/usr/bin/env python3
"""Renders the kustomize base and every overlay with `kubectl kustomize`, validates every object
against the Kubernetes JSON schemas (kubernetes-validate, offline, strict), and checks the rules
the design asks of them: hardened containers with probes and resources, no Secret values, default
deny networking, one snapshot volume per matcher, disruption budgets. Exit status 0 when all hold.

Usage: deploy/check.py   (run by scripts/test.sh)
"""
import pathlib
import subprocess
import sys

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent / "k8s"
VERSION = "1.31.0"
failures = []


def fail(where, why):
    failures.append(f"{where}: {why}")


def render(path):
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def check_workload(name, obj):
    spec = obj["spec"]["template"]["spec"]
    if spec.get("automountServiceAccountToken") is not False:
        fail(name, "mounts a service account token")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        want = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
        for key, value in want.items():
            if sc.get(key) is not value:
                fail(name, f"container {c['name']} securityContext.{key} is not {value}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(name, f"container {c['name']} does not drop all capabilities")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in c:
                fail(name, f"container {c['name']} has no {probe}")
        res = c.get("resources", {})
        if not (res.get("requests") and res.get("limits")):
            fail(name, f"container {c['name']} lacks resource requests or limits")
        for env in c.get("env", []):
            if "value" in env and any(w in env["name"] for w in ("KEY", "SECRET", "PASSWORD", "URL")):
                fail(name, f"env {env['name']} carries a literal value; use a secretKeyRef")


def check(target):
    docs = render(target)
    where = target.relative_to(ROOT.parent)
    by_kind = {}
    for doc in docs:
        name = f"{where} {doc['kind']}/{doc['metadata']['name']}"
        by_kind.setdefault(doc["kind"], []).append(doc)
        try:
            kubernetes_validate.validate(doc, VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(name, f"schema: {e.message}")
        if doc["kind"] in ("Deployment", "StatefulSet"):
            check_workload(name, doc)
    if "Secret" in by_kind:
        fail(where, "defines a Secret (secrets are referenced, never defined here)")
    roles = {"audit", "ingest", "embed", "search", "gateway"}
    deployments = {d["metadata"]["name"].removeprefix("biomatch-") for d in by_kind.get("Deployment", [])}
    if deployments != roles:
        fail(where, f"Deployments {sorted(deployments)} are not the stateless roles {sorted(roles)}")
    matchers = by_kind.get("StatefulSet", [])
    if len(matchers) != 1 or not matchers[0]["spec"].get("volumeClaimTemplates"):
        fail(where, "matchers must be one StatefulSet with a volume claim per pod")
    headless = [s for s in by_kind.get("Service", []) if s["spec"].get("clusterIP") == "None"]
    if [s["metadata"]["name"] for s in headless] != ["biomatch-matcher"]:
        fail(where, "the matcher StatefulSet needs its headless Service")
    policies = by_kind.get("NetworkPolicy", [])
    if not any("ingress" not in p["spec"] and p["spec"]["policyTypes"] == ["Ingress"] for p in policies):
        fail(where, "no default-deny NetworkPolicy")
    matcher_policy = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "matcher"]
    allowed = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in matcher_policy for rule in p["spec"]["ingress"] for peer in rule.get("from", [])
    }
    if allowed != {"search", "ingest"}:
        fail(where, f"matchers reachable from {sorted(allowed)}, want only search and ingest")
    budgets = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for p in by_kind.get("PodDisruptionBudget", [])}
    if not {"matcher", "search"} <= budgets:
        fail(where, "matcher and search need PodDisruptionBudgets")
    return len(docs)


def main():
    targets = [ROOT / "base"] + sorted(p for p in (ROOT / "overlays").iterdir() if p.is_dir())
    for target in targets:
        print(f"deploy check: {target.relative_to(ROOT.parent)}: {check(target)} objects")
    for f in failures:
        print(f"deploy check FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
