{{/* The base name of every object of a release. */}}
{{- define "ottava.fullname" -}}
{{- if contains "ottava" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-ottava" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ottava.labels" -}}
app.kubernetes.io/name: ottava
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ottava
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ottava.selectorLabels" -}}
app.kubernetes.io/name: ottava
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "ottava.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ottava.webhookService" -}}{{ include "ottava.fullname" . }}-webhook{{- end -}}
{{- define "ottava.certSecret" -}}{{ include "ottava.fullname" . }}-webhook-tls{{- end -}}
{{- define "ottava.identitySecret" -}}{{ include "ottava.fullname" . }}-identity-ca{{- end -}}
{{- define "ottava.mutatingWebhook" -}}{{ include "ottava.fullname" . }}-sidecar-injector{{- end -}}
{{- define "ottava.validatingWebhook" -}}{{ include "ottava.fullname" . }}-validator{{- end -}}

{{/* Where the apiserver reaches a webhook endpoint: the Service, or webhook.url. */}}
{{- define "ottava.clientConfig" -}}
{{- if .root.Values.webhook.url -}}
url: {{ printf "%s/%s" .root.Values.webhook.url .path | quote }}
{{- else -}}
service:
  name: {{ include "ottava.webhookService" .root }}
  namespace: {{ .root.Release.Namespace }}
  path: {{ printf "/%s" .path | quote }}
  port: 443
{{- end }}
{{- end -}}

{{/* The namespaces the webhooks never see: kube-system and the operator's own. */}}
{{- define "ottava.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: [kube-system, {{ .Release.Namespace }}]
{{- end -}}
