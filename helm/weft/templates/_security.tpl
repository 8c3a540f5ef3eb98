{{/*
Security settings (ADR 0014, ADR 0015): the secrets keys Secret mounted as a
directory (one file per key id) in orchestrators and workers, the API auth
policy (a Secret) and JWKS (a ConfigMap: public keys) in orchestrators, and an
extra CA for the worker's `http` built-in (a ConfigMap).
*/}}
{{- define "weft.security.mountPath" -}}/var/run/secrets/weft{{- end -}}

{{- define "weft.security.keysFile" -}}
{{- if .Values.secrets.keysSecret }}{{ include "weft.security.mountPath" . }}/keys{{ end -}}
{{- end -}}

{{- define "weft.security.policyFile" -}}
{{- if .Values.auth.policySecret }}{{ include "weft.security.mountPath" . }}/auth/policy.toml{{ end -}}
{{- end -}}

{{- define "weft.security.jwksFile" -}}
{{- if .Values.auth.jwksConfigMap }}{{ include "weft.security.mountPath" . }}/jwks/jwks.json{{ end -}}
{{- end -}}

{{- define "weft.security.httpCaFile" -}}
{{- if .Values.worker.httpCaConfigMap }}{{ include "weft.security.mountPath" . }}/http-ca/ca.crt{{ end -}}
{{- end -}}

{{/* Volumes of an orchestrator pod. */}}
{{- define "weft.security.orchestratorVolumes" -}}
{{- if .Values.secrets.keysSecret }}
- name: secrets-keys
  secret:
    secretName: {{ .Values.secrets.keysSecret }}
    defaultMode: 0400
{{- end }}
{{- if .Values.auth.policySecret }}
- name: auth-policy
  secret:
    secretName: {{ .Values.auth.policySecret }}
    defaultMode: 0400
    items:
      - {key: {{ .Values.auth.policyKey | quote }}, path: policy.toml}
{{- end }}
{{- if .Values.auth.jwksConfigMap }}
- name: auth-jwks
  configMap:
    name: {{ .Values.auth.jwksConfigMap }}
    items:
      - {key: {{ .Values.auth.jwksKey | quote }}, path: jwks.json}
{{- end }}
{{- end -}}

{{- define "weft.security.orchestratorMounts" -}}
{{- if .Values.secrets.keysSecret }}
- name: secrets-keys
  mountPath: {{ include "weft.security.mountPath" . }}/keys
  readOnly: true
{{- end }}
{{- if .Values.auth.policySecret }}
- name: auth-policy
  mountPath: {{ include "weft.security.mountPath" . }}/auth
  readOnly: true
{{- end }}
{{- if .Values.auth.jwksConfigMap }}
- name: auth-jwks
  mountPath: {{ include "weft.security.mountPath" . }}/jwks
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes of a worker pod. */}}
{{- define "weft.security.workerVolumes" -}}
{{- if .Values.secrets.keysSecret }}
- name: secrets-keys
  secret:
    secretName: {{ .Values.secrets.keysSecret }}
    defaultMode: 0400
{{- end }}
{{- if .Values.worker.httpCaConfigMap }}
- name: http-ca
  configMap:
    name: {{ .Values.worker.httpCaConfigMap }}
    items:
      - {key: {{ .Values.worker.httpCaKey | quote }}, path: ca.crt}
{{- end }}
{{- end -}}

{{- define "weft.security.workerMounts" -}}
{{- if .Values.secrets.keysSecret }}
- name: secrets-keys
  mountPath: {{ include "weft.security.mountPath" . }}/keys
  readOnly: true
{{- end }}
{{- if .Values.worker.httpCaConfigMap }}
- name: http-ca
  mountPath: {{ include "weft.security.mountPath" . }}/http-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* WEFT_TOKEN of the chart's own CLI containers (definitions Job, helm tests) when the API needs one. */}}
{{- define "weft.security.cliEnv" -}}
{{- if .Values.auth.cliTokenSecret }}
- name: WEFT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.auth.cliTokenSecret }}
      key: {{ .Values.auth.cliTokenKey }}
{{- end }}
{{- end -}}
