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

{{/* Name of the worker NetworkPolicy the operator creates in each namespace it runs Jobs in. */}}
{{- define "clip-operator.workerNetworkPolicyName" -}}
clip-worker-egress
{{- end -}}

{{/*
The spec of the worker NetworkPolicy, as JSON (CLIP_OPERATOR_WORKER_NETWORK_POLICY; the
operator creates it in every namespace where it runs a Job). Egress of the worker Pods: DNS,
the S3 endpoint and the internet only. Cluster-internal, private, metadata and the IPv6
prefixes that translate back to IPv4 (NAT64, 6to4, Teredo) are excepted, so a hostile video
URL cannot reach in-cluster services or cloud credentials even past the worker's own
address checks. No ingress: the worker serves nothing.
*/}}
{{- define "clip-operator.workerNetworkPolicySpec" -}}
{{- $np := .Values.networkPolicy -}}
{{- $tcp := list -}}
{{- $egress := list -}}
{{- $dns := dict "namespaceSelector" $np.dns.namespaceSelector "podSelector" $np.dns.podSelector -}}
{{- $dnsPorts := list (dict "port" 53 "protocol" "UDP") (dict "port" 53 "protocol" "TCP") -}}
{{- $egress = append $egress (dict "to" (list $dns) "ports" $dnsPorts) -}}
{{- with $np.s3.to -}}
{{- $rule := dict "to" . -}}
{{- $ports := list -}}
{{- range $np.s3.ports }}{{ $ports = append $ports (dict "port" (int .) "protocol" "TCP") }}{{ end -}}
{{- if $ports }}{{ $_ := set $rule "ports" $ports }}{{ end -}}
{{- $egress = append $egress $rule -}}
{{- end -}}
{{- $v4 := dict "ipBlock" (dict "cidr" "0.0.0.0/0" "except" $np.internet.exceptCIDRs) -}}
{{- $v6 := dict "ipBlock" (dict "cidr" "::/0" "except" $np.internet.exceptCIDRsV6) -}}
{{- $internet := dict "to" (list $v4 $v6) -}}
{{- $ports := list -}}
{{- range $np.internet.ports }}{{ $ports = append $ports (dict "port" (int .) "protocol" "TCP") }}{{ end -}}
{{- if $ports }}{{ $_ := set $internet "ports" $ports }}{{ end -}}
{{- $egress = append $egress $internet -}}
{{- range $np.extraEgress }}{{ $egress = append $egress . }}{{ end -}}
{{- $selector := dict "matchLabels" (dict "app.kubernetes.io/managed-by" "clip-operator" "app.kubernetes.io/name" "clip-worker") -}}
{{- /* No "ingress" key: Ingress in policyTypes with no rules denies all ingress, and the API
server drops an empty list, so the spec would never read back equal to ours. */ -}}
{{- toJson (dict "podSelector" $selector "policyTypes" (list "Ingress" "Egress") "egress" $egress) -}}
{{- end -}}

{{/*
The rules the operator needs in every namespace it serves (README: Install on a cluster).
Called with (dict "root" $ "namespaced" true|false): Secret reads only ever in namespaced
Roles, never in the ClusterRole.
*/}}
{{- define "clip-operator.rules" -}}
{{- $v := .root.Values -}}
# Watch ClipJobs; patch them only to add/remove its own finalizer (deletionPolicy: Delete).
- apiGroups: [mememaker.io]
  resources: [clipjobs]
  # delete: ttlSecondsAfterFinished (a finished ClipJob deletes itself).
  verbs: [get, list, watch, patch, delete]
- apiGroups: [mememaker.io]
  resources: [clipjobs/status]
  verbs: [patch]
{{- if $v.operator.kueueQueueName }}
# Kueue: read why a suspended Job's Workload is not admitted (shown in the ClipJob's status).
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list]
{{- end }}
# Jobs carry blockOwnerDeletion on their ClipJob owner reference; clusters that enable the
# OwnerReferencesPermissionEnforcement admission plugin require this to set it.
- apiGroups: [mememaker.io]
  resources: [clipjobs/finalizers]
  verbs: [update]
# One Job per ClipJob; deleted when its ClipJob is (deletionPolicy: Delete stops uploads).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
# The worker's result is its Pod's termination message (watched, label-selected: a Pod
# that exited 0 finishes its ClipJob before the Job controller marks the Job complete),
# and a Pod's waiting reason (image pull errors) says why a Job is stuck; Pods are never
# created directly.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Events on ClipJobs (core/v1 and events.k8s.io/v1, which aggregates repeats by patching);
# list: whether a recorded Job that is gone ever existed (its Job controller Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if $v.networkPolicy.enabled }}
# The worker NetworkPolicy, created before each Job; read and patched by its name only.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  resourceNames: [{{ include "clip-operator.workerNetworkPolicyName" .root }}]
  verbs: [get, patch]
{{- end }}
{{- if eq $v.operator.urlPolicy "Secret" }}
# urlPolicy Secret: the presigned URL goes into a Secret owned by the ClipJob. `update`
# cannot be limited to names known in advance, so it reaches any Secret by name here.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, update]
{{- end }}
{{- if and .namespaced $v.rbac.tenantSecrets }}
# Tenant S3 keys named by spec.storage.secretRef: read by name, never listed or watched.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end -}}
