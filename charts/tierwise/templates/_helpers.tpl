{{/* Names, labels and shared fragments. */}}

{{- define "tierwise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tierwise.fullname" -}}
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

{{- define "tierwise.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tierwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tierwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tierwise.labels" -}}
helm.sh/chart: {{ include "tierwise.chart" . }}
{{ include "tierwise.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tierwise
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* metadata.annotations of every object: commonAnnotations plus the given dict. */}}
{{- define "tierwise.annotations" -}}
{{- $all := merge (dict) (.extra | default dict) .root.Values.commonAnnotations -}}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "tierwise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tierwise.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tierwise.evalImage" -}}
{{- default (include "tierwise.image" .) .Values.evals.image -}}
{{- end -}}

{{- define "tierwise.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "tierwise.sidecarImage" -}}
{{- $repo := default .Values.image.repository .Values.sidecar.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.sidecar.image.tag -}}
{{- if and (not .Values.sidecar.image.repository) (not .Values.sidecar.image.tag) .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "tierwise.peeringName" -}}
{{- default (include "tierwise.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{- define "tierwise.webhookServiceName" -}}
{{- printf "%s-webhook" (include "tierwise.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tierwise.webhookConfigurationName" -}}
{{- include "tierwise.fullname" . -}}
{{- end -}}

{{- define "tierwise.webhookSecretName" -}}
{{- if eq .Values.webhook.tls.mode "secret" -}}
{{- required "webhook.tls.secret.name is required when webhook.tls.mode is secret" .Values.webhook.tls.secret.name -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "tierwise.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The operator's ClusterRole rules: the first document of config/rbac/operator-clusterrole.yaml. */}}
{{- define "tierwise.operatorRules" -}}
{{- $docs := regexSplit "(?m)^---\\s*$" (.Files.Get "files/operator-clusterrole.yaml") -1 -}}
{{- $found := false -}}
{{- range $docs -}}
{{- $doc := fromYaml . -}}
{{- if and (not $found) (eq (dig "metadata" "name" "" $doc) "tierwise-operator") -}}
{{- $found = true -}}
{{- toYaml $doc.rules -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail "files/operator-clusterrole.yaml has no ClusterRole named tierwise-operator" -}}
{{- end -}}
{{- end -}}

{{- define "tierwise.monitoringAvailable" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}
