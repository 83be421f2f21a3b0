#!/usr/bin/env python3
"""Shows that helm/check.py can fail: breaks one rule at a time in a copy of the chart and expects
check.py to refuse each with the matching message. Exit status 0 when every breakage is caught.

Usage: helm/check_fails.py   (run by scripts/test.sh after helm/check.py)
"""
import pathlib, shutil, subprocess, sys, tempfile
REPO = pathlib.Path(__file__).resolve().parent.parent
T = "helm/biomatch/templates/"
M = [
 ("no --tls-key", T+"_helpers.tpl", " --tls-key /etc/biomatch/tls/tls.key", "", "--tls-key"),
 ("master key for every role", T+"_helpers.tpl", "{{- if $seals }}\n- name: master-key\n  secret: {secretName: {{ $s.masterKey }}, defaultMode: 0400}\n", "- name: master-key\n  secret: {secretName: {{ $s.masterKey }}, defaultMode: 0400}\n{{- if $seals }}\n", "outside"),
 ("gateway seals", T+"_helpers.tpl", '{{- $seals := has .role (list "ingest" "matcher") -}}\n{{- $s :=', '{{- $seals := has .role (list "ingest" "matcher" "gateway") -}}\n{{- $s :=', "$seals"),
 ("database for embed", T+"_helpers.tpl", '(list "ingest" "matcher" "audit")', '(list "ingest" "matcher" "audit" "embed")', "$database"),
 ("redis for all", T+"_helpers.tpl", "{{- if and $redis .root.Values.redis.existingSecret }}", "{{- if .root.Values.redis.existingSecret }}", "REDIS"),
 ("extra secret", T+"_helpers.tpl", "- name: tmp\n  emptyDir: {}\n- name: data", "- name: x\n  secret: {secretName: biomatch-keys}\n- name: tmp\n  emptyDir: {}\n- name: data", "beyond"),
 ("grpc readiness", T+"_helpers.tpl", "readinessProbe:\n  httpGet: {path: /readyz, port: ops}", "readinessProbe:\n  grpc: {port: 50051}", "probes"),
 ("scrape 8080", T+"_helpers.tpl", 'prometheus.io/port: "9090"', 'prometheus.io/port: "8080"', "podAnnotations"),
 ("http port everywhere", T+"_helpers.tpl", '{{- if eq .role "gateway" }}\n- {name: http, containerPort: 8080}\n{{- end }}', "- {name: http, containerPort: 8080}", "8080"),
 ("matcher calls ingest", T+"network-policies.yaml", '"matcher" (list "audit")', '"matcher" (list "audit" "ingest")', "$calls"),
 ("ingress-only default deny", T+"network-policies.yaml", 'policyTypes: ["Ingress", "Egress"]', 'policyTypes: ["Ingress"]', "default deny"),
 ("redis for ingest", T+"network-policies.yaml", '$redis := list "search"', '$redis := list "search" "ingest"', "Redis"),
 ("scrape public port", T+"network-policies.yaml", "ports: [{protocol: TCP, port: 9090}]", "ports: [{protocol: TCP, port: 9090}, {protocol: TCP, port: 8080}]", "ops port"),
 ("metrics on public port", T+"config.yaml", 'metrics_addr = "0.0.0.0:9090"', 'metrics_addr = "0.0.0.0:8080"', "metrics_addr"),
 ("http endpoint", T+"config.yaml", 'audit = "https://', 'audit = "http://', "https"),
 ("matcher without flags", T+"matcher.yaml", ' {{ include "biomatch.flags" $ctx }}', "", "biomatch.flags"),
 ("audit rolling update", T+"roles.yaml", "  strategy: {type: Recreate}\n", "", "strategy"),
 ("roles gRPC probe", T+"roles.yaml", '          {{- include "biomatch.probes" $ctx | nindent 10 }}\n', "          readinessProbe:\n            grpc: {port: 50051}\n", "probe"),
]
bad = 0
for what, path, old, new, expect in M:
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        shutil.copytree(REPO / "helm", d / "helm")
        f = d / path
        text = f.read_text()
        assert old in text, (what, old)
        f.write_text(text.replace(old, new, 1))
        r = subprocess.run([sys.executable, str(d / "helm/check.py")], capture_output=True, text=True)
        ok = r.returncode == 1 and expect in r.stderr
        bad += not ok
        first = (r.stderr.strip().splitlines() or ["(no failure)"])[0]
        print(f"{'caught' if ok else 'MISSED'}: {what}: {first[:160]}")
print(f"{len(M) - bad}/{len(M)} breakages caught")
sys.exit(1 if bad else 0)
