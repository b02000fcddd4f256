{{/* Name of the run's eval Job and ConfigMap */}}
{{- define "mfpo.evalName" -}}
{{- include "mfpo.componentName" (dict "ctx" . "component" (printf "eval-%s" .Values.trainer.runName)) -}}
{{- end -}}

{{/* The trainer run the Job evaluates (the object store: a pod cannot read another pod's disk) */}}
{{- define "mfpo.evalRun" -}}
{{- $run := include "mfpo.trainerOutput" . -}}
{{- if not (hasPrefix "s3://" $run) -}}
{{- fail (printf "eval reads the trainer's run from the object store: trainer.output must be empty or s3://..., not %s" $run) -}}
{{- end -}}
{{- $run -}}
{{- end -}}

{{/* Where the report goes: eval.output, or <run>/eval */}}
{{- define "mfpo.evalOutput" -}}
{{- default (printf "%s/eval" (include "mfpo.evalRun" .)) .Values.eval.output -}}
{{- end -}}
