#!/usr/bin/env bash
# Offline checks of docker-compose.yml (no Docker engine needed):
#   - `docker-compose -f docker-compose.yml config -q` accepts it (Debian 12's docker-compose
#     1.29.2, installed here when missing);
#   - from the resolved `docker-compose config` (PyYAML): the services logit-server, worker-1,
#     worker-2, prometheus and grafana; every bind-mounted file or directory and every secret
#     file exists; the secret files hold one token each, and differ; the server and the workers
#     are given the secrets they name (/run/secrets/NAME); the workers disable the image's
#     HEALTHCHECK (it asks the server's gRPC health service on 127.0.0.1); the named volumes;
#   - every scrape target of deploy/prometheus/prometheus.yml is SERVICE:PORT of a service in the
#     file, on the port it serves metrics on (--metrics-listen, or a container port it
#     publishes), and every logit-server / logit-worker service is scraped by the right job;
#   - Prometheus is given prometheus.yml at its --config.file and the rule files beside it, and
#     Grafana the provisioning and dashboard directories at the paths the provisioning names.
# Needs /usr/bin/python3 with PyYAML (python3-yaml).
#   bash tests/deploy/container_compose_test.sh
# Exits non-zero with "container_compose_test: FAIL: ..." lines.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-/usr/bin/python3}"
COMPOSE_FILE="${LOGIT_COMPOSE_FILE:-$ROOT/docker-compose.yml}"
PROMETHEUS_YML="${LOGIT_PROMETHEUS_YML:-$ROOT/deploy/prometheus/prometheus.yml}"

fail() { echo "container_compose_test: FAIL: $*" >&2; exit 1; }

[[ -x "$PY" ]] || fail "$PY not found"
"$PY" -c 'import yaml' 2>/dev/null || fail "$PY has no PyYAML (apt-get install python3-yaml)"
if ! command -v docker-compose >/dev/null; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "== installing docker-compose (Debian package)"
  $SUDO apt-get update >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends docker-compose \
    >/dev/null || fail "cannot install docker-compose"
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "== docker-compose config -q ($(docker-compose version --short 2>/dev/null || echo '?'))"
# No daemon is contacted by `config`; DOCKER_HOST is irrelevant to it.
docker-compose -f "$COMPOSE_FILE" --project-directory "$ROOT" config -q \
  || fail "docker-compose config -q rejects $COMPOSE_FILE"
docker-compose -f "$COMPOSE_FILE" --project-directory "$ROOT" config > "$TMP/config.yml" \
  || fail "docker-compose config"

echo "== services, mounts, secrets and Prometheus targets"
"$PY" - "$TMP/config.yml" "$PROMETHEUS_YML" "$ROOT" <<'EOF' || fail "see above"
import os, re, sys, yaml

config_path, prometheus_path, root = sys.argv[1:]
config = yaml.safe_load(open(config_path))
prom = yaml.safe_load(open(prometheus_path))
problems = []
services = config.get("services") or {}

WANT = ["logit-server", "worker-1", "worker-2", "prometheus", "grafana"]
for name in WANT:
    if name not in services:
        problems.append(f"no service {name} (services: {sorted(services)})")

def command(svc):
    c = svc.get("command") or []
    return c.split() if isinstance(c, str) else [str(a) for a in c]

def entry(svc):
    e = svc.get("entrypoint") or []
    return e.split() if isinstance(e, str) else [str(a) for a in e]

def flag(args, name):
    for i, a in enumerate(args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None

def kind(svc):
    """logit-server / logit-worker for the logit image's services (entrypoint, or the image's
    default entrypoint logit-server), None for others."""
    ep = entry(svc)
    if ep:
        base = os.path.basename(ep[0])
        return base if base in ("logit-server", "logit-worker") else None
    if (svc.get("build") or {}).get("dockerfile", "").endswith("deploy/Dockerfile"):
        return "logit-server"
    return None

def volumes(svc):
    """(source, target, type) of each mount, in the short or long syntax."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source"), v.get("target"), v.get("type")))
        else:
            parts = v.split(":")
            src, tgt = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
            out.append((src, tgt, "bind" if src and src.startswith(("/", ".")) else "volume"))
    return out

def container_ports(svc):
    ports = set()
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            ports.add(int(p["target"]))
        else:
            ports.add(int(str(p).split("/")[0].rsplit(":", 1)[-1]))
    for p in svc.get("expose") or []:
        ports.add(int(str(p).split("/")[0]))
    return ports

# Mounted files and directories exist (config resolves relative paths against the project dir).
mounts = {}
for name, svc in services.items():
    for src, tgt, typ in volumes(svc):
        if typ == "bind":
            path = src if os.path.isabs(src) else os.path.join(root, src)
            if not os.path.exists(path):
                problems.append(f"{name}: mounts {src}, which does not exist")
            mounts.setdefault(name, {})[tgt] = os.path.relpath(path, root)
        elif typ == "volume" and src not in (config.get("volumes") or {}):
            problems.append(f"{name}: volume {src} is not declared under volumes:")
for vol in ("logit-data", "prometheus-data", "grafana-data"):
    if vol not in (config.get("volumes") or {}):
        problems.append(f"named volume {vol} is not declared")

# Secrets: files exist, one token each, distinct; the services that name them get them.
secrets = config.get("secrets") or {}
tokens = {}
for name in ("client_token", "worker_token"):
    s = secrets.get(name)
    if not s or not s.get("file"):
        problems.append(f"no file-backed secret {name}")
        continue
    path = s["file"] if os.path.isabs(s["file"]) else os.path.join(root, s["file"])
    rel = os.path.relpath(path, root)
    if not os.path.isfile(path):
        problems.append(f"secret {name}: {rel} does not exist")
        continue
    if not rel.startswith("deploy/secrets/"):
        problems.append(f"secret {name}: {rel} is not under deploy/secrets/")
    lines = open(path).read().splitlines()
    if len(lines) != 1 or not re.fullmatch(r"\S{16,}", lines[0]):
        problems.append(f"secret {name}: {rel} must hold one token (16+ characters, no spaces) "
                        "on one line")
    else:
        tokens[name] = lines[0]
if len(tokens) == 2 and tokens["client_token"] == tokens["worker_token"]:
    problems.append("secrets client_token and worker_token hold the same token")

def attached(svc):
    return {s["source"] if isinstance(s, dict) else s for s in svc.get("secrets") or []}

for name, svc in services.items():
    args = command(svc)
    for a in args:
        for secret in re.findall(r"/run/secrets/([\w.-]+)", a):
            if secret not in attached(svc):
                problems.append(f"{name}: uses /run/secrets/{secret} but is not given secret {secret}")
            if secret not in secrets:
                problems.append(f"{name}: secret {secret} is not declared under secrets:")
    k = kind(svc)
    if k == "logit-server":
        if flag(args, "--auth-token-file") != "/run/secrets/client_token":
            problems.append(f"{name}: --auth-token-file should be /run/secrets/client_token")
        if flag(args, "--worker-token-file") != "/run/secrets/worker_token":
            problems.append(f"{name}: --worker-token-file should be /run/secrets/worker_token")
        if flag(args, "--advertise-host") != name:
            problems.append(f"{name}: --advertise-host should be its service name {name}")
        if flag(args, "--log-format") != "json":
            problems.append(f"{name}: --log-format should be json")
        if not any(t == "/var/lib/logit" and typ == "volume" for _, t, typ in volumes(svc)):
            problems.append(f"{name}: no named volume at /var/lib/logit")
    elif k == "logit-worker":
        token = flag(args, "--token-file")
        env = svc.get("environment") or {}
        if token != "/run/secrets/worker_token" and "LOGIT_TOKEN" not in env:
            problems.append(f"{name}: the worker should take --token-file=/run/secrets/worker_token")
        server = flag(args, "--server") or ""
        if server.rsplit(":", 1)[0] not in services:
            problems.append(f"{name}: --server {server} is not a service of the file")
        if flag(args, "--log-format") != "json":
            problems.append(f"{name}: --log-format should be json")
        hc = svc.get("healthcheck") or {}
        if not (hc.get("disable") or hc.get("test") in (["NONE"], "NONE")):
            test = hc.get("test")
            if not test or "127.0.0.1:50051" in " ".join(test if isinstance(test, list) else [test]):
                problems.append(f"{name}: must override the image's HEALTHCHECK (no gRPC server "
                                "in a worker container): healthcheck: disable: true")

# Prometheus targets <-> services.
def metrics_port(svc):
    listen = flag(command(svc), "--metrics-listen")
    if listen:
        return {int(listen.rsplit(":", 1)[1])}
    return container_ports(svc)

jobs = {c.get("job_name"): c for c in prom.get("scrape_configs") or []}
scraped = {}
for job_name, job in jobs.items():
    if job.get("dns_sd_configs"):
        for sd in job["dns_sd_configs"]:
            for n in sd.get("names") or []:
                scraped.setdefault(n, set()).add(job_name)
                if n not in services:
                    problems.append(f"{prometheus_path}: job {job_name}: DNS name {n} is not a service")
                elif int(sd.get("port", 0)) not in metrics_port(services[n]):
                    problems.append(f"{prometheus_path}: job {job_name}: {n} port {sd.get('port')} "
                                    f"is not where {n} serves metrics {sorted(metrics_port(services[n]))}")
    for sc in job.get("static_configs") or []:
        for target in sc.get("targets") or []:
            host, _, port = target.rpartition(":")
            scraped.setdefault(host, set()).add(job_name)
            if host not in services:
                problems.append(f"{prometheus_path}: job {job_name}: target {target}: no service "
                                f"{host} in docker-compose.yml")
            elif not port.isdigit() or int(port) not in metrics_port(services[host]):
                problems.append(f"{prometheus_path}: job {job_name}: target {target}: {host} serves "
                                f"metrics on {sorted(metrics_port(services[host]))}")
for name, svc in services.items():
    k = kind(svc)
    if k and k not in scraped.get(name, set()):
        problems.append(f"{prometheus_path}: service {name} ({k}) is not a target of job {k}")
    if k and not flag(command(svc), "--metrics-listen"):
        problems.append(f"{name}: no --metrics-listen")

# Prometheus gets its configuration and the rule files beside it.
p = services.get("prometheus")
if p:
    conf = flag(command(p), "--config.file") or "/etc/prometheus/prometheus.yml"
    m = mounts.get("prometheus", {})
    if m.get(conf) != os.path.relpath(prometheus_path, root):
        problems.append(f"prometheus: {conf} should be mounted from deploy/prometheus/prometheus.yml")
    for rule in prom.get("rule_files") or []:
        want = os.path.join(os.path.dirname(conf), rule)
        src = os.path.join(os.path.dirname(os.path.relpath(prometheus_path, root)), rule)
        if m.get(want) != src and m.get(os.path.dirname(want)) != os.path.dirname(src):
            problems.append(f"prometheus: rule file {rule} should be mounted at {want} from {src}")
    if 9090 not in container_ports(p):
        problems.append("prometheus: port 9090 is not published")
    if not any(t == "/prometheus" and typ == "volume" for _, t, typ in volumes(p)):
        problems.append("prometheus: no named volume at /prometheus")

# Grafana gets the provisioning and the dashboards where the provisioning looks for them.
g = services.get("grafana")
if g:
    m = mounts.get("grafana", {})
    want = {"/etc/grafana/provisioning/datasources": "deploy/grafana/provisioning/datasources",
            "/etc/grafana/provisioning/dashboards": "deploy/grafana/provisioning/dashboards"}
    for prov in yaml.safe_load(open(os.path.join(root, "deploy/grafana/provisioning/dashboards/logit.yml"))).get("providers") or []:
        want[prov["options"]["path"]] = "deploy/grafana/dashboards"
    for tgt, src in want.items():
        if m.get(tgt) != src and m.get("/etc/grafana/provisioning") != "deploy/grafana/provisioning":
            problems.append(f"grafana: {tgt} should be mounted from {src} (has {m})")
    if 3000 not in container_ports(g):
        problems.append("grafana: port 3000 is not published")
    if not any(t == "/var/lib/grafana" and typ == "volume" for _, t, typ in volumes(g)):
        problems.append("grafana: no named volume at /var/lib/grafana")
    ds = yaml.safe_load(open(os.path.join(root, "deploy/grafana/provisioning/datasources/prometheus.yml")))
    for d in ds.get("datasources") or []:
        m2 = re.match(r"https?://([^:/]+):(\d+)", d.get("url", ""))
        if m2 and (m2.group(1) not in services or int(m2.group(2)) not in container_ports(services[m2.group(1)])):
            problems.append(f"grafana datasource {d.get('name')}: {d['url']} is not a service port")

if problems:
    print("\n".join(f"container_compose_test: FAIL: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
print(f"  {len(services)} services ({', '.join(sorted(services))}); "
      f"{sum(len(v) for v in mounts.values())} bind mounts and {len(secrets)} secrets present; "
      f"{len(scraped)} scrape targets, each a service's metrics port")
EOF
echo "container_compose_test: OK"
