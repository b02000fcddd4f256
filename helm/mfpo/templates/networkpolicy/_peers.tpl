{{/* A NetworkPolicyPeer: this release's pods of the given components. args: dict "ctx" $ "components" (list ...) */}}
{{- define "mfpo.peerPods" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "mfpo.name" .ctx }}
      app.kubernetes.io/instance: {{ .ctx.Release.Name }}
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values:
          {{- toYaml .components | nindent 10 }}
{{- end -}}
