#!/usr/bin/env python3
"""Renders the kustomize base and every overlay with `kubectl kustomize`, validates every object
against the Kubernetes JSON schemas (kubernetes-validate, offline, strict), and checks the rules
the design asks of them: hardened containers with probes and resources, no Secret values, one
snapshot volume per matcher, disruption budgets; mutual TLS for every role with https endpoints;
default deny in both directions with exactly the ingress and egress each role's code needs;
/metrics only on the operator port (probes and Prometheus there, never on the gateway's public
port); per-role secrets (gateway and embed mount no master key, audit key, database or Redis URL);
a Dockerfile whose default command is not demo mode and a .dockerignore that keeps build output,
data and keys out of the image. Exit status 0 when all hold.

Usage: deploy/check.py   (run by scripts/test.sh)
"""
import json
import pathlib
import re
import subprocess
import sys
import tomllib

import kubernetes_validate
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
ROOT = REPO / "deploy" / "k8s"
VERSION = "1.31.0"
OPS_PORT, HTTP_PORT, GRPC_PORT = 9090, 8080, 50051
ROLES = ("audit", "ingest", "embed", "search", "gateway", "matcher")

# The gRPC calls each role's code makes (crates/biomatch/src/serve.rs and the service crates):
# embed and matchers call audit only to record a refused call; matchers read the store directly.
CALLS = {
    "gateway": {"search", "ingest", "audit"},
    "search": {"ingest", "matcher", "embed", "audit"},
    "ingest": {"embed", "audit"},
    "embed": {"audit"},
    "matcher": {"audit"},
    "audit": set(),
}
DATABASE = {"ingest", "matcher", "audit"}  # open a store (serve.rs: gallery or audit store)
SEALS = {"ingest", "matcher"}  # read the master key (ServeConfig::seals_templates)
REDIS = {"search"}  # query budgets and spent single-use tokens shared by replicas
failures = []


def fail(where, why):
    failures.append(f"{where}: {why}")


def render(path):
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def role_of(obj):
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


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


def check_role_pod(name, obj):
    """TLS, the operator port and per-role secrets of one role's pods."""
    role = role_of(obj)
    pod = obj["spec"]["template"]
    spec = pod["spec"]
    c = spec["containers"][0]
    args = " ".join(c.get("command", []) + c.get("args", []))
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}

    def secret_at(directory):
        volume = volumes.get(mounts.get(directory, ""), {})
        return volume.get("secret", {}).get("secretName")

    # Mutual TLS: the three flags, pointing into the role's own certificate Secret.
    for flag, file in (("--tls-ca", "ca.crt"), ("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")):
        if not re.search(rf"{flag}[ =]/etc/biomatch/tls/{re.escape(file)}\b", args):
            fail(name, f"no {flag} /etc/biomatch/tls/{file} argument (mutual TLS)")
    if secret_at("/etc/biomatch/tls") != f"biomatch-{role}-tls":
        fail(name, f"does not mount Secret biomatch-{role}-tls at /etc/biomatch/tls")
    # Its own service key, and public keys from a ConfigMap.
    if secret_at("/etc/biomatch/service-key") != f"biomatch-{role}-service-key":
        fail(name, f"does not mount Secret biomatch-{role}-service-key at /etc/biomatch/service-key")
    if f"--service-key /etc/biomatch/service-key/service-{role}.key.pem" not in args:
        fail(name, f"no --service-key for service-{role}")
    public = volumes.get(mounts.get("/etc/biomatch/public-keys", ""), {})
    if "configMap" not in public:
        fail(name, "token public keys are not mounted from a ConfigMap at /etc/biomatch/public-keys")

    # Only the role's own secrets: every Secret it mounts or reads, against what its code uses.
    mounted = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    for v in volumes.values():
        for source in v.get("projected", {}).get("sources", []):
            if "secret" in source:
                mounted.add(source["secret"]["name"])
    env = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for e in c.get("envFrom", []):
        if "secretRef" in e:
            env.add(e["secretRef"]["name"])
    allowed = {f"biomatch-{role}-tls", f"biomatch-{role}-service-key"}
    allowed |= {"biomatch-master-key"} if role in SEALS else set()
    allowed |= {"biomatch-audit-signing-key"} if role == "audit" else set()
    allowed_env = ({"biomatch-database"} if role in DATABASE else set()) | ({"biomatch-redis"} if role in REDIS else set())
    for extra in sorted(mounted - allowed):
        fail(name, f"mounts Secret {extra}, which the {role} role does not use")
    for extra in sorted(env - allowed_env):
        fail(name, f"reads Secret {extra} into its environment, which the {role} role does not use")
    if role in SEALS and ("biomatch-master-key" not in mounted or "--master-key-file" not in args):
        fail(name, "seals templates but is given no master key")
    if role == "audit" and ("biomatch-audit-signing-key" not in mounted or "--audit-signing-key" not in args):
        fail(name, "keeps the audit log but is given no signing key")
    if role in DATABASE and "biomatch-database" not in env:
        fail(name, "opens a store but is given no database URL")
    if role not in SEALS and "--master-key-file" in args:
        fail(name, "names a master key it does not use")

    # The operator port: probes and scraping there (gRPC probes cannot present a client certificate).
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("ops") != OPS_PORT:
        fail(name, f"no ops port {OPS_PORT}")
    if role == "gateway" and ports.get("http") != HTTP_PORT:
        fail(name, f"the gateway has no http port {HTTP_PORT}")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if p and p.get("httpGet", {}).get("port") not in ("ops", OPS_PORT):
            fail(name, f"{probe} is not an HTTP probe on the ops port")
    notes = pod["metadata"].get("annotations", {})
    if notes.get("prometheus.io/scrape") != "true" or notes.get("prometheus.io/port") != str(OPS_PORT):
        fail(name, f"Prometheus does not scrape the ops port ({OPS_PORT})")


def check_config(where, configmaps):
    """The shared configuration: https endpoints, an operator port apart from the public one."""
    config = [m for m in configmaps if "biomatch.toml" in m.get("data", {})]
    if len(config) != 1:
        return fail(where, "no single ConfigMap with biomatch.toml")
    toml = tomllib.loads(config[0]["data"]["biomatch.toml"])
    port = lambda key: int(toml.get(key, ":0").rsplit(":", 1)[1])
    if port("metrics_addr") != OPS_PORT or port("http_addr") != HTTP_PORT:
        fail(where, f"metrics_addr must be the ops port {OPS_PORT}, apart from http_addr {HTTP_PORT}")
    e = toml.get("endpoints", {})
    urls = [e.get(k) for k in ("audit", "ingest", "embed", "search")] + e.get("matchers", [])
    if not urls or not all(u and u.startswith("https://") for u in urls):
        fail(where, "endpoints between roles must all be https")
    for secret_key in ("master_key_file", "signing_key_file", "service_key_file"):
        if secret_key in config[0]["data"]["biomatch.toml"]:
            fail(where, f"the shared ConfigMap names {secret_key}: secrets are per role")


def check_services(where, services):
    gateway = [s for s in services if s["metadata"]["name"].endswith("biomatch-gateway")]
    for s in gateway:
        for p in s["spec"]["ports"]:
            if p["port"] == OPS_PORT or p.get("targetPort") in ("ops", OPS_PORT):
                continue
            if p.get("targetPort") not in ("http", HTTP_PORT):
                fail(where, f"the gateway Service exposes {p['name']} besides http and ops")
    if not gateway:
        fail(where, "no gateway Service")


def selects(policy, labels):
    sel = policy["spec"]["podSelector"]
    if any(labels.get(k) != v for k, v in sel.get("matchLabels", {}).items()):
        return False
    for e in sel.get("matchExpressions", []):
        if e["operator"] != "In" or labels.get(e["key"]) not in e["values"]:
            return False
    return True


def peer_name(peer, port):
    """What a NetworkPolicy peer stands for, as CALLS names it."""
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    namespaces = peer.get("namespaceSelector", {}).get("matchLabels", {})
    if "ipBlock" not in peer and "namespaceSelector" not in peer and pods.get("app.kubernetes.io/component"):
        return pods["app.kubernetes.io/component"]
    if port == 53 and namespaces.get("kubernetes.io/metadata.name") == "kube-system" and pods:
        return "dns"
    if port == 5432 and pods.get("app.kubernetes.io/name") == "postgresql" or port == 5432 and "ipBlock" in peer:
        return "database"
    if port == 6379 and pods.get("app.kubernetes.io/name") == "redis" or port == 6379 and "ipBlock" in peer:
        return "redis"
    if namespaces.get("kubernetes.io/metadata.name") == "monitoring" and not pods:
        return "monitoring"
    return "anywhere"


def flows(policies, role, direction):
    """(port, peer) pairs a role's pods may use in `direction` ("ingress" or "egress")."""
    labels = {"app.kubernetes.io/name": "biomatch", "app.kubernetes.io/component": role}
    key = "from" if direction == "ingress" else "to"
    out = set()
    for p in policies:
        if not selects(p, labels):
            continue
        for rule in p["spec"].get(direction, []):
            ports = [q.get("port", "any") for q in rule.get("ports", [])] or ["any"]
            for port in ports:
                for peer in rule.get(key, [{}]) if key in rule else [{}]:
                    out.add((port, peer_name(peer, port) if peer else "anywhere"))
    return out


def check_network(where, policies):
    deny = [p for p in policies if sorted(p["spec"].get("policyTypes", [])) == ["Egress", "Ingress"]
            and "ingress" not in p["spec"] and "egress" not in p["spec"]]
    if not any(selects(p, {"app.kubernetes.io/name": "biomatch"}) for p in deny):
        fail(where, "no default-deny NetworkPolicy for both ingress and egress")
    for role in ROLES:
        want = {(GRPC_PORT, callee) for callee in CALLS[role]} | {(53, "dns")}
        want |= {(5432, "database")} if role in DATABASE else set()
        want |= {(6379, "redis")} if role in REDIS else set()
        got = flows(policies, role, "egress")
        if got != want:
            fail(where, f"{role} egress {sorted(got, key=str)}, want {sorted(want, key=str)}")
        want = {(GRPC_PORT, caller) for caller, callees in CALLS.items() if role in callees}
        want |= {(OPS_PORT, "monitoring")}
        if role == "search":  # kiosks, wherever the cluster's ingress lets them in (the gateway too)
            want = {(GRPC_PORT, "anywhere"), (OPS_PORT, "monitoring")}
        want |= {(HTTP_PORT, "anywhere")} if role == "gateway" else set()  # analysts
        got = flows(policies, role, "ingress")
        if got != want:
            fail(where, f"{role} ingress {sorted(got, key=str)}, want {sorted(want, key=str)}")


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
            check_role_pod(name, doc)
        if doc["kind"] == "Deployment" and role_of(doc) == "audit":
            if doc["spec"].get("replicas") != 1 or doc["spec"].get("strategy", {}).get("type") != "Recreate":
                fail(name, "the audit log has one writer: 1 replica, strategy Recreate (never two at once)")
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
    check_config(where, by_kind.get("ConfigMap", []))
    check_services(where, by_kind.get("Service", []))
    check_network(where, by_kind.get("NetworkPolicy", []))
    budgets = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for p in by_kind.get("PodDisruptionBudget", [])}
    if not {"matcher", "search"} <= budgets:
        fail(where, "matcher and search need PodDisruptionBudgets")
    return len(docs)


def check_image():
    """The image's default command is not demo mode; the build context holds no data or keys."""
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    cmds = [json.loads(line.split(None, 1)[1]) for line in dockerfile.splitlines() if line.startswith("CMD ")]
    for cmd in cmds:
        role = cmd[cmd.index("--role") + 1] if "--role" in cmd[:-1] else None
        if "serve" in cmd and (role is None or "all" in role.split(",")):
            fail("deploy/Dockerfile", f"default command {cmd} runs demo mode (serve without a role, or role all)")
    ignore = REPO / ".dockerignore"
    entries = {line.strip().strip("/") for line in ignore.read_text().splitlines()} if ignore.exists() else set()
    for needed in ("target", "biomatch-data", "biomatch-cluster", "models", ".git", "keys"):
        if needed not in entries:
            fail(".dockerignore", f"does not keep {needed}/ out of the build context")
    if "biomatch-data/" not in (REPO / ".gitignore").read_text():
        fail(".gitignore", "does not ignore biomatch-data/")


def main():
    targets = [ROOT / "base"] + sorted(p for p in (ROOT / "overlays").iterdir() if p.is_dir())
    for target in targets:
        print(f"deploy check: {target.relative_to(ROOT.parent)}: {check(target)} objects")
    check_image()
    for f in failures:
        print(f"deploy check FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
