{{/* The training pod template of the Job, and of each PyTorchJob replica.
args: dict "ctx" $ "containerName" "trainer" "command" (list ...) "restartPolicy" "Never" "multiNode" false */}}
{{- define "mfpo.trainerPodTemplate" -}}
{{- $ctx := .ctx -}}
{{- $t := $ctx.Values.trainer -}}
metadata:
  labels:
    {{- include "mfpo.labels" (dict "ctx" $ctx "component" "trainer") | nindent 4 }}
    mfpo.dev/run: {{ $t.runName | quote }}
  annotations:
    {{- include "mfpo.configChecksums" $ctx | nindent 4 }}
    {{- with $t.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  restartPolicy: {{ .restartPolicy }}
  serviceAccountName: {{ include "mfpo.serviceAccountName" $ctx }}
  automountServiceAccountToken: {{ $ctx.Values.serviceAccount.automountServiceAccountToken }}
  {{- with include "mfpo.imagePullSecrets" $ctx }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- include "mfpo.podSecurityContext" $ctx | nindent 2 }}
  {{- with $t.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  containers:
    - name: {{ .containerName }}
      image: {{ include "mfpo.gpuImage" $ctx }}
      imagePullPolicy: {{ $ctx.Values.gpuImage.pullPolicy }}
      command:
        {{- toYaml .command | nindent 8 }}
      args:
        {{- include "mfpo.trainerArgs" $ctx | nindent 8 }}
      {{- if .multiNode }}
      ports:
        - name: pytorchjob-port
          containerPort: {{ $t.pytorchJob.port }}
          protocol: TCP
      {{- end }}
      envFrom:
        {{- include "mfpo.envFrom" $ctx | nindent 8 }}
      env:
        {{- include "mfpo.secretEnv" $ctx | nindent 8 }}
      {{- include "mfpo.gpuResources" (dict "resources" $t.resources "gpus" $t.gpus) | nindent 6 }}
      {{- include "mfpo.containerSecurityContext" $ctx | nindent 6 }}
      volumeMounts:
        - name: scratch
          mountPath: /tmp
        - name: dshm
          mountPath: /dev/shm
        - name: models
          mountPath: {{ $ctx.Values.models.mountPath }}
          readOnly: true
        - name: train-config
          mountPath: /etc/mfpo/train
          readOnly: true
  volumes:
    - name: scratch
      emptyDir:
        sizeLimit: {{ $t.scratchSizeLimit }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $t.shmSizeLimit }}
    {{- include "mfpo.modelsVolume" $ctx | nindent 4 }}
    - name: train-config
      configMap:
        name: {{ include "mfpo.trainerName" $ctx }}
  {{- with $t.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $t.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $t.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Name of the run's Job / PyTorchJob / ConfigMap */}}
{{- define "mfpo.trainerName" -}}
{{- include "mfpo.componentName" (dict "ctx" . "component" (printf "train-%s" .Values.trainer.runName)) -}}
{{- end -}}

{{/* The accelerate configuration file of trainer.strategy (shipped in the image, configs/accelerate/) */}}
{{- define "mfpo.accelerateConfig" -}}
{{- printf "/app/configs/accelerate/%s.yaml" .Values.trainer.strategy -}}
{{- end -}}
