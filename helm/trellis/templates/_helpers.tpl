{{/* Names. */}}
{{- define "trellis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trellis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trellis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: the common ones, and the selector of one component. */}}
{{- define "trellis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trellis.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "trellis.labels" -}}
helm.sh/chart: {{ include "trellis.chart" .ctx }}
{{ include "trellis.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: trellis
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "trellis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "trellis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trellis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secrets the chart makes or is given. */}}
{{- define "trellis.authSecret" -}}
{{- default (printf "%s-auth" (include "trellis.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
{{- define "trellis.curveSecret" -}}
{{- default (printf "%s-curve" (include "trellis.fullname" .)) .Values.curve.existingSecret -}}
{{- end -}}

{{/* The API and worker Services (leader only) and the etcd Services. */}}
{{- define "trellis.apiService" -}}{{ include "trellis.fullname" . }}-api{{- end -}}
{{- define "trellis.workerService" -}}{{ include "trellis.fullname" . }}-workers{{- end -}}
{{- define "trellis.etcdName" -}}{{ include "trellis.fullname" . }}-etcd{{- end -}}
{{- define "trellis.etcdHeadless" -}}{{ include "trellis.fullname" . }}-etcd-peers{{- end -}}

{{/* host:port of every etcd member, comma-separated. */}}
{{- define "trellis.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $eps = append $eps (printf "%s-%d.%s.%s.svc:2379" (include "trellis.etcdName" $) $i (include "trellis.etcdHeadless" $) $.Release.Namespace) -}}
{{- end -}}
{{- join "," $eps -}}
{{- else -}}
{{- required "externalEtcd.endpoints is required when etcd.enabled is false" (join "," .Values.externalEtcd.endpoints) -}}
{{- end -}}
{{- end -}}

{{/* TRELLIS_<FLAG> entries for a map of flag -> value (the `flags` values). */}}
{{- define "trellis.flagEnv" -}}
{{- range $flag, $value := . }}
- name: TRELLIS_{{ $flag | upper | replace "-" "_" }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The scratch volumes every Trellis container mounts (read-only root): /tmp
    and the working folder (the workers' trellis-data/), each up to the size given. */}}
{{- define "trellis.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/trellis
{{- end -}}
{{- define "trellis.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . }}
- name: data
  emptyDir:
    sizeLimit: {{ . }}
{{- end -}}

{{/* The pipeline files: the chart's pipelines/*.lua and pipelines.files. */}}
{{- define "trellis.pipelineFiles" -}}
{{- $files := dict -}}
{{- range $path, $_ := .Files.Glob "pipelines/*.lua" -}}
{{- $_ := set $files (base $path) ($.Files.Get $path) -}}
{{- end -}}
{{- range $name, $src := .Values.pipelines.files -}}
{{- $_ := set $files $name $src -}}
{{- end -}}
{{- toYaml $files -}}
{{- end -}}

{{/* Checksum annotations that roll the pods when their configuration changes. */}}
{{- define "trellis.configChecksum" -}}
checksum/llm: {{ toJson .Values.llm.providers | sha256sum | trunc 16 }}
{{- end -}}

{{/* k=v,k2=v2 of a map, sorted by key (TRELLIS_LABEL). */}}
{{- define "trellis.kvList" -}}
{{- $out := list -}}
{{- range $k, $v := . -}}
{{- $out = append $out (printf "%s=%s" $k (toString $v)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* NetworkPolicy egress rule for DNS. */}}
{{- define "trellis.dnsEgress" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}
