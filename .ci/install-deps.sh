#!/usr/bin/env bash
# Installs every Debian 12 package logit needs to build, test, benchmark and run.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git openssl libssl-dev
  libtorch-dev libgloo-dev libonnx-dev python3-onnx libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libmicrohttpd-dev prometheus
  libgtest-dev libgmock-dev
  libcli11-dev nlohmann-json3-dev libyaml-cpp-dev libsqlite3-dev libspdlog-dev zlib1g-dev libzip-dev
  dataset-fashion-mnist
  python3-numpy python3-sklearn python3-torch python3-grpcio python3-yaml python3-kubernetes liblinear-tools docker-compose
)
# `kubectl kustomize` for tests/deploy/k8s_test.sh: Debian's kubernetes-client, unless a kubectl
# from another package already owns /usr/bin/kubectl (the two conflict).
command -v kubectl > /dev/null 2>&1 || PKGS+=(kubernetes-client)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
