{{/*
Object names are fixed, not derived from the release name: the webhook finds its Secret, Service and
MutatingWebhookConfiguration by these names (wisp_shared::contract::deploy), and the CSIDriver and CRDs are
cluster singletons anyway, so one release per cluster is the only meaningful install.
*/}}
{{- define "wisp.webhookName" -}}wisp-webhook{{- end -}}
{{- define "wisp.webhookCertSecret" -}}wisp-webhook-server-cert{{- end -}}
{{- define "wisp.agentName" -}}wisp-agent{{- end -}}
{{- define "wisp.driverName" -}}secrets-store.csi.k8s.io{{- end -}}

{{- define "wisp.chart" -}}
{{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wisp.labels" -}}
helm.sh/chart: {{ include "wisp.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "wisp.webhookSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "wisp.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "wisp.webhookLabels" -}}
{{ include "wisp.labels" . }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "wisp.agentLabels" -}}
{{ include "wisp.labels" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "wisp.webhookImage" -}}
{{ .Values.webhook.image.repository }}:{{ .Values.webhook.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "wisp.agentImage" -}}
{{ .Values.agent.image.repository }}:{{ .Values.agent.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
The agent and kubelet must agree on socket paths, so directories are mounted at their host paths. The directory
is not upstream's csi-secrets-store, so that in drop-in mode the upstream driver's socket is left alone.
*/}}
{{- define "wisp.pluginDir" -}}
{{ .Values.agent.kubeletRootDir }}/plugins/wisp-agent
{{- end -}}

{{- define "wisp.syncName" -}}wisp-sync{{- end -}}

{{- define "wisp.syncSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: sync
{{- end -}}

{{- define "wisp.syncLabels" -}}
{{ include "wisp.labels" . }}
app.kubernetes.io/component: sync
{{- end -}}
