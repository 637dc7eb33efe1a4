{{/* The chart's name, or nameOverride. */}}
{{- define "mrbo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-prefixed name of every object the chart owns (a DNS label: Service, Lease). */}}
{{- define "mrbo.fullname" -}}
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

{{- define "mrbo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mrbo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mrbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mrbo.labels" -}}
helm.sh/chart: {{ include "mrbo.chart" . }}
{{ include "mrbo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: milvus-rbac-operator
{{- end }}

{{- define "mrbo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mrbo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mrbo.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Leader election whenever two operators could be active at once. */}}
{{- define "mrbo.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/*
The rules of one object in files/rbac/operator.yaml, a byte-identical copy of
deploy/rbac/operator.yaml (hack/sync-chart.py), so the chart grants exactly what the e2e suite
proves is enough. Call with (list $ "ClusterRole" "milvus-rbac-operator-cluster").
*/}}
{{- define "mrbo.rules" -}}
{{- $root := index . 0 }}
{{- $kind := index . 1 }}
{{- $name := index . 2 }}
{{- $found := dict }}
{{- range $document := regexSplit "(?m)^---[ \t]*$" ($root.Files.Get "files/rbac/operator.yaml") -1 }}
{{- $object := fromYaml $document }}
{{- if and $object (eq (toString $object.kind) $kind) (eq (toString $object.metadata.name) $name) }}
{{- $_ := set $found "rules" $object.rules }}
{{- end }}
{{- end }}
{{- if not $found.rules }}
{{- fail (printf "files/rbac/operator.yaml has no %s %s with rules; run hack/sync-chart.py" $kind $name) }}
{{- end }}
{{- toYaml $found.rules }}
{{- end }}

{{/*
The container's environment: the settings this chart owns, then extraEnv. An extraEnv entry
replaces the chart's entry of the same name (a duplicate name would break server-side apply).
*/}}
{{- define "mrbo.env" -}}
{{- $leaderElection := include "mrbo.leaderElection" . }}
{{- $env := list }}
{{- $env = append $env (dict "name" "MRBO_OPERATOR_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) }}
{{- with .Values.watchNamespaces }}
{{- $env = append $env (dict "name" "MRBO_NAMESPACES" "value" (uniq . | join ",")) }}
{{- end }}
{{- $env = append $env (dict "name" "MRBO_ALLOWED_HOSTS" "value" (join "," .Values.allowedHosts)) }}
{{- with .Values.protectedUsers }}
{{- $env = append $env (dict "name" "MRBO_PROTECTED_USERS" "value" (join "," .)) }}
{{- end }}
{{- $env = append $env (dict "name" "MRBO_DRIFT_INTERVAL_SECONDS" "value" (toString .Values.driftIntervalSeconds)) }}
{{- $env = append $env (dict "name" "MRBO_LOG_LEVEL" "value" .Values.logLevel) }}
{{- $env = append $env (dict "name" "MRBO_LOG_FORMAT" "value" .Values.logFormat) }}
{{- /* Probes and the metrics Service reach this port. */}}
{{- $env = append $env (dict "name" "MRBO_HEALTH_LISTEN" "value" "0.0.0.0:8080") }}
{{- /* In-flight Milvus calls get the pod's grace period less 10 s to finish on SIGTERM. */}}
{{- $grace := max 1 (sub (int .Values.terminationGracePeriodSeconds) 10) }}
{{- $env = append $env (dict "name" "MRBO_SHUTDOWN_GRACE_SECONDS" "value" (toString $grace)) }}
{{- $env = append $env (dict "name" "MRBO_LEADER_ELECTION" "value" (ternary "true" "false" (eq $leaderElection "true"))) }}
{{- if $leaderElection }}
{{- /* One Lease per release: two releases in one namespace do not block each other. */}}
{{- $env = append $env (dict "name" "MRBO_LEASE_NAME" "value" (include "mrbo.fullname" .)) }}
{{- end }}
{{- $overridden := list }}
{{- range .Values.extraEnv }}
{{- $overridden = append $overridden .name }}
{{- end }}
{{- $result := list }}
{{- range $env }}
{{- if not (has .name $overridden) }}
{{- $result = append $result . }}
{{- end }}
{{- end }}
{{- toYaml (concat $result .Values.extraEnv) }}
{{- end }}
