#!/usr/bin/env python3
"""Checks the Helm chart without a helm binary (none is available on our machines):
values.yaml validates against values.schema.json; a list of bad values is rejected by it; every
template's actions are balanced, every `include` names a defined template, and every
`.Values.x.y` a template reads exists in values.yaml. What is NOT checked here: rendering the Go
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
    "a Secret name with capitals": ("keys.existingSecret", "Biomatch-Keys"),
    "an unknown key": ("matcher.colour", "blue"),
    "a memory quantity in furlongs": ("resources.limits.memory", "1furlong"),
}


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
    for f in failures:
        print(f"helm check FAILED: {f}", file=sys.stderr)
    print(f"helm check: values, {len(BAD)} bad values refused, {len(templates)} templates")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
