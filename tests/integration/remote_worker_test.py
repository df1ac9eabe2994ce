#!/usr/bin/python3
"""A worker that cannot see the coordinator's data dir trains on uploaded data.

The worker runs in its own mount namespace with the coordinator's data dir covered by an empty
tmpfs (`unshare --mount`, root only), so the uploaded dataset's path names nothing it can
read: it must fetch the file over WorkerService.FetchData, verify it against the SHA-256
recorded at upload and keep it in its cache. Its model must equal, bit for bit, the one a worker
that reads the file directly trains from the same dataset; a second job on the same data must
hit the cache and transfer nothing.

Run by ctest (remote_worker_test); needs LOGIT_SERVER_BIN, LOGIT_WORKER, LOGIT_CLI and
LOGIT_SOURCE_DIR. /usr/bin/python3 with numpy (Debian python3-numpy).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import numpy as np

SOURCE = os.environ.get("LOGIT_SOURCE_DIR",
                        os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SERVER = os.environ.get("LOGIT_SERVER_BIN", "logit-server")
WORKER = os.environ.get("LOGIT_WORKER", "logit-worker")
CLI = os.environ.get("LOGIT_CLI", "logit")
IRIS = os.path.join(SOURCE, "tests", "data", "iris.csv")


def wait_for(what, fn, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def can_unshare():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                       capture_output=True)
    return r.returncode == 0


@unittest.skipUnless(can_unshare(), "needs root and unshare --mount (a private mount namespace)")
class RemoteWorkerTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="logit-remote-")
        self.data = os.path.join(self.dir, "data")
        self.procs = []
        out = open(os.path.join(self.dir, "server.out"), "w")
        self.server = self.start([SERVER, "--listen", "127.0.0.1:0", "--data-dir", self.data,
                                  "--heartbeat-ms", "200"], out, "server.err")

        def address():
            for line in open(os.path.join(self.dir, "server.out")):
                if line.startswith("logit-server listening on "):
                    return line.split()[3]
            return None

        self.address = wait_for("the server", address, 30)

    def tearDown(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self):
        text = ""
        for name in ("server.err", "direct.err", "remote.err"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                text += f"\n--- {name}\n" + open(path).read()[-3000:]
        return text

    def start(self, argv, out=None, err_name="err"):
        err = open(os.path.join(self.dir, err_name), "w")
        p = subprocess.Popen(argv, stdout=out or subprocess.DEVNULL, stderr=err)
        self.procs.append(p)
        return p

    def cli(self, *args):
        r = subprocess.run([CLI, "--server", self.address, *args], capture_output=True,
                           text=True, timeout=300)
        self.assertEqual(r.returncode, 0,
                         f"logit {' '.join(args)}:\n{r.stdout}\n{r.stderr}{self.logs()}")
        return r.stdout.strip().splitlines()[-1]

    def wait_registered(self, count):
        # `logit jobs` answers once the server runs; registration shows in the worker's log.
        wait_for(f"{count} registration(s)", lambda: sum(
            open(os.path.join(self.dir, n)).read().count("registered server=")
            for n in os.listdir(self.dir) if n.endswith(".err") and n != "server.err") >= count)

    def train(self, dataset):
        job = self.cli("train", "--data", dataset, "--label-column", "target", "--optimizer",
                       "lbfgs", "--l2", "0.01", "--detach")
        self.cli("watch", job)
        status = subprocess.run([CLI, "--server", self.address, "-o", "json", "status", job],
                                capture_output=True, text=True)
        j = json.loads(status.stdout)
        self.assertEqual(j["state"], "SUCCEEDED", status.stdout + self.logs())
        path = os.path.join(self.dir, f"{job}.npz")
        self.cli("model", "get", j["model_id"], path)
        return np.load(path)

    def test_worker_without_the_data_dir_fetches_verifies_caches_and_trains_the_same_model(self):
        dataset = self.cli("upload", IRIS)  # dataset:dataset-1
        # A worker that reads the uploaded file where the coordinator keeps it.
        direct = self.start([WORKER, "--server", self.address, "--data-access", "direct"],
                            err_name="direct.err")
        self.wait_registered(1)
        reference = self.train(dataset)
        direct.send_signal(signal.SIGTERM)
        direct.wait(timeout=20)
        # A worker that cannot see the data dir at all: an empty tmpfs covers it.
        cache = os.path.join(self.dir, "cache")
        self.start(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                    f"mount -t tmpfs none '{self.data}' && exec '{WORKER}' --server "
                    f"'{self.address}' --cache-dir '{cache}'"], err_name="remote.err")
        self.wait_registered(2)
        fetched = self.train(dataset)
        for name in ("W", "b"):  # the weights (summary_json holds timings)
            np.testing.assert_array_equal(fetched[name], reference[name], err_msg=name)
        log = open(os.path.join(self.dir, "remote.err")).read()
        self.assertEqual(log.count("data fetched"), 1, log)
        sha = hashlib.sha256(open(IRIS, "rb").read()).hexdigest()
        self.assertEqual(open(os.path.join(cache, sha, "iris.csv"), "rb").read(),
                         open(IRIS, "rb").read())
        # The same data again: from the cache, nothing transferred.
        again = self.train(dataset)
        for name in ("W", "b"):  # the weights (summary_json holds timings)
            np.testing.assert_array_equal(again[name], reference[name], err_msg=name)
        log = open(os.path.join(self.dir, "remote.err")).read()
        self.assertEqual(log.count("data fetched"), 1, log)
        self.assertEqual(log.count("data cache hit"), 1, log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
