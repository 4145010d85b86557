{{/* Names and labels. */}}
{{- define "streamlattice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamlattice.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "streamlattice.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamlattice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamlattice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "streamlattice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* A DNS-1123 name for a worker group: <fullname>-<task>-<region>. */}}
{{- define "streamlattice.workerName" -}}
{{- printf "%s-%s-%s" (include "streamlattice.fullname" .root) .task .region | lower | replace "_" "-" | replace "." "-" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ConfigMap holding lattice.toml, or "" for the image's own. */}}
{{- define "streamlattice.latticeConfigMap" -}}
{{- if .Values.lattice.existingConfigMap -}}
{{- .Values.lattice.existingConfigMap -}}
{{- else if .Values.lattice.config -}}
{{- printf "%s-lattice" (include "streamlattice.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The partitions region .region owns in every task topic, as KEDA's partitionLimitation: "4-7". */}}
{{- define "streamlattice.partitionBlock" -}}
{{- $first := 0 -}}
{{- $block := "" -}}
{{- range .root.Values.lattice.regions -}}
{{- $last := sub (add $first .partitions) 1 -}}
{{- if eq .name $.region -}}
{{- $block = ternary (printf "%d" $first) (printf "%d-%d" $first $last) (eq $first $last) -}}
{{- end -}}
{{- $first = add $first .partitions -}}
{{- end -}}
{{- required (printf "region %q is not in lattice.regions" .region) $block -}}
{{- end -}}

{{/* How many partitions region .region owns. */}}
{{- define "streamlattice.regionPartitions" -}}
{{- range .root.Values.lattice.regions -}}
{{- if eq .name $.region -}}{{ .partitions | int }}{{- end -}}
{{- end -}}
{{- end -}}

{{/* The SASL settings of a component: kafka.security.sasl with the component's `sasl` over it. */}}
{{- define "streamlattice.sasl" -}}
{{- $sasl := mergeOverwrite (deepCopy .root.Values.kafka.security.sasl) (deepCopy (.own | default dict)) -}}
{{- toYaml $sasl -}}
{{- end -}}

{{- define "streamlattice.usesSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol -}}true{{- end -}}
{{- end -}}

{{- define "streamlattice.usesTls" -}}
{{- if has .Values.kafka.security.protocol (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{/* Fails the render on settings that cannot work, with what to change. */}}
{{- define "streamlattice.validate" -}}
{{- $protocol := .Values.kafka.security.protocol -}}
{{- if not (has $protocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- fail (printf "kafka.security.protocol %q: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" $protocol) -}}
{{- end -}}
{{- if include "streamlattice.usesSasl" . -}}
{{- $mechanism := .Values.kafka.security.sasl.mechanism -}}
{{- if not (has $mechanism (list "SCRAM-SHA-512" "SCRAM-SHA-256" "PLAIN")) -}}
{{- fail (printf "kafka.security.sasl.mechanism %q: use SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN" $mechanism) -}}
{{- end -}}
{{- $components := dict "workers" .Values.workers.sasl -}}
{{- if .Values.router.enabled }}{{ $_ := set $components "router" .Values.router.sasl }}{{ end -}}
{{- if .Values.topicsInit.enabled }}{{ $_ := set $components "topicsInit" .Values.topicsInit.sasl }}{{ end -}}
{{- range $component, $own := $components -}}
{{- $sasl := include "streamlattice.sasl" (dict "root" $ "own" $own) | fromYaml -}}
{{- if not (and $sasl.username $sasl.passwordSecret.name $sasl.passwordSecret.key) -}}
{{- fail (printf "%s: %s needs a SASL username and passwordSecret (name and key of an existing Secret) in kafka.security.sasl or %s.sasl" $component $protocol $component) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range .Values.lattice.regions -}}
{{- if not (and .name .partitions) -}}
{{- fail (printf "lattice.regions: every region needs a name and partitions, got %v" .) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.lattice.config .Values.lattice.existingConfigMap -}}
{{- fail "lattice.config and lattice.existingConfigMap: give one of them" -}}
{{- end -}}
{{- if .Values.lattice.config -}}
{{- $toml := fromToml .Values.lattice.config -}}
{{- if $toml.Error -}}
{{- fail (printf "lattice.config is not valid TOML: %s" $toml.Error) -}}
{{- end -}}
{{- $namespace := dig "lattice" "namespace" "sl" $toml -}}
{{- if ne $namespace .Values.lattice.namespace -}}
{{- fail (printf "lattice.config's namespace is %q but lattice.namespace is %q" $namespace .Values.lattice.namespace) -}}
{{- end -}}
{{- $declared := dict -}}
{{- range $name, $region := $toml.regions -}}
{{- $_ := set $declared $name (dig "partitions" 4 $region | int) -}}
{{- end -}}
{{- $given := dict -}}
{{- range .Values.lattice.regions -}}
{{- $_ := set $given .name (.partitions | int) -}}
{{- end -}}
{{- if ne (toJson $declared) (toJson $given) -}}
{{- fail (printf "lattice.regions %s differ from lattice.config's regions %s (name: partitions)" (toJson $given) (toJson $declared)) -}}
{{- end -}}
{{- end -}}
{{- $regions := list -}}
{{- range .Values.lattice.regions -}}
{{- $regions = append $regions .name -}}
{{- end -}}
{{- range .Values.workers.groups -}}
{{- range .regions -}}
{{- if not (has . $regions) -}}
{{- fail (printf "workers.groups: region %q is not in lattice.regions %v" . $regions) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The environment every streamlattice container gets: broker, layout and security. */}}
{{- define "streamlattice.env" -}}
{{- $root := .root -}}
{{- $security := $root.Values.kafka.security -}}
- name: STREAMLATTICE_BOOTSTRAP
  value: {{ $root.Values.kafka.bootstrap | quote }}
{{- if include "streamlattice.latticeConfigMap" $root }}
- name: STREAMLATTICE_CONFIG
  value: {{ printf "%s/lattice.toml" $root.Values.image.workingDir | quote }}
{{- end }}
- name: STREAMLATTICE_SECURITY_PROTOCOL
  value: {{ $security.protocol | quote }}
{{- if include "streamlattice.usesSasl" $root }}
{{- $sasl := include "streamlattice.sasl" (dict "root" $root "own" .own) | fromYaml }}
- name: STREAMLATTICE_SASL_MECHANISM
  value: {{ $sasl.mechanism | quote }}
- name: STREAMLATTICE_SASL_USERNAME
  value: {{ $sasl.username | quote }}
- name: STREAMLATTICE_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $sasl.passwordSecret.name }}
      key: {{ $sasl.passwordSecret.key }}
{{- end }}
{{- if and (include "streamlattice.usesTls" $root) $security.tls.caSecret.name }}
- name: STREAMLATTICE_SSL_CAFILE
  value: /etc/streamlattice/tls/ca.crt
{{- end }}
{{- end -}}

{{/* Volumes for lattice.toml and the CA, and where they are mounted. */}}
{{- define "streamlattice.volumes" -}}
{{- $root := .root -}}
{{- $configMap := .configMap | default (include "streamlattice.latticeConfigMap" $root) -}}
{{- if $configMap }}
- name: lattice
  configMap:
    name: {{ $configMap }}
    items:
      - key: {{ $root.Values.lattice.configMapKey }}
        path: lattice.toml
{{- end }}
{{- if and (include "streamlattice.usesTls" $root) $root.Values.kafka.security.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ $root.Values.kafka.security.tls.caSecret.name }}
    items:
      - key: {{ $root.Values.kafka.security.tls.caSecret.key }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "streamlattice.volumeMounts" -}}
{{- $root := .root -}}
{{- if include "streamlattice.latticeConfigMap" $root }}
{{- /* over the image's own, so relative model paths still name the image's models/ */}}
- name: lattice
  mountPath: {{ printf "%s/lattice.toml" $root.Values.image.workingDir }}
  subPath: lattice.toml
  readOnly: true
{{- end }}
{{- if and (include "streamlattice.usesTls" $root) $root.Values.kafka.security.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/streamlattice/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod annotations: Prometheus scraping, and a roll when the chart's lattice.toml changes. */}}
{{- define "streamlattice.podAnnotations" -}}
{{- if .Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- if .Values.lattice.config }}
checksum/lattice: {{ .Values.lattice.config | sha256sum }}
{{- end }}
{{- end -}}
