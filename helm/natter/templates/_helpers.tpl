{{- define "natter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "natter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "natter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "natter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "natter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "natter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "natter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "natter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
"true" when this release runs standalone: one embedded node (SQLite on a PersistentVolumeClaim,
in-process bus). `mode: auto` is standalone until a database URL or an existing Secret is given.
*/}}
{{- define "natter.standalone" -}}
{{- if eq .Values.mode "standalone" }}true
{{- else if and (eq .Values.mode "auto") (not .Values.database.url) (not .Values.existingSecret) }}true
{{- end }}
{{- end }}

{{/* Whether the pod mounts a Secret: the cluster's URLs, or a signing key. */}}
{{- define "natter.hasSecret" -}}
{{- if or (not (include "natter.standalone" .)) .Values.signingKey .Values.existingSecretSigningKey }}true{{ end }}
{{- end }}

{{- define "natter.secretName" -}}
{{- default (include "natter.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "natter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Environment shared by the server and the migration init container. */}}
{{- define "natter.env" -}}
- name: NATTER_ENV
  value: production
- name: NATTER_HTTP__BIND
  value: "0.0.0.0:{{ .Values.service.port }}"
- name: NATTER_HTTP__ADMIN_BIND
  value: "0.0.0.0:{{ .Values.service.adminPort }}"
- name: NATTER_NATS__PREFIX
  value: {{ .Values.nats.prefix | quote }}
- name: NATTER_NODE__ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if include "natter.standalone" . }}
# Standalone: the embedded store on the data volume, the in-process bus.
- name: NATTER_DATABASE__URL
  value: sqlite:///var/lib/natter/natter.db
{{- else }}
# Secrets are read from files, never passed as environment values.
- name: DATABASE_URL_FILE
  value: /etc/natter/secrets/database-url
- name: NATS_URL_FILE
  value: /etc/natter/secrets/nats-url
{{- end }}
{{- if or .Values.signingKey .Values.existingSecretSigningKey }}
- name: NATTER_AUTH__SIGNING_KEY_FILE
  value: /etc/natter/secrets/signing-key
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
A map as TOML: its scalars and lists first (each written with toJson, which TOML reads: quoted
strings, integers without a fraction, booleans, arrays of those), then each nested map as a table
of its own. Helm's toToml would write every number as a float (values reach templates as
float64), which Natter's integer settings refuse. Arrays of maps (TOML arrays of tables) are not
written: no Natter setting is one.
*/}}
{{- define "natter.toml" -}}
{{- $prefix := .prefix -}}
{{- $tables := dict -}}
{{- range $key, $value := .map }}
{{- if kindIs "map" $value }}
{{- $_ := set $tables $key $value }}
{{- else }}
{{ $key | toJson }} = {{ $value | toJson }}
{{- end }}
{{- end }}
{{- range $key, $value := $tables }}
[{{ $prefix }}{{ $key | toJson }}]
{{- include "natter.toml" (dict "prefix" (printf "%s%s." $prefix ($key | toJson)) "map" $value) }}
{{- end }}
{{- end -}}
