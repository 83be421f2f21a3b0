#!/usr/bin/env python3
"""Shows that deploy/check.py can fail: breaks one rule at a time (TLS, per-role secrets, egress,
the operator port, the image) in a copy of the deploy files and expects check.py to refuse each
with the matching message. Exit status 0 when every breakage is caught.

Usage: deploy/check_fails.py   (run by scripts/test.sh after deploy/check.py)
"""
import pathlib, shutil, subprocess, sys, tempfile
REPO = pathlib.Path(__file__).resolve().parent.parent
B = "deploy/k8s/base/"
M = [
 ("gateway without --tls-ca", B+"gateway.yaml", "        - --tls-ca\n        - /etc/biomatch/tls/ca.crt\n", "", "--tls-ca"),
 ("search mounts gateway's cert", B+"search.yaml", "secretName: biomatch-search-tls", "secretName: biomatch-gateway-tls", "biomatch-search-tls"),
 ("matcher args lack TLS", B+"matcher.yaml", "--tls-cert /etc/biomatch/tls/tls.crt", "", "--tls-cert"),
 ("gateway mounts master key", B+"gateway.yaml", "          secretName: biomatch-gateway-tls\n", "          secretName: biomatch-gateway-tls\n      - name: mk\n        secret:\n          secretName: biomatch-master-key\n", "biomatch-master-key"),
 ("embed reads database", B+"embed.yaml", "        env:\n", "        env:\n        - name: BIOMATCH_DATABASE_URL\n          valueFrom:\n            secretKeyRef:\n              name: biomatch-database\n              key: url\n", "biomatch-database"),
 ("gateway reads redis", B+"gateway.yaml", "        env:\n", "        env:\n        - name: BIOMATCH_REDIS_URL\n          valueFrom:\n            secretKeyRef:\n              name: biomatch-redis\n              key: url\n", "biomatch-redis"),
 ("embed mounts audit signing key", B+"embed.yaml", "          secretName: biomatch-embed-tls\n", "          secretName: biomatch-embed-tls\n      - name: ak\n        secret:\n          secretName: biomatch-audit-signing-key\n", "biomatch-audit-signing-key"),
 ("matcher without master key", B+"matcher.yaml", "secretName: biomatch-master-key", "secretName: biomatch-matcher-other", "master key"),
 ("matcher may reach ingest", B+"network-policies.yaml", "  name: biomatch-matcher-egress\n", None, "matcher egress"),
 ("no egress default deny", B+"network-policies.yaml", "  policyTypes:\n  - Ingress\n  - Egress\n", "  policyTypes:\n  - Ingress\n", "default-deny"),
 ("gateway egress to matcher", B+"network-policies.yaml", "  name: biomatch-gateway-egress\n", "GW", "gateway egress"),
 ("scrape on 8080", B+"network-policies.yaml", "    - protocol: TCP\n      port: 9090\n", "    - protocol: TCP\n      port: 9090\n    - protocol: TCP\n      port: 8080\n", "ingress"),
 ("metrics on the public port", B+"config.yaml", 'metrics_addr = "0.0.0.0:9090"', 'metrics_addr = "0.0.0.0:8080"', "metrics_addr"),
 ("http endpoint", B+"config.yaml", 'audit = "https://', 'audit = "http://', "https"),
 ("shared master key path", B+"config.yaml", "[crypto]\n", '[crypto]\n    master_key_file = "/etc/biomatch/master-key/master.key"\n', "master_key_file"),
 ("gRPC readiness probe", B+"search.yaml", "        readinessProbe:\n          httpGet:\n            path: /readyz\n            port: ops\n", "        readinessProbe:\n          grpc:\n            port: 50051\n", "readinessProbe"),
 ("scrape annotation on 8080", B+"gateway.yaml", "prometheus.io/port: '9090'", "prometheus.io/port: '8080'", "scrape"),
 ("audit rolling update", B+"audit.yaml", "    type: Recreate\n", "    type: RollingUpdate\n", "one writer"),
 ("no ops port", B+"audit.yaml", "        - name: ops\n          containerPort: 9090\n", "", "ops port"),
 ("gateway Service exposes grpc", B+"gateway.yaml", "  - name: http\n    port: 8080\n    targetPort: http\n", "  - name: http\n    port: 8080\n    targetPort: http\n  - name: grpc\n    port: 50051\n    targetPort: grpc\n", "gateway Service"),
 ("demo CMD", "deploy/Dockerfile", 'CMD ["--help"]', 'CMD ["serve", "--config", "/etc/biomatch/biomatch.toml"]', "demo"),
 ("role all CMD", "deploy/Dockerfile", 'CMD ["--help"]', 'CMD ["serve", "--role", "all"]', "demo"),
 ("dockerignore without target", ".dockerignore", "\ntarget/\n", "\n", "target"),
 ("dockerignore without data", ".dockerignore", "biomatch-data/\n", "", "biomatch-data"),
 ("gitignore without data", ".gitignore", "biomatch-data/\n", "", "biomatch-data"),
]
GW_EXTRA = """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: biomatch-gateway-extra
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/component: gateway
  policyTypes:
  - Egress
  egress:
  - to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/component: matcher
"""
MATCHER_EXTRA = GW_EXTRA.replace("component: matcher", "component: ingest").replace("gateway", "matcher")
bad = 0
for what, path, old, new, expect in M:
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        shutil.copytree(REPO / "deploy", d / "deploy")
        for f in (".dockerignore", ".gitignore"):
            shutil.copy(REPO / f, d / f)
        f = d / path
        text = f.read_text()
        assert old in text, (what, old)
        if new is None:
            text += MATCHER_EXTRA
        elif new == "GW":
            text += GW_EXTRA
        else:
            text = text.replace(old, new, 1)
        f.write_text(text)
        r = subprocess.run([sys.executable, str(d / "deploy/check.py")], capture_output=True, text=True)
        ok = r.returncode == 1 and expect in r.stderr
        bad += not ok
        first = (r.stderr.strip().splitlines() or ["(no failure)"])[0]
        print(f"{'caught' if ok else 'MISSED'}: {what}: {first[:150]}")
print(f"{len(M) - bad}/{len(M)} breakages caught")
sys.exit(1 if bad else 0)
