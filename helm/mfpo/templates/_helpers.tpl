{{/* ---------------------------------------------------------------------------------------
Names and labels
--------------------------------------------------------------------------------------- */}}

{{- define "mfpo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mfpo.fullname" -}}
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

{{/* Name of a component's resources: <fullname>-<component> (args: dict "ctx" $ "component" "gateway") */}}
{{- define "mfpo.componentName" -}}
{{- printf "%s-%s" (include "mfpo.fullname" .ctx | trunc 50 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mfpo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mfpo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mfpo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every resource; args: dict "ctx" $ "component" "gateway" */}}
{{- define "mfpo.labels" -}}
helm.sh/chart: {{ include "mfpo.chart" .ctx }}
{{ include "mfpo.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: mfpo
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mfpo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mfpo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Images
--------------------------------------------------------------------------------------- */}}

{{/* args: dict "image" .Values.image "global" .Values.global "defaultTag" "0.1.0-cpu" */}}
{{- define "mfpo.imageRef" -}}
{{- $registry := .image.registry -}}
{{- if .global.imageRegistry }}{{ $registry = .global.imageRegistry }}{{ end -}}
{{- $prefix := ternary (printf "%s/" $registry) "" (ne $registry "") -}}
{{- if .image.digest -}}
{{- printf "%s%s@%s" $prefix .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s%s:%s" $prefix .image.repository (default .defaultTag (toString .image.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "mfpo.cpuImage" -}}
{{- include "mfpo.imageRef" (dict "image" .Values.image "global" .Values.global "defaultTag" (printf "%s-cpu" .Chart.AppVersion)) -}}
{{- end -}}

{{- define "mfpo.gpuImage" -}}
{{- include "mfpo.imageRef" (dict "image" .Values.gpuImage "global" .Values.global "defaultTag" (printf "%s-cuda" .Chart.AppVersion)) -}}
{{- end -}}

{{- define "mfpo.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Secrets: names and keys (the chart's Secret, or the user's existing ones)
--------------------------------------------------------------------------------------- */}}

{{- define "mfpo.secretName" -}}
{{- include "mfpo.fullname" . -}}
{{- end -}}

{{- define "mfpo.apiKeysSecretName" -}}
{{- default (include "mfpo.secretName" .) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "mfpo.apiKeysSecretKey" -}}
{{- ternary .Values.auth.existingSecretKey "api-keys" (ne .Values.auth.existingSecret "") -}}
{{- end -}}

{{- define "mfpo.s3SecretName" -}}
{{- default (include "mfpo.secretName" .) .Values.objectStore.existingSecret -}}
{{- end -}}

{{- define "mfpo.s3AccessKeyKey" -}}
{{- ternary .Values.objectStore.existingSecretAccessKeyKey "s3-access-key" (ne .Values.objectStore.existingSecret "") -}}
{{- end -}}

{{- define "mfpo.s3SecretKeyKey" -}}
{{- ternary .Values.objectStore.existingSecretSecretKeyKey "s3-secret-key" (ne .Values.objectStore.existingSecret "") -}}
{{- end -}}

{{/* "true" when a KEDA ScaledObject is rendered */}}
{{- define "mfpo.kedaEnabled" -}}
{{- or .Values.workerCpu.keda.enabled (and .Values.workerGpu.enabled .Values.workerGpu.keda.enabled) | toString -}}
{{- end -}}

{{/* Whether the pods get a Redis password at all */}}
{{- define "mfpo.redisHasPassword" -}}
{{- if .Values.redis.enabled -}}
{{- ternary "true" "" .Values.redis.auth.enabled -}}
{{- else -}}
{{- ternary "true" "" (or (ne .Values.externalRedis.password "") (ne .Values.externalRedis.existingSecret "")) -}}
{{- end -}}
{{- end -}}

{{- define "mfpo.redisSecretName" -}}
{{- $existing := ternary .Values.redis.auth.existingSecret .Values.externalRedis.existingSecret .Values.redis.enabled -}}
{{- default (include "mfpo.secretName" .) $existing -}}
{{- end -}}

{{- define "mfpo.redisSecretKey" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.existingSecret -}}
{{- .Values.redis.auth.existingSecretPasswordKey -}}
{{- else if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecretPasswordKey -}}
{{- else -}}
redis-password
{{- end -}}
{{- end -}}

{{/* A value of the chart's Secret: the given one, else the one already in the cluster (kept across upgrades),
else "generated" (base64) when given, else a new random one of "length" characters.
args: dict "ctx" $ "key" "s3-secret-key" "value" "..." "length" 32 */}}
{{- define "mfpo.secretValue" -}}
{{- if .value -}}
{{- .value | b64enc -}}
{{- else -}}
{{- $current := lookup "v1" "Secret" .ctx.Release.Namespace (include "mfpo.secretName" .ctx) -}}
{{- if and $current $current.data (hasKey $current.data .key) -}}
{{- index $current.data .key -}}
{{- else if .generated -}}
{{- .generated -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Endpoints
--------------------------------------------------------------------------------------- */}}

{{- define "mfpo.redisHost" -}}
{{- ternary (include "mfpo.componentName" (dict "ctx" . "component" "redis")) .Values.externalRedis.host .Values.redis.enabled -}}
{{- end -}}

{{- define "mfpo.redisPort" -}}
{{- ternary 6379 (int .Values.externalRedis.port) .Values.redis.enabled -}}
{{- end -}}

{{- define "mfpo.redisDatabase" -}}
{{- ternary 0 (int .Values.externalRedis.database) .Values.redis.enabled -}}
{{- end -}}

{{- define "mfpo.redisTLS" -}}
{{- and (not .Values.redis.enabled) .Values.externalRedis.tls -}}
{{- end -}}

{{/* The broker URL without its password (that comes from MFPO_REDIS_PASSWORD, a Secret) */}}
{{- define "mfpo.redisURL" -}}
{{- $scheme := ternary "rediss" "redis" (eq (include "mfpo.redisTLS" .) "true") -}}
{{- $user := "" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.username -}}
{{- $user = printf "%s@" (urlquery .Values.externalRedis.username) -}}
{{- end -}}
{{- printf "%s://%s%s:%s/%s" $scheme $user (include "mfpo.redisHost" .) (include "mfpo.redisPort" .) (include "mfpo.redisDatabase" .) -}}
{{- end -}}

{{- define "mfpo.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:9000" (include "mfpo.componentName" (dict "ctx" . "component" "minio")) -}}
{{- else -}}
{{- .Values.objectStore.endpoint -}}
{{- end -}}
{{- end -}}

{{/* Where clients fetch objects (presigned URLs): objectStore.publicEndpoint, else MinIO's Ingress host, else none */}}
{{- define "mfpo.s3PublicEndpoint" -}}
{{- if .Values.objectStore.publicEndpoint -}}
{{- .Values.objectStore.publicEndpoint -}}
{{- else if and .Values.minio.enabled .Values.minio.ingress.enabled -}}
{{- .Values.minio.ingress.host -}}
{{- end -}}
{{- end -}}

{{- define "mfpo.s3PublicSecure" -}}
{{- if .Values.objectStore.publicEndpoint -}}
{{- .Values.objectStore.publicSecure | toString -}}
{{- else -}}
{{- ne (len .Values.minio.ingress.tls) 0 | toString -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------------------
Pieces of the mfpo pods
--------------------------------------------------------------------------------------- */}}

{{/* Secret environment of every mfpo container (S3 credentials, Redis password) */}}
{{- define "mfpo.secretEnv" -}}
- name: MFPO_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "mfpo.s3SecretName" . }}
      key: {{ include "mfpo.s3AccessKeyKey" . }}
- name: MFPO_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "mfpo.s3SecretName" . }}
      key: {{ include "mfpo.s3SecretKeyKey" . }}
{{- if include "mfpo.redisHasPassword" . }}
- name: MFPO_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mfpo.redisSecretName" . }}
      key: {{ include "mfpo.redisSecretKey" . }}
{{- end }}
{{- with .Values.settings.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* envFrom of every mfpo container: the settings ConfigMap */}}
{{- define "mfpo.envFrom" -}}
- configMapRef:
    name: {{ include "mfpo.componentName" (dict "ctx" . "component" "settings") }}
{{- end -}}

{{/* Checksums that roll the pods when settings or secrets change */}}
{{- define "mfpo.configChecksums" -}}
checksum/settings: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}

{{- define "mfpo.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "mfpo.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/* Volume of the model weights (models.existingClaim or models.volume); fails when neither is set */}}
{{- define "mfpo.modelsVolume" -}}
- name: models
{{- if .Values.models.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.models.existingClaim }}
    readOnly: true
{{- else if .Values.models.volume }}
  {{- toYaml .Values.models.volume | nindent 2 }}
{{- else }}
{{- fail "the GPU workers and the trainer read the weights from a volume: set models.existingClaim (a PVC) or models.volume" }}
{{- end }}
{{- end -}}

{{/* A container's resources with nvidia.com/gpu in its limits (an extended resource's request follows its limit).
args: dict "resources" ... "gpus" 1 */}}
{{- define "mfpo.gpuResources" -}}
{{- $resources := deepCopy (default (dict) .resources) -}}
{{- $limits := default (dict) $resources.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int .gpus) -}}
{{- $_ := set $resources "limits" $limits -}}
resources:
  {{- toYaml $resources | nindent 2 }}
{{- end -}}

{{/* The trainer's output URI */}}
{{- define "mfpo.trainerOutput" -}}
{{- default (printf "s3://%s/runs/%s" .Values.objectStore.bucket .Values.trainer.runName) .Values.trainer.output -}}
{{- end -}}

{{/* Arguments of `mfpo train` / `-m trainer`, from values */}}
{{- define "mfpo.trainerArgs" -}}
{{- if not .Values.trainer.dataset -}}
{{- fail "trainer.dataset is required: s3://<bucket>/tenants/<tenant>/jobs/<job>/out (a finished job's dataset)" -}}
{{- end -}}
- --dataset
- {{ .Values.trainer.dataset | quote }}
- --model
- {{ .Values.trainer.model | quote }}
- --output
- {{ include "mfpo.trainerOutput" . | quote }}
- --loss
- {{ .Values.trainer.loss | quote }}
- --config
- /etc/mfpo/train/config.json
{{- end -}}
