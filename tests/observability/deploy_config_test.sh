#!/usr/bin/env bash
# Offline checks of the monitoring deployment files (no Prometheus, Grafana or build needed):
#   deploy/prometheus/prometheus.yml, alerts.yml, alerts_test.yml
#   deploy/grafana/provisioning/{datasources,dashboards}/*.yml, deploy/grafana/dashboards/*.json
# Needs promtool (Debian package prometheus, 2.42) and /usr/bin/python3 with PyYAML
# (python3-yaml).
#   bash tests/observability/deploy_config_test.sh
# Exits non-zero with a "deploy_config_test: FAIL: ..." line on the first failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-/usr/bin/python3}"
PROM=deploy/prometheus
GRAFANA=deploy/grafana
DASHBOARD="$GRAFANA/dashboards/logit.json"
QUERIES=tests/observability/dashboard_queries.py

fail() { echo "deploy_config_test: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

command -v promtool >/dev/null || fail "promtool not found (apt-get install prometheus)"
[[ -x "$PY" ]] || fail "$PY not found"
"$PY" -c 'import yaml' 2>/dev/null || fail "$PY has no PyYAML (apt-get install python3-yaml)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

step "promtool check config $PROM/prometheus.yml (and the rule files it loads)"
promtool check config "$PROM/prometheus.yml" || fail "promtool check config $PROM/prometheus.yml"

step "promtool check rules $PROM/alerts.yml"
promtool check rules "$PROM/alerts.yml" || fail "promtool check rules $PROM/alerts.yml"

step "promtool test rules $PROM/alerts_test.yml"
promtool test rules "$PROM/alerts_test.yml" || fail "promtool test rules $PROM/alerts_test.yml"

step "alerts: severity, summary, description, one-line runbook; each fires and stays quiet in a test"
"$PY" - "$PROM/prometheus.yml" "$PROM/alerts.yml" "$PROM/alerts_test.yml" <<'EOF' ||
import sys, yaml
config_path, alerts_path, tests_path = sys.argv[1:]
problems = []
config = yaml.safe_load(open(config_path))
if config.get("rule_files") != ["alerts.yml"]:
    problems.append(f"{config_path}: rule_files should be [alerts.yml], is {config.get('rule_files')}")
jobs = {c["job_name"]: c for c in config.get("scrape_configs", [])}
for name in ("logit-server", "logit-worker"):
    if name not in jobs:
        problems.append(f"{config_path}: no scrape job {name}")
    elif not jobs[name].get("honor_labels"):
        problems.append(f"{config_path}: scrape job {name} needs honor_labels: true "
                        "(the per-job series carry their own job label)")
alerts = {}
for group in yaml.safe_load(open(alerts_path))["groups"]:
    for rule in group["rules"]:
        if "alert" in rule:
            if rule["alert"] in alerts:
                problems.append(f"{alerts_path}: alert {rule['alert']} defined twice")
            alerts[rule["alert"]] = rule
for name, rule in alerts.items():
    severity = (rule.get("labels") or {}).get("severity")
    if severity not in ("page", "ticket"):
        problems.append(f"{alerts_path}: {name}: labels.severity is {severity!r}, not page|ticket")
    annotations = rule.get("annotations") or {}
    for key in ("summary", "description", "runbook"):
        if not str(annotations.get(key, "")).strip():
            problems.append(f"{alerts_path}: {name}: no {key} annotation")
    if "\n" in str(annotations.get("runbook", "")).strip():
        problems.append(f"{alerts_path}: {name}: the runbook annotation must be one line")
tests = yaml.safe_load(open(tests_path))
if tests.get("rule_files") != ["alerts.yml"]:
    problems.append(f"{tests_path}: rule_files should be [alerts.yml]")
firing, quiet = set(), set()
for test in tests.get("tests", []):
    for case in test.get("alert_rule_test") or []:
        (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
for name in sorted(alerts):
    if name not in firing:
        problems.append(f"{tests_path}: no test makes {name} fire")
    if name not in quiet:
        problems.append(f"{tests_path}: no test shows {name} quiet (exp_alerts: [])")
for name in sorted((firing | quiet) - set(alerts)):
    problems.append(f"{tests_path}: tests an alert that alerts.yml lacks: {name}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"  {len(alerts)} alerts, each with a runbook, firing and quiet in tests")
EOF
  fail "alert annotations / test coverage (see above)"

step "Grafana provisioning YAML and dashboard JSON"
"$PY" - "$GRAFANA" "$DASHBOARD" <<'EOF' ||
import json, sys, yaml
grafana, dashboard_path = sys.argv[1:]
problems = []
ds_path = f"{grafana}/provisioning/datasources/prometheus.yml"
ds = yaml.safe_load(open(ds_path))
sources = {d.get("uid"): d for d in ds.get("datasources", [])}
if ds.get("apiVersion") != 1:
    problems.append(f"{ds_path}: apiVersion should be 1")
src = sources.get("logit-prometheus")
if not src:
    problems.append(f"{ds_path}: no datasource with uid logit-prometheus")
elif src.get("type") != "prometheus" or src.get("url") != "http://prometheus:9090":
    problems.append(f"{ds_path}: logit-prometheus must be type prometheus at http://prometheus:9090")
prov_path = f"{grafana}/provisioning/dashboards/logit.yml"
prov = yaml.safe_load(open(prov_path))
providers = prov.get("providers") or []
if prov.get("apiVersion") != 1 or not providers:
    problems.append(f"{prov_path}: apiVersion 1 with at least one provider expected")
for p in providers:
    if p.get("type") != "file" or not (p.get("options") or {}).get("path"):
        problems.append(f"{prov_path}: provider {p.get('name')} must be type file with options.path")
try:
    d = json.load(open(dashboard_path))
except json.JSONDecodeError as e:
    print(f"{dashboard_path}: not JSON: {e}", file=sys.stderr)
    sys.exit(1)
if d.get("uid") != "logit":
    problems.append(f"{dashboard_path}: uid should be logit, is {d.get('uid')!r}")
if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
    problems.append(f"{dashboard_path}: schemaVersion {d.get('schemaVersion')} is older than Grafana 9")
variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list", [])}
job = variables.get("job")
if not job:
    problems.append(f"{dashboard_path}: no templating variable job")
else:
    query = job.get("query")
    query = query.get("query") if isinstance(query, dict) else query
    want = {"type": "query", "multi": True, "includeAll": True, "allValue": ".*"}
    for k, v in want.items():
        if job.get(k) != v:
            problems.append(f"{dashboard_path}: variable job: {k} should be {v!r}, is {job.get(k)!r}")
    if (query or "").replace(" ", "") != "label_values(logit_job_loss,job)":
        problems.append(f"{dashboard_path}: variable job: query should be label_values(logit_job_loss, job)")
    if (job.get("datasource") or {}).get("uid") != "logit-prometheus":
        problems.append(f"{dashboard_path}: variable job: datasource uid should be logit-prometheus")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"  provisioning parses; dashboard uid {d['uid']}, schemaVersion {d['schemaVersion']}")
EOF
  fail "Grafana provisioning / dashboard structure (see above)"

step "dashboard panels: every panel has targets with non-empty exprs ($QUERIES --validate)"
"$PY" "$QUERIES" "$DASHBOARD" --validate > "$TMP/queries.json" \
  || fail "$DASHBOARD: a panel without a query (see above)"

step "metric names in the alerts and the dashboard are in the catalogue"
"$PY" - "$PROM/alerts.yml" "$TMP/queries.json" <<'EOF' ||
import json, re, sys, yaml
alerts_path, queries_path = sys.argv[1:]
# The metrics logit-server and logit-worker expose (the C++ metric catalogue).
counters = """logit_jobs_submitted_total logit_jobs_finished_total logit_job_retries_total
  logit_workers_lost_total logit_worker_registrations_total logit_worker_heartbeats_missed_total
  logit_checkpoints_stored_total logit_checkpoint_bytes_total logit_upload_bytes_total
  logit_predict_requests_total logit_predict_rows_total logit_grpc_server_handled_total
  logit_worker_heartbeat_failures_total logit_worker_ranks_finished_total
  logit_samples_processed_total logit_allreduce_bytes_total""".split()
gauges = """logit_build_info logit_jobs logit_queue_jobs logit_queue_oldest_age_seconds
  logit_workers logit_storage_healthy logit_job_epoch logit_job_total_epochs logit_job_loss
  logit_job_objective logit_job_val_loss logit_job_accuracy logit_job_samples_per_second
  logit_job_epoch_duration_seconds logit_job_attempt logit_job_retries logit_job_workers
  logit_job_checkpoint_age_seconds logit_worker_registered logit_worker_busy logit_rank_epoch
  logit_rank_samples_per_second""".split()
histograms = """logit_job_duration_seconds logit_job_queue_wait_seconds
  logit_store_write_duration_seconds logit_predict_duration_seconds
  logit_grpc_server_handling_seconds logit_epoch_duration_seconds logit_step_duration_seconds
  logit_allreduce_duration_seconds logit_checkpoint_upload_duration_seconds""".split()
known = set(counters) | set(gauges)
for h in histograms:
    known |= {h + "_bucket", h + "_sum", h + "_count"}
exprs = [("dashboard: " + q["panel"], q["expr"]) for q in json.load(open(queries_path))]
for group in yaml.safe_load(open(alerts_path))["groups"]:
    for rule in group["rules"]:
        exprs.append(("alert " + rule.get("alert", rule.get("record", "?")), rule["expr"]))
problems = []
for where, expr in exprs:
    # Names only: drop label matchers' values and the strings in them.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for name in re.findall(r"\b(logit_[a-z0-9_]+)", bare):
        if name not in known:
            problems.append(f"{where}: unknown metric {name}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"  {len(exprs)} expressions use catalogue metrics only")
EOF
  fail "a metric name that logit does not expose (see above)"

step "every dashboard expr parses (promtool check rules on one recording rule per expr)"
"$PY" - "$TMP/queries.json" > "$TMP/dashboard_rules.yml" <<'EOF'
import json, sys
queries = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for n, q in enumerate(queries, 1):
    print(f"      # {q['panel']}")
    print(f"      - record: dashboard:panel_{n}")
    print(f"        expr: {json.dumps(q['expr'])}")
EOF
if ! promtool check rules "$TMP/dashboard_rules.yml" > "$TMP/check.out" 2>&1; then
  cat "$TMP/check.out" >&2
  echo "(the rules, with each panel's title:)" >&2
  cat "$TMP/dashboard_rules.yml" >&2
  fail "$DASHBOARD: a panel's PromQL does not parse"
fi
sed 's/^/  /' "$TMP/check.out"

echo "deploy_config_test: OK"
