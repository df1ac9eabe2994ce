#!/usr/bin/env bash
# Offline test of the Kubernetes manifests (deploy/k8s/): renders base, overlays/gpu,
# overlays/kubeflow and overlays/tls with `kubectl kustomize`, checks every object's structure
# and logit's invariants (tests/deploy/k8s_validate.py: built-in kinds strictly against the
# models of python3-kubernetes, i.e. the Kubernetes 1.22 API plus a short allow-list of newer
# fields such as the native gRPC probe; CRDs against a small explicit spec in that script).
# Then checks the checker: copies of the manifests with a planted mistake (a misspelt field, a
# wrong type, a misspelt CRD field, a misspelt field in the PyTorchJob's pod template; in the TLS
# overlay a wrong --tls-client-ca path, a gRPC probe left beside the exec probe, a misnamed
# worker Secret) must fail.
# No cluster, no network and no schema files needed.
#
# Needs (Debian 12): kubernetes-client (kubectl; or set KUBECTL=/path/to/kubectl),
# python3-kubernetes, python3-yaml:
#   apt-get install -y --no-install-recommends kubernetes-client python3-kubernetes python3-yaml
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY=/usr/bin/python3
KUBECTL="${KUBECTL:-kubectl}"
export KUBECTL

die() {
  echo "k8s_test: FAIL: $*" >&2
  exit 1
}

[[ -x "$PY" ]] || die "$PY not found (apt-get install python3)"
command -v "$KUBECTL" >/dev/null 2>&1 ||
  die "'$KUBECTL' not found: apt-get install kubernetes-client, or set KUBECTL=/path/to/kubectl"
"$PY" -c 'import kubernetes.client, yaml' 2>/dev/null ||
  die "$PY lacks kubernetes or yaml: apt-get install python3-kubernetes python3-yaml"
[[ -d "$ROOT/deploy/k8s/base" ]] || die "no deploy/k8s/base under $ROOT"

passed=0
failed=0

# 1. The manifests as committed.
echo "k8s_test: validating $ROOT/deploy/k8s"
if "$PY" "$HERE/k8s_validate.py" --k8s-dir "$ROOT/deploy/k8s"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  echo "k8s_test: FAIL: the manifests under deploy/k8s/ do not pass (problems listed above)" >&2
fi

# 2. The checker itself: each planted mistake, in a fresh copy, must be rejected with the
#    expected message (fixed strings, grep -F).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# plant LABEL FILE (under deploy/k8s/) SED-EXPRESSION EXPECTED-MESSAGE
plant() {
  local label="$1" file="$2" expr="$3" expected="$4" out rc
  rm -rf "$tmp/k8s"
  cp -r "$ROOT/deploy/k8s" "$tmp/k8s"
  sed -i "$expr" "$tmp/k8s/$file"
  if cmp -s "$ROOT/deploy/k8s/$file" "$tmp/k8s/$file"; then
    failed=$((failed + 1))
    echo "k8s_test: FAIL: could not plant $label in the copy of deploy/k8s/$file" >&2
    return
  fi
  set +e
  out="$("$PY" "$HERE/k8s_validate.py" --k8s-dir "$tmp/k8s" 2>&1)"
  rc=$?
  set -e
  if [[ $rc -eq 1 ]] && grep -qF -- "$expected" <<<"$out"; then
    echo "k8s_test: $label in a copy is rejected, as it should be"
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "$out" >&2
    echo "k8s_test: FAIL: a copy with $label was not rejected as expected (exit $rc;" \
      "wanted: $expected)" >&2
  fi
}

plant "a misspelt field (readinesProbe)" base/server-statefulset.yaml \
  's/^\( *\)readinessProbe:/\1readinesProbe:/' \
  "spec.template.spec.containers[0].readinesProbe: unknown field 'readinesProbe' in V1Container"
plant "a string where an integer belongs (replicas: \"2\")" base/worker-deployment.yaml \
  's/^\( *\)replicas: 2$/\1replicas: "2"/' \
  "Deployment/logit-worker: spec.replicas: expected an integer"
plant "a string gRPC probe port" base/server-statefulset.yaml \
  '0,/^\( *\)port: 50051$/s//\1port: "50051"/' \
  "spec.template.spec.containers[0].startupProbe.grpc.port: expected an integer"
plant "a misspelt ServiceMonitor field (honourLabels)" base/monitoring.yaml \
  '0,/^\( *\)honorLabels:/s//\1honourLabels:/' \
  "ServiceMonitor/logit-server: spec.endpoints[0].honourLabels: unknown field"
plant "a misspelt field in the PyTorchJob's pod template (imagePulPolicy)" \
  overlays/kubeflow/pytorchjob.yaml \
  '0,/^\( *\)imagePullPolicy:/s//\1imagePulPolicy:/' \
  "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].imagePulPolicy: unknown field"

plant "a wrong --tls-client-ca path in the TLS overlay" overlays/tls/server-tls.yaml \
  's#value: --tls-client-ca=/etc/logit/tls/ca.crt#value: --tls-client-ca=/etc/logit/ca.crt#' \
  "StatefulSet/logit-server: args need --tls-client-ca=/etc/logit/tls/ca.crt once"
plant "a plaintext gRPC probe left beside the TLS overlay's exec probe" \
  overlays/tls/server-tls.yaml \
  '0,/^    exec:$/s//    grpc: {port: 50051}\n    exec:/' \
  "StatefulSet/logit-server startupProbe: must be an exec probe and nothing else"
plant "a misnamed workers' TLS Secret" overlays/tls/worker-tls.yaml \
  's/secretName: logit-worker-tls$/secretName: logit-server-tls/' \
  "Deployment/logit-worker: the volume at /etc/logit/tls must be Secret logit-worker-tls"

echo "k8s_test: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
