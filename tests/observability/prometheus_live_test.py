#!/usr/bin/python3
"""A real Prometheus scraping a live logit-server and its two local workers.

The server runs with --metrics-listen and --local-worker-metrics-listen on loopback; a
`prometheus` process (Debian package) scrapes all three every second and loads
deploy/prometheus/alerts.yml. Through the CLI the test trains a job to the end, predicts with
its model (and asks for a model that does not exist), sends a spec that is refused, then
starts a second job that keeps running. It then checks:

  - `promtool check metrics` passes on the server's and a worker's live /metrics;
  - Prometheus' HTTP API returns the values the job reported (loss and accuracy per job,
    rows processed, checkpoints, predictions, job counts, workers by state, ...);
  - every query of every panel of deploy/grafana/dashboards/logit.json returns data;
  - every alert rule evaluates without error.

Run by ctest (prometheus_live_test); needs LOGIT_SERVER_BIN, LOGIT_WORKER, LOGIT_CLI and
LOGIT_SOURCE_DIR. Standard library only, /usr/bin/python3.
"""

import csv
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

SOURCE = os.environ.get("LOGIT_SOURCE_DIR",
                        os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(SOURCE, "tests", "observability"))
import dashboard_queries  # noqa: E402

try:
    import grpc  # Debian python3-grpcio
except ImportError:  # the raw Predict / ModelInfer calls are skipped
    grpc = None

SERVER = os.environ.get("LOGIT_SERVER_BIN", "logit-server")
WORKER = os.environ.get("LOGIT_WORKER", "logit-worker")
CLI = os.environ.get("LOGIT_CLI", "logit")
DATA = os.path.join(SOURCE, "tests", "data")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair():
    """A port p with p and p + 1 free (local workers take consecutive metrics ports)."""
    for _ in range(50):
        p = free_port()
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(what, fn, timeout=60, interval=0.25):
    """Calls fn until it returns a truthy value; fails naming `what` after `timeout` s."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 -- keep polling, report the last error
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# Protocol buffers by hand (no generated Python code here): just the request fields used.
def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _floats(xs):
    return struct.pack(f"<{len(xs)}f", *xs)


def predict_request(model_id, rows):
    """logit.v1.PredictRequest{model_id = 1, features = 2 (packed float)}."""
    flat = [v for r in rows for v in r]
    return _len_field(1, model_id.encode()) + _len_field(2, _floats(flat))


def model_infer_request(model_name, rows):
    """inference.ModelInferRequest{model_name = 1, inputs = 5 {name = 1, datatype = 2,
    shape = 3 (packed int64), contents = 5 {fp32_contents = 6}}}."""
    flat = [v for r in rows for v in r]
    tensor = (_len_field(1, b"input") + _len_field(2, b"FP32")
              + _len_field(3, _varint(len(rows)) + _varint(len(rows[0])))
              + _len_field(5, _len_field(6, _floats(flat))))
    return _len_field(1, model_name.encode()) + _len_field(5, tensor)


class LiveCluster:
    """logit-server + 2 local workers + prometheus, all on 127.0.0.1, in a temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="logit-prom-")
        self.procs = []
        self.server_metrics_port = None
        self.worker_metrics_port = free_port_pair()
        self.prom_port = free_port()

    def start(self):
        out = open(os.path.join(self.dir, "server.out"), "w")
        err = open(os.path.join(self.dir, "server.err"), "w")
        server = subprocess.Popen(
            [SERVER, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.dir, "data"),
             "--data-root", DATA, "--local-workers", "2", "--worker-binary", WORKER,
             "--metrics-listen", "127.0.0.1:0",
             "--local-worker-metrics-listen", f"127.0.0.1:{self.worker_metrics_port}",
             "--heartbeat-ms", "200", "--log-format", "json",
             # Job A's series must outlast the whole test, however slow the machine.
             "--metrics-job-grace", "3600"],
            stdout=out, stderr=err)
        self.procs.append(server)
        self.server_proc = server

        def started():
            text = open(os.path.join(self.dir, "server.out")).read()
            addr = metrics = None
            for line in text.splitlines():
                if line.startswith("logit-server listening on "):
                    addr = line.split()[3]
                if line.startswith("logit-server metrics on http://"):
                    metrics = int(line.split("http://")[1].split("/")[0].rsplit(":", 1)[1])
            return (addr, metrics) if addr and metrics else None

        self.address, self.server_metrics_port = wait_for("the server to listen", started, 30)
        self.targets = {
            "server": f"127.0.0.1:{self.server_metrics_port}",
            "workers": [f"127.0.0.1:{self.worker_metrics_port + i}" for i in range(2)],
        }
        rules = os.path.join(SOURCE, "deploy", "prometheus", "alerts.yml")
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            # The scrape jobs of deploy/prometheus/prometheus.yml, on loopback, every second.
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: logit-server
    honor_labels: true
    static_configs:
      - targets: ["{self.targets['server']}"]
  - job_name: logit-worker
    honor_labels: true
    static_configs:
      - targets: {json.dumps(self.targets['workers'])}
""")
        prom_log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}", "--log.level=warn"],
            stdout=prom_log, stderr=subprocess.STDOUT))
        wait_for("prometheus to be ready",
                 lambda: "Ready" in http_get(f"http://127.0.0.1:{self.prom_port}/-/ready"), 60)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self):
        text = []
        for name in ("server.err", "prometheus.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                text.append(f"--- {name} (tail)\n" + "".join(open(path).readlines()[-30:]))
        return "\n".join(text)

    def cli(self, *args, check=True, json_output=False):
        fmt = ["-o", "json"] if json_output else []
        r = subprocess.run([CLI, "--server", self.address, *fmt, *args], capture_output=True,
                           text=True, timeout=300)
        if check and r.returncode != 0:
            raise AssertionError(f"logit {' '.join(args)} exited {r.returncode}:\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    def raw_call(self, method, request):
        """A unary call with a hand-encoded request: the gRPC status code's name."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                channel.unary_unary(method)(request, timeout=10)
                return "OK"
            except grpc.RpcError as e:
                return e.code().name

    def query(self, expr):
        url = (f"http://127.0.0.1:{self.prom_port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        body = json.loads(http_get(url))
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        return body["data"]["result"]

    def value(self, expr):
        """The single sample of an instant query, as a float (None when there is none)."""
        result = self.query(expr)
        if len(result) != 1:
            return None
        return float(result[0]["value"][1])


class PrometheusLiveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("prometheus", "promtool"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest(f"{tool} is not installed (Debian package prometheus)")
        cls.c = LiveCluster()
        try:
            cls.c.start()
            cls.run_workload()
        except Exception:
            cls.c.stop()
            print(cls.c.logs(), file=sys.stderr)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        if cls.failed:
            print(cls.c.logs(), file=sys.stderr)
        else:
            shutil.rmtree(cls.c.dir, ignore_errors=True)

    failed = False

    def run(self, result=None):
        result = super().run(result)
        if result is not None and (result.failures or result.errors):
            type(self).failed = True
        return result

    @classmethod
    def run_workload(cls):
        c = cls.c
        wait_for("both workers to register",
                 lambda: c.value('sum(logit_workers{job="logit-server"})') == 2, 60)
        # Job A: trains to the end on both workers, with validation and test splits.
        a = c.cli("train", "--data", "server:iris.csv", "--label-column", "target",
                  "--workers", "2", "--optimizer", "adam", "--lr", "0.1", "--epochs", "12",
                  "--batch-size", "16", "--val-split", "0.2", "--test-split", "0.2",
                  "--checkpoint-every", "4", json_output=True)
        cls.job_a = json.loads(a.stdout.strip().splitlines()[-1])
        # Predictions with its model, and one for a model that does not exist.
        cls.predict_rows = sum(1 for line in open(os.path.join(DATA, "iris.csv"))) - 1
        c.cli("predict", "--model", cls.job_a["model_id"], "--input",
              os.path.join(DATA, "iris.csv"), "--label-column", "target", "--out",
              os.path.join(c.dir, "pred.csv"))
        # Raw Predict and Open Inference Protocol ModelInfer calls: 5 rows with the model, and
        # each protocol once for a model that does not exist.
        with open(os.path.join(DATA, "iris.csv")) as f:
            reader = csv.DictReader(f)
            rows = [[float(r[k]) for k in reader.fieldnames if k != "target"]
                    for _, r in zip(range(5), reader)]
        cls.raw = {}
        if grpc is not None:
            model = cls.job_a["model_id"]
            cls.raw = {
                "oip_ok": c.raw_call("/inference.GRPCInferenceService/ModelInfer",
                                     model_infer_request(model, rows)),
                "oip_missing": c.raw_call("/inference.GRPCInferenceService/ModelInfer",
                                          model_infer_request("model-999", rows)),
                "logit_missing": c.raw_call("/logit.v1.TrainingService/Predict",
                                            predict_request("model-999", rows)),
            }
        # A spec the server refuses (INVALID_ARGUMENT).
        bad = c.cli("train", "--data", "server:no_such_file.csv", "--label-column", "target",
                    "--detach", check=False)
        cls.bad_submit_refused = bad.returncode != 0
        # Everything of job A is on /metrics, and Prometheus has scraped the server and both
        # workers since it ended.
        wait_for("job A's end in Prometheus",
                 lambda: c.value('logit_jobs_finished_total{state="succeeded"}') == 1, 30)
        wait_for("job A's rows in Prometheus",
                 lambda: c.value("sum(logit_samples_processed_total)") ==
                 cls.expected_rows(), 30)
        cls.samples_after_a = c.value("sum(logit_samples_processed_total)")
        cls.checkpoints_after_a = c.value("logit_checkpoints_stored_total")
        # Job B: keeps running (many epochs of small Adam steps) until the test ends.
        b = c.cli("train", "--data", "server:digits.csv", "--label-column", "target",
                  "--workers", "2", "--optimizer", "adam", "--batch-size", "8",
                  "--epochs", "100000", "--checkpoint-every", "1", "--detach")
        cls.job_b = b.stdout.strip().splitlines()[-1].split()[-1]
        wait_for("job B's loss in Prometheus",
                 lambda: c.value(f'logit_job_loss{{job="{cls.job_b}"}}') is not None, 60)
        # Two scrapes more, so that rate() over every counter has two points while B runs.
        time.sleep(3)

    @classmethod
    def expected_rows(cls):
        return cls.job_a["epochs_run"] * cls.job_a["result"]["summary"]["train_rows"]

    def test_server_and_worker_metrics_pass_promtool(self):
        for target in [self.c.targets["server"], *self.c.targets["workers"]]:
            text = http_get(f"http://{target}/metrics")
            r = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                               capture_output=True)
            self.assertEqual(r.returncode, 0, f"{target}: {r.stdout}{r.stderr}")
            self.assertIn("process_resident_memory_bytes", text)

    def test_every_target_is_up(self):
        up = {r["metric"]["instance"]: r["value"][1] for r in self.c.query("up")}
        for target in [self.c.targets["server"], *self.c.targets["workers"]]:
            self.assertEqual(up.get(target), "1", up)

    def test_finished_job_series_hold_what_the_job_reported(self):
        c, a = self.c, self.job_a
        job = a["job_id"]
        self.assertEqual(a["state"], "SUCCEEDED")
        self.assertAlmostEqual(c.value(f'logit_job_loss{{job="{job}"}}'), a["train_loss"],
                               places=9)
        self.assertAlmostEqual(c.value(f'logit_job_objective{{job="{job}"}}'), a["objective"],
                               places=9)
        self.assertAlmostEqual(c.value(f'logit_job_val_loss{{job="{job}"}}'),
                               a["result"]["summary"]["val_metrics"]["log_loss"], places=9)
        self.assertAlmostEqual(
            c.value(f'logit_job_accuracy{{job="{job}",split="train"}}'), a["result"]["summary"]["train_metrics"]["accuracy"],
            places=9)
        self.assertEqual(c.value(f'logit_job_epoch{{job="{job}"}}'), a["epochs_run"])
        self.assertAlmostEqual(
            c.value(f'logit_job_accuracy{{job="{job}",split="test"}}'), a["test_accuracy"],
            places=9)
        self.assertAlmostEqual(
            c.value(f'logit_job_accuracy{{job="{job}",split="validation"}}'),
            a["val_accuracy"], places=9)
        self.assertEqual(c.value(f'logit_job_retries{{job="{job}"}}'), 0)

    def test_counters_match_the_workload(self):
        c = self.c
        self.assertTrue(self.bad_submit_refused)
        # Rows: epochs x training rows, summed over both workers' ranks.
        self.assertEqual(self.samples_after_a, self.expected_rows())
        # Checkpoints after epochs 4 and 8 of 12 (the end stores the model instead).
        self.assertEqual(self.checkpoints_after_a, 2)
        self.assertEqual(c.value('logit_jobs_finished_total{state="succeeded"}'), 1)
        self.assertEqual(c.value("logit_jobs_submitted_total"), 2)  # A and B; the bad spec not
        self.assertEqual(
            c.value('sum(logit_grpc_server_handled_total{grpc_method="SubmitJob",'
                    'grpc_code!="OK"})'), 1)
        self.assertEqual(
            c.value('sum(logit_grpc_server_handled_total{grpc_method="SubmitJob",'
                    'grpc_code="OK"})'), 2)
        self.assertGreater(c.value('logit_upload_bytes_total{kind="model"}'), 0)
        self.assertGreater(c.value("logit_store_write_duration_seconds_count"), 0)
        self.assertEqual(c.value("logit_worker_registrations_total"), 2)

    def test_predict_and_model_infer_are_counted_by_protocol_and_code(self):
        c = self.c
        self.assertEqual(c.value('logit_predict_rows_total{protocol="logit"}'),
                         self.predict_rows)
        self.assertEqual(c.value('logit_predict_requests_total{protocol="logit",code="OK"}'), 1)
        if grpc is None:
            self.skipTest("python3-grpcio is not installed: no raw Predict / ModelInfer calls")
        self.assertEqual(self.raw, {"oip_ok": "OK", "oip_missing": "NOT_FOUND",
                                    "logit_missing": "NOT_FOUND"})
        self.assertEqual(
            c.value('logit_predict_requests_total{protocol="logit",code="NOT_FOUND"}'), 1)
        self.assertEqual(c.value('logit_predict_requests_total{protocol="oip",code="OK"}'), 1)
        self.assertEqual(
            c.value('logit_predict_requests_total{protocol="oip",code="NOT_FOUND"}'), 1)
        self.assertEqual(c.value('logit_predict_rows_total{protocol="oip"}'), 5)

    def test_running_job_shows_workers_busy_and_progress(self):
        c, job = self.c, self.job_b
        self.assertEqual(c.value('logit_jobs{state="running"}'), 1)
        self.assertEqual(c.value('logit_workers{state="busy"}'), 2)
        self.assertEqual(c.value("sum(logit_worker_busy)"), 2)
        self.assertEqual(c.value(f'logit_job_workers{{job="{job}"}}'), 2)
        self.assertGreaterEqual(c.value(f'logit_job_epoch{{job="{job}"}}'), 1)
        self.assertIsNotNone(c.value(f'logit_job_checkpoint_age_seconds{{job="{job}"}}'))
        ranks = c.query(f'logit_rank_epoch{{job="{job}"}}')
        self.assertEqual(sorted(r["metric"]["rank"] for r in ranks), ["0", "1"])
        self.assertGreater(c.value("sum(logit_allreduce_duration_seconds_count)"), 0)
        self.assertGreater(c.value("sum(logit_step_duration_seconds_count)"), 0)

    def test_every_dashboard_panel_returns_data(self):
        path = os.path.join(SOURCE, "deploy", "grafana", "dashboards", "logit.json")
        dashboard_queries.validate_dashboard(path)
        empty = []
        for title, expr in dashboard_queries.panel_queries(path, job_regex=".*",
                                                           rate_interval="1m"):
            if not self.c.query(expr):
                empty.append(f"{title}: {expr}")
        self.assertEqual(empty, [], "panels without data")

    def test_every_alert_rule_evaluates(self):
        body = json.loads(http_get(f"http://127.0.0.1:{self.c.prom_port}/api/v1/rules"))
        rules = [r for g in body["data"]["groups"] for r in g["rules"]]
        self.assertGreater(len(rules), 5)
        bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
        self.assertEqual(bad, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
