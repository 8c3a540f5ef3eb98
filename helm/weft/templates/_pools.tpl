{{/*
Worker pools (worker.pools). "weft.worker.resolvePools" takes
(dict "ctx" $ "out" (dict)) and sets out.pools to the list of pools to render,
each the top-level worker values with the pool's own over them:
  - replaced when the pool sets them: capabilities, capacity, concurrency,
    types, replicas, resources, nodeSelector, tolerations, affinity,
    podAntiAffinity, priorityClassName, extraEnv;
  - merged over the top-level ones: autoscaling, keda, topologySpread,
    podDisruptionBudget, podLabels, podAnnotations;
plus "pool" (the pool's name, the weft.io/pool label) and "fullname" (its
Deployment's name). With worker.pools empty the one entry is today's single
worker: pool "" and the Deployment <fullname>-worker, unchanged.
A pool name given twice fails the render.
*/}}
{{- define "weft.worker.resolvePools" -}}
{{- $ctx := .ctx -}}
{{- $w := $ctx.Values.worker -}}
{{- $base := omit $w "pools" -}}
{{- $pools := list -}}
{{- if not $w.pools -}}
{{- $p := deepCopy $base -}}
{{- $_ := set $p "pool" "" -}}
{{- $_ := set $p "fullname" (include "weft.worker.fullname" $ctx) -}}
{{- $pools = append $pools $p -}}
{{- else -}}
{{- $seen := dict -}}
{{- range $i, $pool := $w.pools -}}
{{- if hasKey $seen $pool.name -}}
{{- $msg := printf "worker.pools[%d]: the pool name '%s' is already used by worker.pools[%v]: each pool needs a name of its own" $i $pool.name (index $seen $pool.name) -}}
{{- fail $msg -}}
{{- /* `helm lint` turns fail into a log line and goes on: fail it anyway,
with the message as the name of a template that does not exist. */ -}}
{{- include $msg $ctx -}}
{{- end -}}
{{- $_ := set $seen $pool.name $i -}}
{{- $p := deepCopy $base -}}
{{- range $key := list "capabilities" "capacity" "concurrency" "types" "replicas" "resources" "nodeSelector" "tolerations" "affinity" "podAntiAffinity" "priorityClassName" "extraEnv" -}}
{{- if hasKey $pool $key }}{{ $_ := set $p $key (deepCopy (index $pool $key)) }}{{ end -}}
{{- end -}}
{{- range $key := list "autoscaling" "keda" "topologySpread" "podDisruptionBudget" "podLabels" "podAnnotations" -}}
{{- if hasKey $pool $key -}}
{{- /* Key by key (these maps are flat): mergeOverwrite would skip false and 0. */ -}}
{{- $m := deepCopy (index $base $key) -}}
{{- range $k, $v := index $pool $key }}{{ $_ := set $m $k $v }}{{ end -}}
{{- $_ := set $p $key $m -}}
{{- end -}}
{{- end -}}
{{- $_ := set $p "pool" $pool.name -}}
{{- $_ := set $p "fullname" (printf "%s-%s" (include "weft.worker.fullname" $ctx) $pool.name) -}}
{{- $pools = append $pools $p -}}
{{- end -}}
{{- end -}}
{{- $_ := set .out "pools" $pools -}}
{{- end -}}

{{/* A capacity map as worker.resources entries: {cpu: 4} -> ["cpu=4"], sorted by name. */}}
{{- define "weft.worker.resourceList" -}}
{{- $out := list -}}
{{- range $name, $amount := . -}}
{{- $out = append $out (printf "%s=%d" $name (int64 $amount)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
