{{/*
Ferry in a pod spec. Every template here takes Ferry's values alone (this chart's .Values, or a
parent chart's .Values.ferry when it depends on this chart), so any chart can include them:

  initContainers:
    {{- include "ferry.initContainers" .Values.ferry | nindent 4 }}   # the native sidecar
  containers:
    - name: app
      env: {{- include "ferry.appEnv" .Values.ferry | nindent 8 }}    # FERRY_ADDR
      volumeMounts: {{- include "ferry.appVolumeMounts" .Values.ferry | nindent 8 }}
    {{- include "ferry.containers" .Values.ferry | nindent 4 }}       # the classic sidecar
  volumes: {{- include "ferry.volumes" .Values.ferry | nindent 4 }}

"ferry.sidecar" is the container itself, one list item. The pod also needs fsGroup 10001 and a
terminationGracePeriodSeconds above "ferry.shutdownBudgetSeconds" (see docs/operations.md).
*/}}

{{/* Settings the chart sets from its own values; ferry.config may not set them. */}}
{{- define "ferry.managedSettings" -}}
listen: listen.port, listen.mode
listen_socket_mode: listen.socketMode
insecure_bind_all: listen.mode with tls.secretName
tls_cert: tls.secretName
tls_key: tls.secretName
tls_client_ca: tls.clientAuth
token_file: tokens.files
tokens: tokens.secretName (a Secret; never a value)
policy_file: policy.configMapName or policy.secretName
data_dir: wal.mountPath
metrics_listen: metrics.enabled, metrics.port
drain_grace_s: drainGraceSeconds
kafka_bootstrap: kafka.bootstrap
kafka_security_protocol: kafka.securityProtocol
kafka_sasl_mechanism: kafka.sasl.mechanism
kafka_sasl_username: kafka.sasl.username
kafka_sasl_password_file: kafka.sasl.passwordSecret
kafka_oauth_client_id: kafka.oauth.clientId
kafka_oauth_client_secret_file: kafka.oauth.clientSecretSecret
kafka_oauth_token_endpoint: kafka.oauth.tokenEndpoint
kafka_oauth_scope: kafka.oauth.scope
kafka_ssl_ca: kafka.tls.caSecret
kafka_ssl_cert: kafka.tls.clientCertSecretName
kafka_ssl_key: kafka.tls.clientCertSecretName
kafka_ssl_key_password_file: kafka.tls.keyPasswordSecret
kafka_ssl_verify: kafka.tls.verifyHostname
{{- end -}}

{{/* Refuses combinations that cannot work, naming the values to change. */}}
{{- define "ferry.validate" -}}
{{- $managed := include "ferry.managedSettings" . | fromYaml -}}
{{- range $name, $_ := .config -}}
{{- if hasKey $managed $name -}}
{{- fail (printf "config.%s: the chart sets %s itself; use %s" $name $name (get $managed $name)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .listen.mode "unix") .tls.secretName -}}
{{- fail "tls.secretName: TLS is for listen.mode tcp; a unix socket is reached through its file only" -}}
{{- end -}}
{{- if and .tls.secretName (not .tls.serverName) -}}
{{- fail "tls.serverName: the probes verify Ferry's certificate for this name; set the name it is issued for" -}}
{{- end -}}
{{- if and .tls.clientAuth (not .tls.secretName) -}}
{{- fail "tls.clientAuth needs tls.secretName (its ca.crt signs the client certificates)" -}}
{{- end -}}
{{- if and .tls.clientAuth (not .tls.probeClientSecretName) -}}
{{- fail "tls.probeClientSecretName: with mutual TLS the probes need a client certificate (a kubernetes.io/tls Secret signed by the client CA)" -}}
{{- end -}}
{{- if and .policy.configMapName .policy.secretName -}}
{{- fail "policy: give configMapName or secretName, not both" -}}
{{- end -}}
{{- if and .kafka.sasl.passwordSecret.name (not .kafka.sasl.username) -}}
{{- fail "kafka.sasl.username: a SASL password needs its username" -}}
{{- end -}}
{{- end -}}

{{/* Ferry's shutdown budget in seconds: it exits within --drain-grace-s + 16 s (README, Guarantees). */}}
{{- define "ferry.shutdownBudgetSeconds" -}}
{{- add (ceil .drainGraceSeconds | int) 16 -}}
{{- end -}}

{{- define "ferry.dataDir" -}}
{{- printf "%s/wal" (trimSuffix "/" .wal.mountPath) -}}
{{- end -}}

{{/* Where the application dials Ferry. */}}
{{- define "ferry.address" -}}
{{- if eq .listen.mode "unix" -}}
{{- printf "unix://%s" .listen.socketPath -}}
{{- else -}}
{{- printf "127.0.0.1:%v" .listen.port -}}
{{- end -}}
{{- end -}}

{{/* A setting's value as its FERRY_* variable reads it: lists joined with commas, maps as
k=v,k=v, whole numbers without an exponent. */}}
{{- define "ferry.settingValue" -}}
{{- $v := . -}}
{{- if kindIs "slice" $v -}}
{{- $items := list -}}
{{- range $v }}{{ $items = append $items (include "ferry.settingValue" .) }}{{ end -}}
{{- join "," $items -}}
{{- else if kindIs "map" $v -}}
{{- $pairs := list -}}
{{- range $k, $x := $v }}{{ $pairs = append $pairs (printf "%s=%s" $k (include "ferry.settingValue" $x)) }}{{ end -}}
{{- join "," $pairs -}}
{{- else if and (kindIs "float64" $v) (eq $v (floor $v)) -}}
{{- printf "%.0f" $v -}}
{{- else -}}
{{- $v | toString -}}
{{- end -}}
{{- end -}}

{{- define "ferry.secretFile" -}}
{{- printf "/etc/ferry/%s/%s" .dir .key -}}
{{- end -}}

{{/* Ferry's environment: every setting is a FERRY_* variable. */}}
{{- define "ferry.env" -}}
{{- $tcp := eq .listen.mode "tcp" -}}
- name: FERRY_LISTEN
  value: {{ ternary (printf "0.0.0.0:%v" .listen.port) (printf "unix://%s" .listen.socketPath) $tcp | quote }}
{{- if not $tcp }}
- name: FERRY_LISTEN_SOCKET_MODE
  value: {{ .listen.socketMode | quote }}
{{- end }}
{{- if and $tcp (not .tls.secretName) }}
- name: FERRY_INSECURE_BIND_ALL
  value: "true"
{{- end }}
{{- if .tls.secretName }}
- name: FERRY_TLS_CERT
  value: /etc/ferry/tls/tls.crt
- name: FERRY_TLS_KEY
  value: /etc/ferry/tls/tls.key
{{- if .tls.clientAuth }}
- name: FERRY_TLS_CLIENT_CA
  value: /etc/ferry/tls/ca.crt
{{- end }}
{{- end }}
- name: FERRY_DATA_DIR
  value: {{ include "ferry.dataDir" . | quote }}
{{- /* Empty disables the metrics listener; in the pod it listens on every address to be scraped. */}}
- name: FERRY_METRICS_LISTEN
  value: {{ ternary (printf "0.0.0.0:%v" .metrics.port) "" .metrics.enabled | quote }}
- name: FERRY_DRAIN_GRACE_S
  value: {{ include "ferry.settingValue" .drainGraceSeconds | quote }}
- name: FERRY_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required" .kafka.bootstrap | quote }}
{{- with .kafka.securityProtocol }}
- name: FERRY_KAFKA_SECURITY_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- with .kafka.sasl.mechanism }}
- name: FERRY_KAFKA_SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{- with .kafka.sasl.username }}
- name: FERRY_KAFKA_SASL_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- with .kafka.sasl.passwordSecret }}{{ if .name }}
- name: FERRY_KAFKA_SASL_PASSWORD_FILE
  value: {{ include "ferry.secretFile" (dict "dir" "kafka/sasl" "key" .key) }}
{{- end }}{{ end }}
{{- with .kafka.oauth.clientId }}
- name: FERRY_KAFKA_OAUTH_CLIENT_ID
  value: {{ . | quote }}
{{- end }}
{{- with .kafka.oauth.clientSecretSecret }}{{ if .name }}
- name: FERRY_KAFKA_OAUTH_CLIENT_SECRET_FILE
  value: {{ include "ferry.secretFile" (dict "dir" "kafka/oauth" "key" .key) }}
{{- end }}{{ end }}
{{- with .kafka.oauth.tokenEndpoint }}
- name: FERRY_KAFKA_OAUTH_TOKEN_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .kafka.oauth.scope }}
- name: FERRY_KAFKA_OAUTH_SCOPE
  value: {{ . | quote }}
{{- end }}
{{- with .kafka.tls.caSecret }}{{ if .name }}
- name: FERRY_KAFKA_SSL_CA
  value: {{ include "ferry.secretFile" (dict "dir" "kafka/ca" "key" .key) }}
{{- end }}{{ end }}
{{- if .kafka.tls.clientCertSecretName }}
- name: FERRY_KAFKA_SSL_CERT
  value: /etc/ferry/kafka/client/tls.crt
- name: FERRY_KAFKA_SSL_KEY
  value: /etc/ferry/kafka/client/tls.key
{{- end }}
{{- with .kafka.tls.keyPasswordSecret }}{{ if .name }}
- name: FERRY_KAFKA_SSL_KEY_PASSWORD_FILE
  value: {{ include "ferry.secretFile" (dict "dir" "kafka/key-password" "key" .key) }}
{{- end }}{{ end }}
{{- if not .kafka.tls.verifyHostname }}
- name: FERRY_KAFKA_SSL_VERIFY
  value: "false"
{{- end }}
{{- if .tokens.secretName }}
- name: FERRY_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ .tokens.secretName | quote }}
      key: {{ .tokens.key | quote }}
{{- end }}
{{- with .tokens.files }}
{{- $paths := list }}
{{- range $i, $file := . }}
{{- $paths = append $paths (include "ferry.secretFile" (dict "dir" (printf "tokens/%d" $i) "key" $file.key)) }}
{{- end }}
- name: FERRY_TOKEN_FILE
  value: {{ join "," $paths | quote }}
{{- end }}
{{- if or .policy.configMapName .policy.secretName }}
- name: FERRY_POLICY_FILE
  value: {{ include "ferry.secretFile" (dict "dir" "policy" "key" .policy.key) }}
{{- end }}
{{- range $name, $value := .config }}
- name: {{ printf "FERRY_%s" (upper $name) }}
  value: {{ include "ferry.settingValue" $value | quote }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A Secret mounted read-only as a directory (never subPath: the kubelet updates these). */}}
{{- define "ferry.secretVolume" -}}
- name: {{ .volume }}
  secret:
    secretName: {{ .secret | quote }}
    defaultMode: 0440
{{- end -}}

{{- define "ferry.volumeMounts" -}}
- name: ferry-wal
  mountPath: {{ .wal.mountPath }}
{{- if eq .listen.mode "unix" }}
- name: ferry-socket
  mountPath: {{ dir .listen.socketPath }}
{{- end }}
{{- if .tls.secretName }}
- name: ferry-tls
  mountPath: /etc/ferry/tls
  readOnly: true
{{- end }}
{{- if .tls.probeClientSecretName }}
- name: ferry-probe-tls
  mountPath: /etc/ferry/probe-tls
  readOnly: true
{{- end }}
{{- range $i, $_ := .tokens.files }}
- name: {{ printf "ferry-tokens-%d" $i }}
  mountPath: {{ printf "/etc/ferry/tokens/%d" $i }}
  readOnly: true
{{- end }}
{{- if or .policy.configMapName .policy.secretName }}
- name: ferry-policy
  mountPath: /etc/ferry/policy
  readOnly: true
{{- end }}
{{- range $volume, $secret := include "ferry.kafkaSecrets" . | fromYaml }}
- name: {{ printf "ferry-kafka-%s" $volume }}
  mountPath: {{ printf "/etc/ferry/kafka/%s" $volume }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The Kafka Secrets to mount: directory name -> Secret name. */}}
{{- define "ferry.kafkaSecrets" -}}
{{- with .kafka.sasl.passwordSecret.name }}
sasl: {{ . | quote }}
{{- end }}
{{- with .kafka.oauth.clientSecretSecret.name }}
oauth: {{ . | quote }}
{{- end }}
{{- with .kafka.tls.caSecret.name }}
ca: {{ . | quote }}
{{- end }}
{{- with .kafka.tls.clientCertSecretName }}
client: {{ . | quote }}
{{- end }}
{{- with .kafka.tls.keyPasswordSecret.name }}
key-password: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The pod volumes Ferry needs. */}}
{{- define "ferry.volumes" -}}
{{- if and .wal.persistence.enabled .wal.persistence.existingClaim }}
- name: ferry-wal
  persistentVolumeClaim:
    claimName: {{ .wal.persistence.existingClaim | quote }}
{{- else if not .wal.persistence.enabled }}
- name: ferry-wal
  emptyDir:
    {{- with .wal.emptyDir.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
    {{- with .wal.emptyDir.medium }}
    medium: {{ . }}
    {{- end }}
{{- end }}
{{- if eq .listen.mode "unix" }}
- name: ferry-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- with .tls.secretName }}
{{ include "ferry.secretVolume" (dict "volume" "ferry-tls" "secret" .) }}
{{- end }}
{{- with .tls.probeClientSecretName }}
{{ include "ferry.secretVolume" (dict "volume" "ferry-probe-tls" "secret" .) }}
{{- end }}
{{- range $i, $file := .tokens.files }}
{{ include "ferry.secretVolume" (dict "volume" (printf "ferry-tokens-%d" $i) "secret" (required "tokens.files[].secretName is required" $file.secretName)) }}
{{- end }}
{{- if .policy.configMapName }}
- name: ferry-policy
  configMap:
    name: {{ .policy.configMapName | quote }}
{{- else if .policy.secretName }}
{{ include "ferry.secretVolume" (dict "volume" "ferry-policy" "secret" .policy.secretName) }}
{{- end }}
{{- range $volume, $secret := include "ferry.kafkaSecrets" . | fromYaml }}
{{ include "ferry.secretVolume" (dict "volume" (printf "ferry-kafka-%s" $volume) "secret" $secret) }}
{{- end }}
{{- end -}}

{{/* The StatefulSet's claim for the log (wal.persistence without existingClaim). */}}
{{- define "ferry.volumeClaimTemplates" -}}
- metadata:
    name: ferry-wal
  spec:
    accessModes: {{- toYaml .wal.persistence.accessModes | nindent 6 }}
    {{- with .wal.persistence.storageClassName }}
    storageClassName: {{ . | quote }}
    {{- end }}
    resources:
      requests:
        storage: {{ .wal.persistence.size }}
{{- end -}}

{{/* A Python health check for exec probes (a unix socket, or TLS, which the kubelet's gRPC
probes cannot speak): target, service, timeout [, CA file, server name [, cert, key]]. It runs
with the image's own Python and grpcio; exit 0 only on SERVING. */}}
{{- define "ferry.healthCheckScript" -}}
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
target, service, timeout, ca, name, cert, key = (sys.argv[1:] + [""] * 7)[:7]
def read(path):
    with open(path, "rb") as f:
        return f.read()
if ca:
    creds = grpc.ssl_channel_credentials(
        read(ca), read(key) if key else None, read(cert) if cert else None
    )
    channel = grpc.secure_channel(target, creds, [("grpc.ssl_target_name_override", name)])
else:
    channel = grpc.insecure_channel(target)
try:
    request = health_pb2.HealthCheckRequest(service=service)
    status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=float(timeout)).status
except grpc.RpcError as error:
    sys.exit(f"{target} {service!r}: {error.code().name}")
if status != health_pb2.HealthCheckResponse.SERVING:
    sys.exit(f"{target} {service!r}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
{{- end -}}

{{/* One probe: gRPC on the port (plaintext TCP), else the exec health check. */}}
{{- define "ferry.probe" -}}
{{- $v := .values -}}
{{- $p := .probe -}}
{{- if and (eq $v.listen.mode "tcp") (not $v.tls.secretName) -}}
grpc:
  port: {{ $v.listen.port }}
  service: {{ $p.service | quote }}
{{- else -}}
{{- $args := list "python3" "-c" (include "ferry.healthCheckScript" .) -}}
{{- if eq $v.listen.mode "unix" -}}
{{- $args = append $args (printf "unix://%s" $v.listen.socketPath) -}}
{{- else -}}
{{- $args = append $args (printf "127.0.0.1:%v" $v.listen.port) -}}
{{- end -}}
{{- $args = concat $args (list $p.service (printf "%v" (sub $p.timeoutSeconds 1 | max 1))) -}}
{{- if $v.tls.secretName -}}
{{- $args = concat $args (list "/etc/ferry/tls/ca.crt" $v.tls.serverName) -}}
{{- if $v.tls.probeClientSecretName -}}
{{- $args = concat $args (list "/etc/ferry/probe-tls/tls.crt" "/etc/ferry/probe-tls/tls.key") -}}
{{- end -}}
{{- end -}}
exec:
  command: {{- toYaml $args | nindent 4 }}
{{- end }}
periodSeconds: {{ $p.periodSeconds }}
timeoutSeconds: {{ $p.timeoutSeconds }}
failureThreshold: {{ $p.failureThreshold }}
{{- end -}}

{{/* The Ferry container, as one list item. */}}
{{- define "ferry.sidecar" -}}
{{- include "ferry.validate" . -}}
- name: ferry
  image: {{ include "ferry.imageRef" .image | quote }}
  imagePullPolicy: {{ .image.pullPolicy }}
  {{- if .nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  {{- with .extraArgs }}
  args: {{- toYaml . | nindent 4 }}
  {{- end }}
  env: {{- include "ferry.env" . | trim | nindent 4 }}
  {{- if or (eq .listen.mode "tcp") .metrics.enabled }}
  ports:
    {{- if eq .listen.mode "tcp" }}
    - name: ferry-grpc
      containerPort: {{ .listen.port }}
      protocol: TCP
    {{- end }}
    {{- if .metrics.enabled }}
    - name: ferry-metrics
      containerPort: {{ .metrics.port }}
      protocol: TCP
    {{- end }}
  {{- end }}
  startupProbe: {{- include "ferry.probe" (dict "values" . "probe" .probes.startup) | nindent 4 }}
  readinessProbe: {{- include "ferry.probe" (dict "values" . "probe" .probes.readiness) | nindent 4 }}
  livenessProbe: {{- include "ferry.probe" (dict "values" . "probe" .probes.liveness) | nindent 4 }}
  resources: {{- toYaml .resources | nindent 4 }}
  securityContext: {{- toYaml .securityContext | nindent 4 }}
  volumeMounts: {{- include "ferry.volumeMounts" . | trim | nindent 4 }}
{{- end -}}

{{/* The sidecar in initContainers when native, else nothing. */}}
{{- define "ferry.initContainers" -}}
{{- if .nativeSidecar }}{{ include "ferry.sidecar" . }}{{ end -}}
{{- end -}}

{{/* The sidecar in containers when classic, else nothing. */}}
{{- define "ferry.containers" -}}
{{- if not .nativeSidecar }}{{ include "ferry.sidecar" . }}{{ end -}}
{{- end -}}

{{/* The application's environment entry naming Ferry's address. */}}
{{- define "ferry.appEnv" -}}
- name: FERRY_ADDR
  value: {{ include "ferry.address" . | quote }}
{{- end -}}

{{/* The application's mount of Ferry's socket directory (listen.mode unix), else nothing. */}}
{{- define "ferry.appVolumeMounts" -}}
{{- if eq .listen.mode "unix" -}}
- name: ferry-socket
  mountPath: {{ dir .listen.socketPath }}
{{- end -}}
{{- end -}}

{{/* Prometheus' scrape annotations for the pod (metrics.podAnnotations). */}}
{{- define "ferry.podAnnotations" -}}
{{- if and .metrics.enabled .metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metrics.port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}
