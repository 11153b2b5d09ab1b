{{/*
Named templates of the meterd chart. Those an umbrella chart may call (mode `sidecar`) are
meterd.sidecarContainer, meterd.sidecarVolumes and meterd.sidecarPodAnnotations; they read only
.Values, .Release and .Chart (Name, Version, AppVersion), so a parent chart can pass
(dict "Values" .Values.meterd "Release" .Release "Chart" (dict "Name" "meterd" "AppVersion" "0.1.0")).
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "meterd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: <release>-<name>, or the release name alone when it already
contains the chart name; at most 63 characters (a DNS label).
*/}}
{{- define "meterd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a companion object, <fullname>-<suffix>, still within 63 characters. Call with (list $ "config"). */}}
{{- define "meterd.componentName" -}}
{{- $top := index . 0 }}
{{- $suffix := index . 1 }}
{{- $prefix := include "meterd.fullname" $top | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $suffix }}
{{- end }}

{{/* helm.sh/chart label value. */}}
{{- define "meterd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "meterd.labels" -}}
helm.sh/chart: {{ include "meterd.chart" . }}
{{ include "meterd.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels: immutable on a Deployment, so nothing that changes between releases. */}}
{{- define "meterd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meterd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "meterd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString | required "image.tag is required when the chart has no appVersion" }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "meterd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meterd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the secret variables come from: existingSecret, or the one this chart renders. */}}
{{- define "meterd.secretName" -}}
{{- default (include "meterd.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* The secret settings: `secrets` / `existingSecretKeys` field -> environment variable (YAML). */}}
{{- define "meterd.secretVariables" -}}
authDataPlaneTokens: AUTH_DATA_PLANE_TOKENS
authAdminTokens: AUTH_ADMIN_TOKENS
databaseUrl: DATABASE_URL
redisUrl: REDIS_URL
stripeSecretKey: STRIPE_SECRET_KEY
stripeWebhookSecret: STRIPE_WEBHOOK_SECRET
alertWebhookSecret: ALERT_WEBHOOK_SECRET
{{- end }}

{{/*
Secret variables as YAML `VARIABLE: key-in-secret`: from existingSecretKeys (a "" key leaves the
variable unset), or, for the chart's own Secret, each non-empty `secrets` value under its
variable's name.
*/}}
{{- define "meterd.secretKeys" -}}
{{- $variables := include "meterd.secretVariables" . | fromYaml }}
{{- range $field, $variable := $variables }}
{{- if $.Values.existingSecret }}
{{- with index $.Values.existingSecretKeys $field }}
{{ $variable }}: {{ . | quote }}
{{- end }}
{{- else if index $.Values.secrets $field }}
{{ $variable }}: {{ $variable }}
{{- end }}
{{- end }}
{{- end }}

{{/* data of the chart's Secret (also hashed into checksum/secret). */}}
{{- define "meterd.secretData" -}}
{{- $variables := include "meterd.secretVariables" . | fromYaml }}
{{- range $field, $variable := $variables }}
{{- with index $.Values.secrets $field }}
{{ $variable }}: {{ . | toString | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* product.yaml of the config ConfigMap (also hashed into checksum/config). */}}
{{- define "meterd.productConfigYaml" -}}
# Rendered by the meterd Helm chart from the values key productConfig.
{{ toYaml .Values.productConfig }}
{{- end }}

{{/*
Pod annotations that roll the pods when the product config or the secret values change. With
existingSecret the reference is hashed: a change inside that Secret needs a rollout (or a reloader).
*/}}
{{- define "meterd.checksumAnnotations" -}}
{{- $prefix := ternary "checksum/meterd-" "checksum/" (eq .Values.mode "sidecar") }}
{{ $prefix }}config: {{ include "meterd.productConfigYaml" . | sha256sum }}
{{- if .Values.existingSecret }}
{{ $prefix }}secret: {{ printf "existing:%s:%s" .Values.existingSecret (include "meterd.secretKeys" .) | sha256sum }}
{{- else }}
{{ $prefix }}secret: {{ include "meterd.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{/* An environment variable's text: whole numbers without exponent (values numbers are float64), booleans as true/false. */}}
{{- define "meterd.envValue" -}}
{{- if kindIs "float64" . }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{- define "meterd.grpcPort" -}}
{{- include "meterd.envValue" .Values.config.GRPC_PORT | default "50051" }}
{{- end }}

{{- define "meterd.httpPort" -}}
{{- include "meterd.envValue" .Values.config.HTTP_PORT | default "9464" }}
{{- end }}

{{/* Port names: prefixed in a gateway pod, where the gateway's own ports may already be called grpc. */}}
{{- define "meterd.grpcPortName" -}}
{{- ternary "meterd-grpc" "grpc" (eq .Values.mode "sidecar") }}
{{- end }}

{{- define "meterd.httpPortName" -}}
{{- ternary "meterd-metrics" "http-metrics" (eq .Values.mode "sidecar") }}
{{- end }}

{{/* grpc or http: `auto` is grpc unless TLS is on (kubelet gRPC probes cannot speak TLS). */}}
{{- define "meterd.probeType" -}}
{{- $type := .Values.probes.type }}
{{- if eq $type "auto" }}
{{- ternary "http" "grpc" .Values.tls.enabled }}
{{- else if and (eq $type "grpc") .Values.tls.enabled }}
{{- fail "probes.type grpc cannot be used with tls.enabled: kubelet gRPC probes do not speak TLS; use probes.type http (or auto)" }}
{{- else }}
{{- $type }}
{{- end }}
{{- end }}

{{/* Is a PodDisruptionBudget wanted: true/false, or auto = more than one pod. */}}
{{- define "meterd.pdbEnabled" -}}
{{- $setting := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "bool" $setting }}
{{- $setting }}
{{- else }}
{{- $pods := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled }}
{{- gt (int64 $pods) 1 }}
{{- end }}
{{- end }}

{{/* Refuses settings that would render a broken or unsafe release; renders nothing. */}}
{{- define "meterd.validate" -}}
{{- if not (has .Values.mode (list "deployment" "sidecar")) }}
{{- fail (printf "mode must be deployment or sidecar, not %v" .Values.mode) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.secretName is required when tls.enabled (a Secret with the server certificate and key)" }}
{{- end }}
{{- if and .Values.tls.clientCa.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientCa.enabled (mutual TLS) needs tls.enabled" }}
{{- end }}
{{- if eq (include "meterd.grpcPort" .) (include "meterd.httpPort" .) }}
{{- fail "config.GRPC_PORT and config.HTTP_PORT must differ" }}
{{- end }}
{{- $shutdownGraceMs := include "meterd.envValue" .Values.config.SHUTDOWN_GRACE_MS | default "10000" | int64 }}
{{- $neededMs := add $shutdownGraceMs (mul (int64 .Values.preStop.sleepSeconds) 1000) }}
{{- if and (eq .Values.mode "deployment") (le (mul (int64 .Values.terminationGracePeriodSeconds) 1000) $neededMs) }}
{{- fail (printf "terminationGracePeriodSeconds (%d s) must exceed config.SHUTDOWN_GRACE_MS plus preStop.sleepSeconds (%d ms), or in-flight calls are killed mid-drain" (int64 .Values.terminationGracePeriodSeconds) $neededMs) }}
{{- end }}
{{- if and .Values.service.headless (ne .Values.service.type "ClusterIP") }}
{{- fail "service.headless needs service.type ClusterIP" }}
{{- end }}
{{- include "meterd.validateSecrets" . }}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int64 .Values.autoscaling.minReplicas) (int64 .Values.autoscaling.maxReplicas) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pairings meterd refuses at startup, refused at render instead: STRIPE_SECRET_KEY without
STRIPE_WEBHOOK_SECRET, and ALERT_WEBHOOK_URLS without an ALERT_WEBHOOK_SECRET of at least 16
characters. With existingSecret only the key names can be checked (the values are not visible).
*/}}
{{- define "meterd.validateSecrets" -}}
{{- $alertUrls := include "meterd.envValue" .Values.config.ALERT_WEBHOOK_URLS | trim }}
{{- if .Values.existingSecret }}
{{- $keys := .Values.existingSecretKeys }}
{{- if and $keys.stripeSecretKey (not $keys.stripeWebhookSecret) }}
{{- fail "existingSecretKeys.stripeSecretKey needs existingSecretKeys.stripeWebhookSecret: meterd refuses STRIPE_SECRET_KEY without STRIPE_WEBHOOK_SECRET (credits are granted only from signed webhooks)" }}
{{- end }}
{{- if and $alertUrls (not $keys.alertWebhookSecret) }}
{{- fail "config.ALERT_WEBHOOK_URLS needs existingSecretKeys.alertWebhookSecret: the key of existingSecret holding ALERT_WEBHOOK_SECRET (at least 16 characters; receivers verify the signature)" }}
{{- end }}
{{- else }}
{{- $secrets := .Values.secrets }}
{{- if and $secrets.stripeSecretKey (not $secrets.stripeWebhookSecret) }}
{{- fail "secrets.stripeSecretKey needs secrets.stripeWebhookSecret: meterd refuses STRIPE_SECRET_KEY without STRIPE_WEBHOOK_SECRET (credits are granted only from signed webhooks)" }}
{{- end }}
{{- if and $alertUrls (not (regexMatch "^[\\s\\S]{16,}$" (toString $secrets.alertWebhookSecret))) }}
{{- fail "config.ALERT_WEBHOOK_URLS needs secrets.alertWebhookSecret of at least 16 characters: meterd signs every alert delivery with ALERT_WEBHOOK_SECRET and refuses to start without it" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment of the meterd container (a YAML list). */}}
{{- define "meterd.env" -}}
{{- range $name, $value := .Values.config }}
{{- $text := include "meterd.envValue" $value }}
{{- if ne $text "" }}
- name: {{ $name }}
  value: {{ $text | quote }}
{{- end }}
{{- end }}
- name: METERD_CONFIG
  value: {{ printf "%s/product.yaml" (trimSuffix "/" .Values.productConfigMountPath) | quote }}
{{- if .Values.tls.enabled }}
- name: GRPC_TLS_CERT_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .Values.tls.mountPath) .Values.tls.certKey | quote }}
- name: GRPC_TLS_KEY_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .Values.tls.mountPath) .Values.tls.keyKey | quote }}
{{- if .Values.tls.clientCa.enabled }}
- name: GRPC_TLS_CLIENT_CA_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .Values.tls.clientCa.mountPath) .Values.tls.clientCa.key | quote }}
{{- end }}
{{- end }}
{{- $secretName := include "meterd.secretName" . }}
{{- range $variable, $key := include "meterd.secretKeys" . | fromYaml }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: {{ $key | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* One probe's action: gRPC health on the gRPC port, or an HTTP GET on the HTTP port. */}}
{{- define "meterd.probeAction" -}}
{{- $top := index . 0 }}
{{- $grpcService := index . 1 }}
{{- $httpPath := index . 2 }}
{{- if eq (include "meterd.probeType" $top) "grpc" }}
grpc:
  port: {{ include "meterd.grpcPort" $top }}
  service: {{ $grpcService | quote }}
{{- else }}
httpGet:
  path: {{ $httpPath }}
  port: {{ include "meterd.httpPort" $top }}
  scheme: HTTP
{{- end }}
{{- end }}

{{- define "meterd.probes" -}}
{{- $probes := .Values.probes }}
{{- if $probes.startup.enabled }}
startupProbe:
  {{- include "meterd.probeAction" (list . $probes.grpcService.liveness $probes.httpPath.liveness) | trim | nindent 2 }}
  periodSeconds: {{ $probes.startup.periodSeconds }}
  timeoutSeconds: {{ $probes.startup.timeoutSeconds }}
  failureThreshold: {{ $probes.startup.failureThreshold }}
{{- end }}
{{- if $probes.liveness.enabled }}
livenessProbe:
  {{- include "meterd.probeAction" (list . $probes.grpcService.liveness $probes.httpPath.liveness) | trim | nindent 2 }}
  initialDelaySeconds: {{ $probes.liveness.initialDelaySeconds }}
  periodSeconds: {{ $probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $probes.liveness.timeoutSeconds }}
  failureThreshold: {{ $probes.liveness.failureThreshold }}
{{- end }}
{{- if $probes.readiness.enabled }}
readinessProbe:
  {{- include "meterd.probeAction" (list . $probes.grpcService.readiness $probes.httpPath.readiness) | trim | nindent 2 }}
  initialDelaySeconds: {{ $probes.readiness.initialDelaySeconds }}
  periodSeconds: {{ $probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $probes.readiness.timeoutSeconds }}
  failureThreshold: {{ $probes.readiness.failureThreshold }}
  successThreshold: {{ $probes.readiness.successThreshold }}
{{- end }}
{{- end }}

{{/* The meterd container (a YAML mapping), shared by the Deployment and the sidecar snippet. */}}
{{- define "meterd.container" -}}
{{- include "meterd.validate" . -}}
name: meterd
image: {{ include "meterd.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- with .Values.command }}
command:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.args }}
args:
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
  - name: {{ include "meterd.grpcPortName" . }}
    containerPort: {{ include "meterd.grpcPort" . }}
    protocol: TCP
  - name: {{ include "meterd.httpPortName" . }}
    containerPort: {{ include "meterd.httpPort" . }}
    protocol: TCP
env:
  {{- include "meterd.env" . | trim | nindent 2 }}
volumeMounts:
  - name: meterd-config
    mountPath: {{ .Values.productConfigMountPath }}
    readOnly: true
  - name: meterd-tmp
    mountPath: /tmp
  {{- if .Values.tls.enabled }}
  - name: meterd-tls
    mountPath: {{ .Values.tls.mountPath }}
    readOnly: true
  {{- if .Values.tls.clientCa.enabled }}
  - name: meterd-client-ca
    mountPath: {{ .Values.tls.clientCa.mountPath }}
    readOnly: true
  {{- end }}
  {{- end }}
{{- include "meterd.probes" . }}
{{- if gt (int64 .Values.preStop.sleepSeconds) 0 }}
lifecycle:
  preStop:
    {{- if eq .Values.preStop.type "exec" }}
    exec:
      command: ["sleep", {{ int64 .Values.preStop.sleepSeconds | toString | quote }}]
    {{- else }}
    sleep:
      seconds: {{ int64 .Values.preStop.sleepSeconds }}
    {{- end }}
{{- end }}
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Volumes the container mounts (a YAML list): the product config, a writable /tmp (the root file
system is read-only) and the TLS Secrets. Files are 0444: only this container mounts them, and in
a gateway pod the fsGroup is not ours.
*/}}
{{- define "meterd.volumes" -}}
- name: meterd-config
  configMap:
    name: {{ include "meterd.componentName" (list . "config") }}
- name: meterd-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.tls.enabled }}
- name: meterd-tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 292 # 0444
    items:
      - key: {{ .Values.tls.certKey | quote }}
        path: {{ .Values.tls.certKey | quote }}
      - key: {{ .Values.tls.keyKey | quote }}
        path: {{ .Values.tls.keyKey | quote }}
{{- if .Values.tls.clientCa.enabled }}
- name: meterd-client-ca
  secret:
    secretName: {{ default .Values.tls.secretName .Values.tls.clientCa.secretName }}
    defaultMode: 292 # 0444
    items:
      - key: {{ .Values.tls.clientCa.key | quote }}
        path: {{ .Values.tls.clientCa.key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
For umbrella charts (mode sidecar): the meterd container as one YAML list item, to place under a
gateway pod's `containers:` (or `initContainers:` with sidecar.native: true). Example:
      containers:
        - name: gateway
          image: ...
        {{- include "meterd.sidecarContainer" $meterd | nindent 8 }}
      volumes:
        {{- include "meterd.sidecarVolumes" $meterd | nindent 8 }}
where $meterd := dict "Values" .Values.meterd "Release" .Release "Chart" (dict "Name" "meterd" "AppVersion" "0.1.0").
*/}}
{{- define "meterd.sidecarContainer" -}}
{{- $container := include "meterd.container" . }}
{{- if .Values.sidecar.native }}
{{- $container = printf "%s\nrestartPolicy: Always" $container }}
{{- end }}
{{- printf "- %s" ($container | indent 2 | trimPrefix "  ") }}
{{- end }}

{{/* For umbrella charts: the volumes meterd.sidecarContainer mounts (YAML list items). */}}
{{- define "meterd.sidecarVolumes" -}}
{{- include "meterd.volumes" . }}
{{- end }}

{{/* For umbrella charts: pod annotations that roll the gateway pods when meterd's config or secret values change. */}}
{{- define "meterd.sidecarPodAnnotations" -}}
{{- include "meterd.checksumAnnotations" . }}
{{- end }}
