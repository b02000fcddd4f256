{{/* Pieces shared by the in-chart Redis and MinIO StatefulSets. */}}

{{/* The Service and the headless Service (the StatefulSet's serviceName) of a component.
args: dict "ctx" $ "component" "redis" "ports" (list (dict "name" "redis" "port" 6379)) */}}
{{- define "mfpo.storeServices" -}}
{{- $ctx := .ctx -}}
{{- $component := .component -}}
{{- $ports := .ports -}}
{{- $name := include "mfpo.componentName" (dict "ctx" $ctx "component" $component) -}}
{{- range $suffix := list "" "-headless" }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ printf "%s%s" $name $suffix }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "mfpo.labels" (dict "ctx" $ctx "component" $component) | nindent 4 }}
spec:
  {{- if $suffix }}
  clusterIP: None
  {{- else }}
  type: ClusterIP
  {{- end }}
  selector:
    {{- include "mfpo.selectorLabels" (dict "ctx" $ctx "component" $component) | nindent 4 }}
  ports:
    {{- range $ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end -}}

{{/* volumeClaimTemplates of the "data" volume, when persistence is on.
args: dict "ctx" $ "component" "redis" "persistence" .Values.redis.persistence */}}
{{- define "mfpo.dataClaimTemplates" -}}
{{- if .persistence.enabled -}}
volumeClaimTemplates:
  - metadata:
      name: data
      labels:
        {{- include "mfpo.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
    spec:
      accessModes:
        {{- toYaml .persistence.accessModes | nindent 8 }}
      {{- with .persistence.storageClass }}
      storageClassName: {{ . | quote }}
      {{- end }}
      resources:
        requests:
          storage: {{ .persistence.size }}
{{- end -}}
{{- end -}}
