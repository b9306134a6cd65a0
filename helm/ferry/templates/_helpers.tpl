{{/*
Names and labels of this chart's own objects (the workload, Services, monitoring). The Ferry
sidecar templates (_ferry.tpl) need none of these: they take Ferry's values alone.
*/}}

{{- define "ferry.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* An image reference: repository@digest when a digest is given, else repository:tag. */}}
{{- define "ferry.imageRef" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository (required "an image tag (or digest) is required" .tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* The workload kind: a StatefulSet when the log has one claim per pod. */}}
{{- define "ferry.workloadKind" -}}
{{- if and .Values.wal.persistence.enabled (not .Values.wal.persistence.existingClaim) -}}
StatefulSet
{{- else -}}
Deployment
{{- end -}}
{{- end -}}
