{{/* A Celery deployment of mfpo (CPU workers, GPU workers, beat): one template, three uses.
args: dict
  "ctx"       the root context
  "component" worker-cpu | worker-gpu | beat
  "cfg"       the component's values (resources, nodeSelector, tolerations, ...)
  "command"   the container command (list)
  "gpu"       true for the GPU workers: CUDA image, nvidia.com/gpu limit, models volume, /dev/shm
  "replicas"  the replica count, or nil when KEDA owns it
  "recreate"  true for beat: never two at once
*/}}
{{- define "mfpo.workerDeployment" -}}
{{- $ctx := .ctx -}}
{{- $cfg := .cfg -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "mfpo.componentName" (dict "ctx" $ctx "component" .component) }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "mfpo.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  {{- with $ctx.Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not (kindIs "invalid" .replicas) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "mfpo.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  {{- if .recreate }}
  strategy:
    type: Recreate
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "mfpo.labels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
        {{- with $cfg.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "mfpo.configChecksums" $ctx | nindent 8 }}
        {{- with $cfg.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "mfpo.serviceAccountName" $ctx }}
      automountServiceAccountToken: {{ $ctx.Values.serviceAccount.automountServiceAccountToken }}
      {{- with include "mfpo.imagePullSecrets" $ctx }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- include "mfpo.podSecurityContext" $ctx | nindent 6 }}
      {{- if and .gpu $cfg.runtimeClassName }}
      runtimeClassName: {{ $cfg.runtimeClassName }}
      {{- end }}
      terminationGracePeriodSeconds: {{ default 60 $cfg.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ ternary (include "mfpo.gpuImage" $ctx) (include "mfpo.cpuImage" $ctx) (eq .gpu true) }}
          imagePullPolicy: {{ ternary $ctx.Values.gpuImage.pullPolicy $ctx.Values.image.pullPolicy (eq .gpu true) }}
          command:
            {{- toYaml .command | nindent 12 }}
          envFrom:
            {{- include "mfpo.envFrom" $ctx | nindent 12 }}
          env:
            {{- include "mfpo.secretEnv" $ctx | nindent 12 }}
          {{- with $cfg.livenessProbe }}
          {{- if .enabled }}
          # The worker's main process answers a remote-control ping through the broker, also while its pool
          # processes run long tasks; no answer (a hung process, a lost broker connection) restarts the pod.
          livenessProbe:
            exec:
              command:
                - sh
                - -c
                - exec celery --app worker.app:celery_app inspect ping --destination "celery@$HOSTNAME" --timeout {{ .timeoutSeconds }}
            initialDelaySeconds: {{ .initialDelaySeconds }}
            periodSeconds: {{ .periodSeconds }}
            timeoutSeconds: {{ add .timeoutSeconds 20 }}
            failureThreshold: {{ .failureThreshold }}
          {{- end }}
          {{- end }}
          {{- if .gpu }}
          {{- include "mfpo.gpuResources" (dict "resources" $cfg.resources "gpus" $cfg.gpus) | nindent 10 }}
          {{- else }}
          resources:
            {{- toYaml $cfg.resources | nindent 12 }}
          {{- end }}
          {{- include "mfpo.containerSecurityContext" $ctx | nindent 10 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if .gpu }}
            - name: dshm
              mountPath: /dev/shm
            - name: models
              mountPath: {{ $ctx.Values.models.mountPath }}
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ default "1Gi" $cfg.tmpSizeLimit }}
        {{- if .gpu }}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $cfg.shmSizeLimit }}
        {{- include "mfpo.modelsVolume" $ctx | nindent 8 }}
        {{- end }}
      {{- with $cfg.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* A KEDA ScaledObject on the length of one Celery queue (a Redis list), and nothing more.
args: dict "ctx" $ "component" "worker-gpu" "queue" "gpu" "keda" .Values.workerGpu.keda */}}
{{- define "mfpo.scaledObject" -}}
{{- $ctx := .ctx -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "mfpo.componentName" (dict "ctx" $ctx "component" .component) }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "mfpo.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "mfpo.componentName" (dict "ctx" $ctx "component" .component) }}
  minReplicaCount: {{ .keda.minReplicaCount }}
  maxReplicaCount: {{ .keda.maxReplicaCount }}
  pollingInterval: {{ .keda.pollingInterval }}
  cooldownPeriod: {{ .keda.cooldownPeriod }}
  triggers:
    - type: redis
      metadata:
        address: {{ printf "%s:%s" (include "mfpo.redisHost" $ctx) (include "mfpo.redisPort" $ctx) | quote }}
        databaseIndex: {{ include "mfpo.redisDatabase" $ctx | quote }}
        enableTLS: {{ include "mfpo.redisTLS" $ctx | quote }}
        # The Celery queue is a Redis list named <settings.queuePrefix><queue>.
        listName: {{ printf "%s%s" $ctx.Values.settings.queuePrefix .queue | quote }}
        listLength: {{ .keda.listLength | toString | quote }}
        activationListLength: {{ .keda.activationListLength | toString | quote }}
      {{- if or (include "mfpo.redisHasPassword" $ctx) (and (not $ctx.Values.redis.enabled) $ctx.Values.externalRedis.username) }}
      authenticationRef:
        name: {{ include "mfpo.componentName" (dict "ctx" $ctx "component" "redis-auth") }}
      {{- end }}
{{- end -}}
