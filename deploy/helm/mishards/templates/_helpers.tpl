{{/* Names, labels and the environment every mishards container gets. */}}

{{- define "mishards.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mishards.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's name: fullname-component, within the 63 characters a Service name may have. */}}
{{- define "mishards.componentName" -}}
{{- printf "%s-%s" (include "mishards.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "mishards.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mishards.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mishards.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mishards.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mishards
{{- end -}}

{{- define "mishards.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "mishards.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mishards.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the existing service account when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The label selector the gateway's discovery uses to find read nodes: the read nodes' selector labels. */}}
{{- define "mishards.readNodeSelector" -}}
{{- $labels := include "mishards.selectorLabels" (dict "root" . "component" "read-node") | fromYaml -}}
{{- $pairs := list -}}
{{- range $k := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $labels $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* Checks that the values describe a cluster that can work; fails the render with the reason otherwise. */}}
{{- define "mishards.validate" -}}
{{- if and .Values.mysql.enabled .Values.externalMysql.enabled -}}
{{- fail "mysql.enabled and externalMysql.enabled are both true: choose one metadata database (set mysql.enabled=false to use externalMysql)" -}}
{{- end -}}
{{- if not (or .Values.mysql.enabled .Values.externalMysql.enabled) -}}
{{- fail "no metadata database: set mysql.enabled=true (the chart runs MySQL) or externalMysql.enabled=true with externalMysql.ip" -}}
{{- end -}}
{{- if and .Values.externalMysql.enabled (not .Values.externalMysql.ip) -}}
{{- fail "externalMysql.enabled=true needs externalMysql.ip (a host name or address)" -}}
{{- end -}}
{{- if and .Values.cluster.enabled (not .Values.persistence.enabled) -}}
{{- fail "persistence.enabled=false gives every pod its own emptyDir, so read nodes would not see the write node's segments: it works with cluster.enabled=false (one node) only. Set persistence.enabled=true with a ReadWriteMany storage class (or persistence.existingClaim)" -}}
{{- end -}}
{{- if and .Values.cluster.enabled (lt (int .Values.readNodes.replicas) 1) -}}
{{- fail "readNodes.replicas must be at least 1 (searches run on the read nodes)" -}}
{{- end -}}
{{- if lt (int .Values.gateway.replicas) 1 -}}
{{- fail "gateway.replicas must be at least 1" -}}
{{- end -}}
{{- end -}}

{{/* A setting's value as the environment carries it: YAML numbers without exponents (1000000, not 1e+06). */}}
{{- define "mishards.settingValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 .) (floor .)) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
The metadata database for every mishards container: the password comes from a Secret into
METADATA_DB_PASSWORD, which Kubernetes substitutes into SQLALCHEMY_DATABASE_URI ($(NAME) refers to a variable
defined before it), so the password is never in a pod spec.
*/}}
{{- define "mishards.metadataEnv" -}}
{{- $secret := "" -}}
{{- $key := "mysql-password" -}}
{{- $host := "" -}}
{{- $port := 3306 -}}
{{- $user := "root" -}}
{{- $database := "" -}}
{{- if .Values.mysql.enabled -}}
{{- $secret = include "mishards.componentName" (dict "root" . "component" "mysql") -}}
{{- $host = $secret -}}
{{- $database = .Values.mysql.database -}}
{{- else -}}
{{- if .Values.externalMysql.existingSecret -}}
{{- $secret = .Values.externalMysql.existingSecret -}}
{{- $key = .Values.externalMysql.existingSecretKey -}}
{{- else -}}
{{- $secret = include "mishards.componentName" (dict "root" . "component" "external-mysql") -}}
{{- end -}}
{{- $host = .Values.externalMysql.ip -}}
{{- $port = .Values.externalMysql.port -}}
{{- $user = .Values.externalMysql.user -}}
{{- $database = .Values.externalMysql.database -}}
{{- end -}}
- name: METADATA_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
- name: SQLALCHEMY_DATABASE_URI
  value: {{ printf "mysql://%s:$(METADATA_DB_PASSWORD)@%s:%s/%s?charset=utf8mb4" $user $host (include "mishards.settingValue" $port) $database | quote }}
{{- end -}}

{{/* Tracing for every mishards container (TRACER_CLASS_NAME, MISHARDS_OTLP_ENDPOINT, the sampler). */}}
{{- define "mishards.tracingEnv" -}}
{{- if .Values.tracing.enabled -}}
- name: TRACER_CLASS_NAME
  value: jaeger
- name: MISHARDS_OTLP_ENDPOINT
  value: {{ default (printf "http://%s:4317" (include "mishards.componentName" (dict "root" . "component" "jaeger"))) .Values.tracing.otlpEndpoint | quote }}
- name: TRACING_SAMPLER_TYPE
  value: {{ .Values.tracing.sampler.type | quote }}
- name: TRACING_SAMPLER_PARAM
  value: {{ include "mishards.settingValue" .Values.tracing.sampler.param | quote }}
- name: TRACING_LOG_PAYLOAD
  value: {{ .Values.tracing.logPayload | toString | quote }}
{{- end -}}
{{- end -}}

{{/*
A container's env: the settings the chart wires (`wired`, a YAML list of env entries), then the common
`settings` merged with the role's own (`settings`); a setting both wire and user set fails the render, so
no value is silently ignored.
*/}}
{{- define "mishards.env" -}}
{{- $wired := .wired | fromYamlArray -}}
{{- $seen := dict -}}
{{- range $wired -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- $settings := merge (deepCopy (default dict .settings)) (deepCopy (default dict .root.Values.settings)) -}}
env:
{{- range $wired }}
  - {{ toYaml . | nindent 4 | trim }}
{{- end }}
{{- range $name := keys $settings | sortAlpha }}
{{- if hasKey $seen $name }}
{{- fail (printf "%s is set by the chart itself (from its own values); remove it from the settings maps" $name) }}
{{- end }}
  - name: {{ $name }}
    value: {{ include "mishards.settingValue" (get $settings $name) | quote }}
{{- end }}
{{- end -}}

{{/* The probes of a mishards container, on its HTTP port named `port`. */}}
{{- define "mishards.probes" -}}
startupProbe:
  httpGet: { path: /healthz, port: {{ .port }} }
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: { path: /healthz, port: {{ .port }} }
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: { path: /readyz, port: {{ .port }} }
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* The shared storage volume: the PVC, or an emptyDir without persistence. */}}
{{- define "mishards.storageVolume" -}}
- name: storage
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (include "mishards.componentName" (dict "root" . "component" "storage")) .Values.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* The node's environment the chart wires, for role rw or ro. */}}
{{- define "mishards.nodeWiredEnv" -}}
- name: MISHARDS_ROLE
  value: {{ .role }}
- name: SERVER_PORT
  value: {{ include "mishards.settingValue" .root.Values.ports.grpc | quote }}
- name: MISHARDS_STORAGE
  value: /var/lib/mishards
- name: ADMIN_HOST
  value: 0.0.0.0
- name: ADMIN_PORT
  value: {{ include "mishards.settingValue" .root.Values.ports.probe | quote }}
{{ include "mishards.metadataEnv" .root }}
{{ include "mishards.tracingEnv" .root }}
{{- end -}}

{{/* The gateway's environment the chart wires. */}}
{{- define "mishards.gatewayWiredEnv" -}}
- name: SERVER_PORT
  value: {{ include "mishards.settingValue" .Values.ports.grpc | quote }}
- name: ADMIN_HOST
  value: 0.0.0.0
- name: ADMIN_PORT
  value: {{ include "mishards.settingValue" .Values.ports.admin | quote }}
- name: WOSERVER
  value: {{ printf "tcp://%s:%s" (include "mishards.componentName" (dict "root" . "component" "write-node")) (include "mishards.settingValue" .Values.ports.grpc) | quote }}
- name: DISCOVERY_CLASS_NAME
  value: kubernetes
- name: DISCOVERY_KUBERNETES_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: DISCOVERY_KUBERNETES_IN_CLUSTER
  value: "true"
- name: DISCOVERY_KUBERNETES_POLL_INTERVAL
  value: {{ include "mishards.settingValue" .Values.gateway.discovery.pollInterval | quote }}
- name: DISCOVERY_KUBERNETES_LABEL_SELECTOR
  value: {{ include "mishards.readNodeSelector" . | quote }}
{{- with .Values.gateway.discovery.podPattern }}
- name: DISCOVERY_KUBERNETES_POD_PATT
  value: {{ . | quote }}
{{- end }}
- name: DISCOVERY_STATIC_PORT
  value: {{ include "mishards.settingValue" .Values.ports.grpc | quote }}
{{ include "mishards.metadataEnv" . }}
{{ include "mishards.tracingEnv" . }}
{{- end -}}
