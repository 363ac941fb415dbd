{{/* The chart's name in labels and object names: nameOverride, or dhis2-operator. */}}
{{- define "dhis2-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: fullnameOverride, else the release name when it already says the
chart's name, else RELEASE-NAME. */}}
{{- define "dhis2-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "dhis2-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dhis2-operator.serviceAccountName" -}}
{{- default (include "dhis2-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "dhis2-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "dhis2-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dhis2-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dhis2-operator.labels" -}}
{{ include "dhis2-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* The namespace the operator watches: one in namespaced mode, all ("") otherwise. */}}
{{- define "dhis2-operator.watchNamespace" -}}
{{- if eq .Values.rbac.mode "namespaced" -}}{{ first .Values.rbac.namespaces }}{{- end -}}
{{- end -}}

{{/*
The operator's rights, the same in a ClusterRole (cluster mode) and a Role (namespaced mode):
exactly what the controllers use (tests/crds.rs checks both are identical and least-privilege).
*/}}
{{- define "dhis2-operator.rules" }}
  # The custom resources: watched; the dedicated database applied; finalizers added/removed.
  # Instances are also created (a restore into a new instance) and scaled (stopped during a
  # restore); backups, restores and drills are created by schedules and pruned by history limits.
  - apiGroups: ["dhis2operator.io"]
    resources: ["dhis2instances", "dhis2databases", "dhis2backups", "dhis2backupschedules", "dhis2restores", "dhis2drills", "dhis2promotions"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  - apiGroups: ["dhis2operator.io"]
    resources: ["dhis2instances/status", "dhis2databases/status", "dhis2backups/status", "dhis2backupschedules/status", "dhis2restores/status", "dhis2drills/status", "dhis2promotions/status"]
    verbs: ["patch"]
  # Owner references that block owner deletion need this where the
  # OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift).
  - apiGroups: ["dhis2operator.io"]
    resources: ["dhis2instances/finalizers", "dhis2databases/finalizers", "dhis2backups/finalizers", "dhis2backupschedules/finalizers", "dhis2restores/finalizers", "dhis2drills/finalizers", "dhis2promotions/finalizers"]
    verbs: ["update"]
  # The engine's Jobs (backup, restore, drill): created, watched, deleted when they vanish or
  # are superseded. Their pods are read for the engine's report (the termination message).
  - apiGroups: ["batch"]
    resources: ["jobs"]
    verbs: ["get", "list", "watch", "create", "delete"]
  # Pods: read for Job reports; a drill's throw-away PostGIS pod created and deleted.
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch", "create", "delete"]
  # Children: watched (the controllers' owns), applied; garbage collection deletes them.
  - apiGroups: ["apps"]
    resources: ["deployments", "statefulsets"]
    verbs: ["get", "list", "watch", "create", "patch"]
  - apiGroups: [""]
    resources: ["services"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # Claims: the file store applied, the database volume expanded (patch), both deleted only
  # under deletionPolicy: Delete.
  - apiGroups: [""]
    resources: ["persistentvolumeclaims"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # Secrets only by name (credentials, dhis.conf, the Secrets a resource names): no list, no
  # watch, so the operator never sees Secrets nothing refers to.
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "create", "patch", "delete"]
  # Ingresses: applied, and pruned when spec.hostname goes.
  - apiGroups: ["networking.k8s.io"]
    resources: ["ingresses"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
  # provider: cnpg: CloudNativePG's Cluster and ScheduledBackup and the Barman Cloud plugin's
  # ObjectStore, applied (CloudNativePG runs them; the operator reads their status); the
  # archive's objects deleted when archiving is turned off. Clusters go only by garbage
  # collection, under deletionPolicy: Delete.
  - apiGroups: ["postgresql.cnpg.io"]
    resources: ["clusters"]
    verbs: ["get", "create", "patch"]
  - apiGroups: ["postgresql.cnpg.io"]
    resources: ["scheduledbackups"]
    verbs: ["get", "create", "patch", "delete"]
  - apiGroups: ["barmancloud.cnpg.io"]
    resources: ["objectstores"]
    verbs: ["get", "create", "patch", "delete"]
{{- end -}}

{{/* The kind of the roles for people: cluster-wide only in cluster mode. */}}
{{- define "dhis2-operator.userRoleKind" -}}
{{- if eq .Values.rbac.mode "cluster" }}ClusterRole{{ else }}Role{{ end }}
{{- end }}
