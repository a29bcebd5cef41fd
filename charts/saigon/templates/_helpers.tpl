{{/* Names, labels and images shared by every template. */}}

{{- define "saigon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "saigon.fullname" -}}
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

{{- define "saigon.operatorName" -}}
{{- printf "%s-operator" (include "saigon.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "saigon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "saigon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: saigon
{{- end }}

{{- define "saigon.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "saigon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "saigon.operatorLabels" -}}
{{ include "saigon.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "saigon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "saigon.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "saigon.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The agent sidecar ships in the operator image unless another one is named. */}}
{{- define "saigon.agentImage" -}}
{{- if .Values.agent.image.repository }}
{{- printf "%s:%s" .Values.agent.image.repository (default .Chart.AppVersion .Values.agent.image.tag) }}
{{- else }}
{{- include "saigon.image" . }}
{{- end }}
{{- end }}

{{/* The namespaces the operator manages, as JSON: [] when cluster-wide, else watchNamespaces,
else the release namespace alone. */}}
{{- define "saigon.watchNamespaces" -}}
{{- if and .Values.clusterWide .Values.watchNamespaces }}
{{- fail "clusterWide and watchNamespaces exclude each other: set one" }}
{{- else if .Values.clusterWide }}
{{- list | toJson }}
{{- else if .Values.watchNamespaces }}
{{- toJson .Values.watchNamespaces }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* The Lease the operator replicas elect their one active leader with. */}}
{{- define "saigon.leaseName" -}}
{{- include "saigon.operatorName" . }}
{{- end }}

{{/* An alert's runbook: prometheusRule.runbookBaseUrl plus the alert's anchor in docs/runbooks.md. */}}
{{- define "saigon.runbookUrl" -}}
{{- $root := index . 0 }}
{{- $base := $root.Values.prometheusRule.runbookBaseUrl | default (printf "https://github.com/saigon-ai/saigon/blob/v%s/docs/runbooks.md" $root.Chart.AppVersion) }}
{{- printf "%s#%s" $base (index . 1 | lower) }}
{{- end }}

{{/* The operator's finalizer on SaigonAdapters (saigon_contract.resources.FINALIZER; a chart test
keeps the two equal). */}}
{{- define "saigon.adapterFinalizer" -}}
saigon.ai/finalizer
{{- end }}
