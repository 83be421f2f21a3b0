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

{{/* Environment shared by every role: store URLs from Secrets, telemetry. */}}
{{- define "biomatch.env" -}}
- name: RUST_LOG
  value: info
- name: BIOMATCH_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.postgresql.existingSecret }}, key: url}
{{- if .Values.redis.existingSecret }}
- name: BIOMATCH_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.existingSecret }}, key: url}
{{- end }}
{{- if .Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.telemetry.otlpEndpoint | quote }}
{{- end }}
{{- end }}

{{/* Volumes shared by every role. */}}
{{- define "biomatch.volumes" -}}
- name: config
  configMap: {name: {{ .Release.Name }}-biomatch-config}
- name: keys
  secret: {secretName: {{ .Values.keys.existingSecret }}, defaultMode: 0400}
- name: tmp
  emptyDir: {}
- name: datakeys
  persistentVolumeClaim: {claimName: {{ .Release.Name }}-biomatch-datakeys}
{{- end }}

{{- define "biomatch.mounts" -}}
- {name: config, mountPath: /etc/biomatch/biomatch.toml, subPath: biomatch.toml, readOnly: true}
- {name: keys, mountPath: /etc/biomatch/keys, readOnly: true}
- {name: data, mountPath: /var/lib/biomatch}
- {name: tmp, mountPath: /tmp}
- {name: datakeys, mountPath: /var/lib/biomatch-datakeys}
{{- end }}
