{{/* Labels of one role's objects. */}}
{{- define "biomatch.labels" -}}
app.kubernetes.io/name: biomatch
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* The hardened container security context every role runs with. */}}
{{- define "biomatch.containerSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Per-role secrets: every role gets its own service key and TLS certificate; only ingest and
matchers ($seals) the master key; only ingest, matchers and audit ($database) the database URL;
only audit the audit signing key; only search the Redis URL. Called with (dict "root" $ "role" R).
*/}}

{{/* The role's arguments after `--role R`: its service key, mutual TLS, and its own key files. */}}
{{- define "biomatch.flags" -}}
{{- $seals := has .role (list "ingest" "matcher") -}}
--service-key /etc/biomatch/service-key/service-{{ .role }}.key.pem --tls-ca /etc/biomatch/tls/ca.crt --tls-cert /etc/biomatch/tls/tls.crt --tls-key /etc/biomatch/tls/tls.key
{{- if $seals }} --master-key-file /etc/biomatch/master-key/master.key{{ end }}
{{- if eq .role "audit" }} --audit-signing-key /etc/biomatch/audit-signing-key/audit-signing.key{{ end }}
{{- end }}

{{/* Environment: the store URLs from Secrets (only for the roles that open them), telemetry. */}}
{{- define "biomatch.env" -}}
{{- $database := has .role (list "ingest" "matcher" "audit") -}}
{{- $redis := eq .role "search" -}}
- name: RUST_LOG
  value: info
{{- if $database }}
- name: BIOMATCH_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .root.Values.postgresql.existingSecret }}, key: url}
{{- end }}
{{- if and $redis .root.Values.redis.existingSecret }}
- name: BIOMATCH_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .root.Values.redis.existingSecret }}, key: url}
{{- end }}
{{- if .root.Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .root.Values.telemetry.otlpEndpoint | quote }}
{{- end }}
{{- end }}

{{/* Ports: gRPC (mutual TLS), the gateway's public REST port, the operator port. */}}
{{- define "biomatch.ports" -}}
- {name: grpc, containerPort: 50051}
{{- if eq .role "gateway" }}
- {name: http, containerPort: 8080}
{{- end }}
- {name: ops, containerPort: 9090}
{{- end }}

{{/* Probes on the operator port: gRPC probes cannot present a client certificate. */}}
{{- define "biomatch.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: ops}
  periodSeconds: 10
readinessProbe:
  httpGet: {path: /readyz, port: ops}
  periodSeconds: 5
startupProbe:
  httpGet: {path: /readyz, port: ops}
  periodSeconds: 5
  failureThreshold: 120
{{- end }}

{{/* Prometheus scrapes /metrics on the operator port, never the gateway's public port. */}}
{{- define "biomatch.podAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: "9090"
prometheus.io/path: /metrics
{{- end }}

{{- define "biomatch.volumes" -}}
{{- $seals := has .role (list "ingest" "matcher") -}}
{{- $s := .root.Values.secrets -}}
- name: config
  configMap: {name: {{ .root.Release.Name }}-biomatch-config}
- name: public-keys
  configMap: {name: {{ .root.Values.publicKeys.configMap }}}
- name: service-key
  secret: {secretName: {{ $s.prefix }}-{{ .role }}-service-key, defaultMode: 0400}
- name: tls
  secret: {secretName: {{ $s.prefix }}-{{ .role }}-tls, defaultMode: 0400}
{{- if $seals }}
- name: master-key
  secret: {secretName: {{ $s.masterKey }}, defaultMode: 0400}
- name: datakeys
  persistentVolumeClaim: {claimName: {{ .root.Release.Name }}-biomatch-datakeys}
{{- end }}
{{- if eq .role "audit" }}
- name: audit-signing-key
  secret: {secretName: {{ $s.auditSigningKey }}, defaultMode: 0400}
{{- end }}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- end }}

{{- define "biomatch.mounts" -}}
{{- $seals := has .role (list "ingest" "matcher") -}}
- {name: config, mountPath: /etc/biomatch/biomatch.toml, subPath: biomatch.toml, readOnly: true}
- {name: public-keys, mountPath: /etc/biomatch/public-keys, readOnly: true}
- {name: service-key, mountPath: /etc/biomatch/service-key, readOnly: true}
- {name: tls, mountPath: /etc/biomatch/tls, readOnly: true}
{{- if $seals }}
- {name: master-key, mountPath: /etc/biomatch/master-key, readOnly: true}
- {name: datakeys, mountPath: /var/lib/biomatch-datakeys}
{{- end }}
{{- if eq .role "audit" }}
- {name: audit-signing-key, mountPath: /etc/biomatch/audit-signing-key, readOnly: true}
{{- end }}
- {name: data, mountPath: /var/lib/biomatch}
- {name: tmp, mountPath: /tmp}
{{- end }}
