{{/* The name of the ServiceAccount, the Deployment and every cluster-scoped object's prefix. */}}
{{- define "kube-baseline.fullname" -}}
{{- default "kube-baseline" .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* The identity the API server sees for the operator (the fence and the protection policy name it). */}}
{{- define "kube-baseline.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "kube-baseline.fullname" . }}
{{- end -}}

{{/* The Deployment's selector is immutable: the same as config/default's, so an installation
     can move between kustomize and Helm. One operator per namespace. */}}
{{- define "kube-baseline.selectorLabels" -}}
app.kubernetes.io/name: kube-baseline
app.kubernetes.io/component: manager
{{- end -}}

{{- define "kube-baseline.labels" -}}
app.kubernetes.io/name: kube-baseline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kube-baseline.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* A CEL list literal of strings: ['a', 'b'] (the form config/ writes). */}}
{{- define "kube-baseline.celList" -}}
{{- $quoted := list -}}
{{- range . }}{{ $quoted = append $quoted (printf "'%s'" .) }}{{ end -}}
[{{ join ", " $quoted }}]
{{- end -}}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "kube-baseline.subject" -}}
- kind: ServiceAccount
  name: {{ include "kube-baseline.fullname" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
