{{/* Names, labels and the pieces the workloads share. */}}

{{- define "weft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name; 40 characters leave room for "-orchestrator-headless". */}}
{{- define "weft.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "weft.orchestrator.fullname" -}}{{ include "weft.fullname" . }}-orchestrator{{- end -}}
{{- define "weft.orchestrator.headless" -}}{{ include "weft.fullname" . }}-orchestrator-headless{{- end -}}
{{- define "weft.worker.fullname" -}}{{ include "weft.fullname" . }}-worker{{- end -}}
{{- define "weft.config.name" -}}{{ include "weft.fullname" . }}-config{{- end -}}

{{/* Fixed ports: weft.toml binds the APIs to them (orchestrator.http_addr, worker.http_addr). */}}
{{- define "weft.orchestrator.port" -}}8080{{- end -}}
{{- define "weft.worker.port" -}}9464{{- end -}}

{{/* The client Service's URL, for the CLI (WEFT_API). */}}
{{- define "weft.apiUrl" -}}
http://{{ include "weft.orchestrator.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.orchestrator.service.port }}
{{- end -}}

{{- define "weft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "weft.labels" -}}
helm.sh/chart: {{ include "weft.chart" . }}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weft
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: (dict "ctx" $ "component" "orchestrator"), and
"pool" "gpu" for the pods of a worker pool (weft.io/pool). */}}
{{- define "weft.componentLabels" -}}
{{ include "weft.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- with .pool }}
weft.io/pool: {{ . }}
{{- end }}
{{- end -}}

{{- define "weft.componentSelector" -}}
{{ include "weft.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- with .pool }}
weft.io/pool: {{ . }}
{{- end }}
{{- end -}}

{{- define "weft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "weft.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: (dict "ctx" $ "image" .Values.image.worker). */}}
{{- define "weft.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .ctx.Values.image.tag) -}}
{{- end -}}

{{/* The worker's grace period: preStop + the worker's own shutdown grace + margin. */}}
{{- define "weft.worker.terminationGrace" -}}
{{- $w := .Values.worker -}}
{{- $graceSeconds := div (add (int64 $w.shutdownGraceMs) 999) 1000 -}}
{{- add (int64 $w.preStopSleepSeconds) $graceSeconds (int64 $w.terminationMarginSeconds) -}}
{{- end -}}

{{/* librdkafka security.protocol from the sasl and tls switches. */}}
{{- define "weft.kafka.securityProtocol" -}}
{{- $k := .Values.kafka -}}
{{- if and $k.sasl.enabled $k.tls.enabled -}}SASL_SSL
{{- else if $k.sasl.enabled -}}SASL_PLAINTEXT
{{- else if $k.tls.enabled -}}SSL
{{- end -}}
{{- end -}}

{{/* WEFT_KAFKA_PROPERTY_<NAME> for a librdkafka property name (the binaries read '_' as '.'). */}}
{{- define "weft.kafka.propertyEnv" -}}
WEFT_KAFKA_PROPERTY_{{ . | replace "." "_" | upper }}
{{- end -}}

{{/* Environment of both binaries: the SASL user (plain or from a Secret), credentials from Secrets only. */}}
{{- define "weft.kafka.secretEnv" -}}
{{- $k := .Values.kafka -}}
{{- if $k.sasl.enabled }}
- name: {{ include "weft.kafka.propertyEnv" "sasl.username" }}
{{- if $k.sasl.usernameKey }}
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.usernameKey }}
{{- else }}
  value: {{ $k.sasl.username | quote }}
{{- end }}
- name: {{ include "weft.kafka.propertyEnv" "sasl.password" }}
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.passwordKey }}
{{- end }}
{{- range $k.secretProperties }}
- name: {{ include "weft.kafka.propertyEnv" .property }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end -}}

{{- define "weft.kafka.tlsMountPath" -}}/var/run/secrets/weft/kafka{{- end -}}

{{- define "weft.kafka.tlsVolumes" -}}
{{- $k := .Values.kafka -}}
{{- if and $k.tls.enabled $k.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $k.tls.caSecret }}
    items:
      - {key: {{ $k.tls.caKey | quote }}, path: ca.crt}
{{- end }}
{{- if and $k.tls.enabled $k.tls.clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ $k.tls.clientSecret }}
    items:
      - {key: {{ $k.tls.certKey | quote }}, path: client.crt}
      - {key: {{ $k.tls.keyKey | quote }}, path: client.key}
{{- end }}
{{- end -}}

{{- define "weft.kafka.tlsMounts" -}}
{{- $k := .Values.kafka -}}
{{- if and $k.tls.enabled $k.tls.caSecret }}
- name: kafka-ca
  mountPath: {{ include "weft.kafka.tlsMountPath" . }}/ca
  readOnly: true
{{- end }}
{{- if and $k.tls.enabled $k.tls.clientSecret }}
- name: kafka-client
  mountPath: {{ include "weft.kafka.tlsMountPath" . }}/client
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod anti-affinity and zone spread: (dict "ctx" $ "component" "worker" "v" .Values.worker). */}}
{{- define "weft.scheduling" -}}
{{- $v := .v -}}
{{- if $v.affinity }}
affinity:
  {{- toYaml $v.affinity | nindent 2 }}
{{- else }}
affinity:
  podAntiAffinity:
    {{- if eq $v.podAntiAffinity "hard" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "weft.componentSelector" . | nindent 12 }}
    {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "weft.componentSelector" . | nindent 14 }}
    {{- end }}
{{- end }}
{{- if $v.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ $v.topologySpread.maxSkew }}
    topologyKey: {{ $v.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "weft.componentSelector" . | nindent 8 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{- define "weft.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
