#!/usr/bin/env python3
"""Checks the Helm chart without a helm binary (none is available on our machines):
values.yaml validates against values.schema.json; a list of bad values is rejected by it; every
template's actions are balanced, every `include` names a defined template, and every
`.Values.x.y` a template reads exists in values.yaml. The rules deploy/check.py applies to the
rendered kustomize manifests are checked here on the templates' text: mutual TLS arguments and
each role's own certificate and service key; the master key, audit signing key, database and Redis
URLs only inside the conditions naming the roles that use them; default deny both ways and the
same per-role calls (the matcher's egress: audit, the database, DNS); probes and Prometheus on
the operator port, /metrics never on the gateway's public port. What is NOT checked here: rendering the Go
templates and validating their output against the Kubernetes schemas (deploy/check.py does that
for the kustomize manifests, which the chart mirrors); run `helm lint` and `helm template | kubectl
apply --dry-run=server -f -` where helm exists.

Usage: helm/check.py   (run by scripts/test.sh)
"""
import copy
import json
import pathlib
import re
import sys

import jsonschema
import yaml

CHART = pathlib.Path(__file__).resolve().parent / "biomatch"
failures = []

BAD = {
    "two audit writers": ("replicas.audit", 2),
    "the latest tag": ("image.tag", "latest"),
    "an unknown index kind": ("index.kind", "annoy"),
    "zero shards": ("matcher.shards", 0),
    "a batch wait over 2 ms": ("matcher.batchWaitUs", 5000),
    "an OTLP endpoint without a scheme": ("telemetry.otlpEndpoint", "collector:4317"),
    "a Secret name with capitals": ("secrets.masterKey", "Biomatch-Keys"),
    "egress to anywhere for the database": ("networkPolicy.database.to", []),
    "an empty peer (everything) for Redis": ("networkPolicy.redis.to", [{}]),
    "an unknown key": ("matcher.colour", "blue"),
    "a memory quantity in furlongs": ("resources.limits.memory", "1furlong"),
    "a candidate margin that reopens the template oracle": ("search.candidateMargin", 0.9),
}


# As deploy/check.py: the gRPC calls each role's code makes, and which roles use which secrets.
CALLS = {
    "gateway": {"search", "ingest", "audit"},
    "search": {"ingest", "matcher", "embed", "audit"},
    "ingest": {"embed", "audit"},
    "embed": {"audit"},
    "matcher": {"audit"},
    "audit": set(),
}
DATABASE = {"ingest", "matcher", "audit"}
SEALS = {"ingest", "matcher"}


def names(go_list):
    return set(re.findall(r'"([^"]+)"', go_list))


def defines(text):
    """The body of each `define`d template (up to the next define)."""
    parts = re.split(r'{{-?\s*define\s+"([^"]+)"\s*-?}}', text)
    return dict(zip(parts[1::2], parts[2::2]))


def only_under(where, body, condition, needle):
    """`needle` appears in `body`, and only inside `{{ if CONDITION }}` blocks (not nested)."""
    block = re.compile(r"{{-?\s*if " + re.escape(condition) + r"\s*-?}}(.*?){{-?\s*end\s*-?}}", re.S)
    inside = "".join(block.findall(body))
    if needle not in inside:
        failures.append(f"{where}: {needle} is not under `if {condition}`")
    if needle in block.sub("", body):
        failures.append(f"{where}: {needle} appears outside `if {condition}`")


def check_deployment_rules(text):
    helpers = defines(text["_helpers.tpl"])
    flags, env, vols = helpers.get("biomatch.flags", ""), helpers.get("biomatch.env", ""), helpers.get("biomatch.volumes", "")
    # Who uses what: the conditions' role lists.
    for body, name in ((flags, "flags"), (vols, "volumes"), (helpers.get("biomatch.mounts", ""), "mounts")):
        m = re.search(r"\$seals := has \.role \(list ([^)]*)\)", body)
        if not m or names(m.group(1)) != SEALS:
            failures.append(f"_helpers.tpl {name}: $seals must be exactly {sorted(SEALS)}")
    m = re.search(r"\$database := has \.role \(list ([^)]*)\)", env)
    if not m or names(m.group(1)) != DATABASE:
        failures.append(f"_helpers.tpl env: $database must be exactly {sorted(DATABASE)}")
    if '$redis := eq .role "search"' not in env:
        failures.append("_helpers.tpl env: Redis must be for search only")
    # Mutual TLS and the role's own service key, for every role.
    for needle in ("--tls-ca /etc/biomatch/tls/ca.crt", "--tls-cert /etc/biomatch/tls/tls.crt",
                   "--tls-key /etc/biomatch/tls/tls.key", "--service-key /etc/biomatch/service-key/service-{{ .role }}.key.pem"):
        if needle not in flags:
            failures.append(f"_helpers.tpl flags: no {needle}")
    for needle in ("secretName: {{ $s.prefix }}-{{ .role }}-tls", "secretName: {{ $s.prefix }}-{{ .role }}-service-key",
                   "configMap: {name: {{ .root.Values.publicKeys.configMap }}}"):
        if needle not in vols:
            failures.append(f"_helpers.tpl volumes: no {needle}")
    # Secrets only where used.
    only_under("_helpers.tpl flags", flags, "$seals", "--master-key-file")
    only_under("_helpers.tpl flags", flags, 'eq .role "audit"', "--audit-signing-key")
    only_under("_helpers.tpl volumes", vols, "$seals", "$s.masterKey")
    only_under("_helpers.tpl volumes", vols, 'eq .role "audit"', "$s.auditSigningKey")
    only_under("_helpers.tpl env", env, "$database", "BIOMATCH_DATABASE_URL")
    only_under("_helpers.tpl env", env, "and $redis .root.Values.redis.existingSecret", "BIOMATCH_REDIS_URL")
    if len(re.findall(r"secretName:", vols)) != 4:
        failures.append("_helpers.tpl volumes: a Secret beyond tls, service key, master key, audit key")
    # The operator port: probes and scraping there; the public port only on the gateway.
    probes = helpers.get("biomatch.probes", "")
    if probes.count("port: ops}") != 3 or "grpc" in probes:
        failures.append("_helpers.tpl probes: liveness, readiness and startup must be HTTP on the ops port")
    only_under("_helpers.tpl ports", helpers.get("biomatch.ports", ""), 'eq .role "gateway"', "containerPort: 8080")
    if "containerPort: 9090" not in helpers.get("biomatch.ports", ""):
        failures.append("_helpers.tpl ports: no ops port 9090")
    if 'prometheus.io/port: "9090"' not in helpers.get("biomatch.podAnnotations", ""):
        failures.append("_helpers.tpl podAnnotations: Prometheus must scrape the ops port")
    only_under("roles.yaml strategy", text["roles.yaml"], 'eq $role "audit"', "strategy: {type: Recreate}")
    for name in ("roles.yaml", "matcher.yaml"):
        for needle in ('include "biomatch.flags" $ctx', 'include "biomatch.env" $ctx', 'include "biomatch.probes" $ctx',
                       'include "biomatch.podAnnotations" $ctx', 'include "biomatch.volumes" $ctx', 'include "biomatch.mounts" $ctx'):
            if needle not in text[name]:
                failures.append(f"{name}: no {needle}")
        if re.search(r"\bgrpc:\s*{", text[name]):
            failures.append(f"{name}: a gRPC probe (it cannot present a client certificate)")
    config = text["config.yaml"]
    if 'metrics_addr = "0.0.0.0:9090"' not in config or 'http_addr = "0.0.0.0:8080"' not in config:
        failures.append("config.yaml: metrics_addr must be the ops port 9090, apart from http_addr 8080")
    if "http://" in config or config.count("https://") < 5:
        failures.append("config.yaml: endpoints between roles must all be https")
    for key in ("master_key_file", "signing_key_file", "service_key_file"):
        if key in config:
            failures.append(f"config.yaml: the shared configuration names {key}: secrets are per role")
    # Network policies: default deny both ways, the same calls, stores only for their roles.
    policies = text["network-policies.yaml"]
    deny = policies.split("-biomatch-default-deny", 1)[-1].split("---", 1)[0]
    if 'policyTypes: ["Ingress", "Egress"]' not in deny or "ingress:" in deny or "egress:" in deny:
        failures.append("network-policies.yaml: no default deny for both ingress and egress")
    m = re.search(r"\$calls := dict (.*?)}}", policies)
    calls = {k: names(v) for k, v in re.findall(r'"(\w+)" \(list((?: "\w+")*)\)', m.group(1))} if m else {}
    if calls != CALLS:
        failures.append(f"network-policies.yaml: $calls {calls} is not {CALLS}")
    m = re.search(r"\$database := list ([^}]*)}}", policies)
    if not m or names(m.group(1)) != DATABASE:
        failures.append(f"network-policies.yaml: database egress must be for {sorted(DATABASE)} only")
    m = re.search(r"\$redis := list ([^}]*)}}", policies)
    if not m or names(m.group(1)) != {"search"}:
        failures.append("network-policies.yaml: Redis egress must be for search only")
    for needle in ("range $role, $callees := $calls", "has $role $callees", "has $role $database",
                   "has $role $redis", 'policyTypes: ["Egress"]'):
        if needle not in policies:
            failures.append(f"network-policies.yaml: no {needle}")
    scrape = policies.split("-biomatch-ops-scrape", 1)[-1]
    if "port: 9090" not in scrape or "8080" in scrape:
        failures.append("network-policies.yaml: the monitoring namespace may reach the ops port (9090) only")


def set_path(values, path, value):
    *parents, last = path.split(".")
    for p in parents:
        values = values[p]
    values[last] = value


def main():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    for error in validator.iter_errors(values):
        failures.append(f"values.yaml: {error.message}")
    for what, (path, value) in BAD.items():
        bad = copy.deepcopy(values)
        set_path(bad, path, value)
        if validator.is_valid(bad):
            failures.append(f"values.schema.json accepts {what} ({path}={value!r})")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for key in ("apiVersion", "name", "version", "appVersion"):
        if key not in chart:
            failures.append(f"Chart.yaml lacks {key}")

    templates = sorted((CHART / "templates").glob("*"))
    text = {t.name: t.read_text() for t in templates}
    defined = {m for body in text.values() for m in re.findall(r'{{-?\s*define\s+"([^"]+)"', body)}
    for name, body in text.items():
        if "{{" in re.sub(r"{{.*?}}", "", body, flags=re.S):
            failures.append(f"{name}: a template action is not closed")
        opens = len(re.findall(r"{{-?\s*(?:if|range|with|define)\b", body))
        ends = len(re.findall(r"{{-?\s*end\b", body))
        if opens != ends:
            failures.append(f"{name}: {opens} blocks opened, {ends} closed")
        for used in re.findall(r'include\s+"([^"]+)"', body):
            if used not in defined:
                failures.append(f"{name}: includes undefined template {used}")
        for path in re.findall(r"\.Values((?:\.[A-Za-z0-9_]+)+)", body):
            node = values
            for part in path.strip(".").split("."):
                if not isinstance(node, dict) or part not in node:
                    failures.append(f"{name}: reads .Values{path}, which values.yaml lacks")
                    break
                node = node[part]
    check_deployment_rules(text)
    for f in failures:
        print(f"helm check FAILED: {f}", file=sys.stderr)
    print(f"helm check: values, {len(BAD)} bad values refused, {len(templates)} templates")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
