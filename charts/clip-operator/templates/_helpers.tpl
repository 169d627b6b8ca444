{{/* Chart name, trimmed to the 63 characters a label value allows. */}}
{{- define "clip-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-clip-operator, or the release name when it contains the chart name. */}}
{{- define "clip-operator.fullname" -}}
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

{{- define "clip-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "clip-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clip-operator
{{- end -}}

{{- define "clip-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clip-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "clip-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "clip-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "clip-operator.image" -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) -}}
{{- end -}}

{{/* Namespaces the worker NetworkPolicy goes into. */}}
{{- define "clip-operator.networkPolicyNamespaces" -}}
{{- $ns := .Values.networkPolicy.namespaces | default .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $ns) -}}
{{- end -}}

{{/* The rules the operator needs in every namespace it serves (see README: Install). */}}
{{- define "clip-operator.namespacedRules" -}}
# Watch ClipJobs; patch them only to add/remove its own finalizer (deletionPolicy: Delete).
- apiGroups: [mememaker.io]
  resources: [clipjobs]
  verbs: [get, list, watch, patch]
- apiGroups: [mememaker.io]
  resources: [clipjobs/status]
  verbs: [patch]
# Jobs carry blockOwnerDeletion on their ClipJob owner reference; clusters that enable the
# OwnerReferencesPermissionEnforcement admission plugin require this to set it.
- apiGroups: [mememaker.io]
  resources: [clipjobs/finalizers]
  verbs: [update]
# One Job per ClipJob; deleted when its ClipJob is (deletionPolicy: Delete stops uploads).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
# The worker's result is its Pod's termination message; Pods are never created directly.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.rbac.tenantSecrets }}
# Tenant S3 keys named by spec.storage.secretRef: read by name, never listed or watched.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end -}}
