#!/usr/bin/python3
"""A worker that cannot see the coordinator's data dir trains on uploaded data.

The worker runs in its own mount namespace with the coordinator's data dir covered by an empty
tmpfs (`unshare --mount`, root only), so the uploaded dataset's path names nothing it can
read: it must fetch the file over WorkerService.FetchData, verify it against the SHA-256
recorded at upload and keep it in its cache. Its model must equal, bit for bit, the one a worker
that reads the file directly trains from the same dataset; a second job on the same data must
hit the cache and transfer nothing. Two such workers training a 2-rank job on an uploaded .npy
dataset each fetch only the blocks of their own shard, and a cached block that went bad is
noticed and fetched again.

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


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


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
        for name in sorted(n for n in os.listdir(self.dir) if n.endswith(".err")):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                text += f"\n--- {name}\n" + read(path)[-3000:]
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
            read(os.path.join(self.dir, n)).count("registered server=")
            for n in os.listdir(self.dir) if n.endswith(".err") and n != "server.err") >= count)

    def train(self, dataset, *spec):
        spec = spec or ("--label-column", "target")
        job = self.cli("train", "--data", dataset, *spec, "--optimizer", "lbfgs", "--l2", "0.01",
                       "--detach")
        self.cli("watch", job)
        status = subprocess.run([CLI, "--server", self.address, "-o", "json", "status", job],
                                capture_output=True, text=True)
        j = json.loads(status.stdout)
        self.assertEqual(j["state"], "SUCCEEDED", status.stdout + self.logs())
        path = os.path.join(self.dir, f"{job}.npz")
        self.cli("model", "get", j["model_id"], path)
        return np.load(path)

    def start_remote(self, cache, err_name):
        # A worker that cannot see the data dir at all: an empty tmpfs covers it.
        return self.start(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                           f"mount -t tmpfs none '{self.data}' && exec '{WORKER}' --server "
                           f"'{self.address}' --cache-dir '{cache}'"], err_name=err_name)

    def test_worker_without_the_data_dir_fetches_verifies_caches_and_trains_the_same_model(self):
        dataset = self.cli("upload", IRIS)  # dataset:dataset-1
        # A worker that reads the uploaded file where the coordinator keeps it.
        direct = self.start([WORKER, "--server", self.address, "--data-access", "direct"],
                            err_name="direct.err")
        self.wait_registered(1)
        reference = self.train(dataset)
        direct.send_signal(signal.SIGTERM)
        direct.wait(timeout=20)
        cache = os.path.join(self.dir, "cache")
        self.start_remote(cache, "remote.err")
        self.wait_registered(2)
        fetched = self.train(dataset)
        for name in ("W", "b"):  # the weights (summary_json holds timings)
            np.testing.assert_array_equal(fetched[name], reference[name], err_msg=name)
        log = read(os.path.join(self.dir, "remote.err"))
        self.assertEqual(log.count("data fetched"), 1, log)
        sha = hashlib.sha256(read(IRIS, "rb")).hexdigest()
        self.assertEqual(read(os.path.join(cache, sha, "iris.csv"), "rb"),
                         read(IRIS, "rb"))
        # The same data again: from the cache, nothing transferred.
        again = self.train(dataset)
        for name in ("W", "b"):  # the weights (summary_json holds timings)
            np.testing.assert_array_equal(again[name], reference[name], err_msg=name)
        log = read(os.path.join(self.dir, "remote.err"))
        self.assertEqual(log.count("data fetched"), 1, log)
        self.assertEqual(log.count("data cache hit"), 1, log)

    def test_two_ranks_fetch_only_their_shards_of_an_npy_dataset(self):
        rng = np.random.default_rng(7)
        x = rng.normal(size=(32000, 128)).astype(np.float32)  # 16 MB: 16 blocks of 1 MiB
        y = (x @ rng.normal(size=128) + 0.5 * rng.normal(size=32000) > 0).astype(np.int64)
        np.save(os.path.join(self.dir, "x.npy"), x)
        np.save(os.path.join(self.dir, "y.npy"), y)
        features = self.cli("upload", os.path.join(self.dir, "x.npy"))
        labels = self.cli("upload", os.path.join(self.dir, "y.npy"))
        spec = ("--labels", labels, "--workers", "2")
        direct = [self.start([WORKER, "--server", self.address, "--data-access", "direct"],
                             err_name=f"direct{i}.err") for i in range(2)]
        self.wait_registered(2)
        reference = self.train(features, *spec)
        for p in direct:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
        caches = [os.path.join(self.dir, f"cache{i}") for i in range(2)]
        for i, cache in enumerate(caches):
            self.start_remote(cache, f"remote{i}.err")
        self.wait_registered(4)
        fetched = self.train(features, *spec)
        for name in ("W", "b"):
            np.testing.assert_array_equal(fetched[name], reference[name], err_msg=name)
        size = os.path.getsize(os.path.join(self.dir, "x.npy"))
        sha = hashlib.sha256(read(os.path.join(self.dir, "x.npy"), "rb")).hexdigest()
        held = []
        for cache in caches:
            cached = os.path.join(cache, sha, "x.npy")
            self.assertEqual(os.path.getsize(cached), size)  # full size, the rest are holes
            held.append(os.stat(cached).st_blocks * 512)
            have = read(os.path.join(cache, sha, ".x.npy.have")).split("\n")[1]
            self.assertEqual(len(have), 16)
            # The header block and the 8 or 9 blocks that hold half the rows, no more.
            self.assertLessEqual(have.count("1"), 10, have)
        self.assertLess(max(held), 0.7 * size, held)
        for i in range(2):  # the figures, for the record
            print(*[line for line in read(os.path.join(self.dir, f"remote{i}.err")).splitlines()
                    if "data fetched" in line], sep="\n")
        # Together the two ranks hold every block.
        both = [read(os.path.join(c, sha, ".x.npy.have")).split("\n")[1] for c in caches]
        self.assertEqual("".join("1" if a == "1" or b == "1" else "0" for a, b in zip(*both)),
                         "1" * 16)
        # A cached block that went bad (block 0: both ranks read the header there) is noticed
        # and fetched again; the model stays the same.
        cached = os.path.join(caches[0], sha, "x.npy")
        with open(cached, "r+b") as f:
            f.seek(1000)
            byte = f.read(1)
            f.seek(1000)
            f.write(bytes([byte[0] ^ 0xff]))
        again = self.train(features, *spec)
        for name in ("W", "b"):
            np.testing.assert_array_equal(again[name], reference[name], err_msg=name)
        log = read(os.path.join(self.dir, "remote0.err"))
        self.assertEqual(log.count("data cache block corrupt"), 1, log)
        self.assertEqual(read(cached, "rb")[1000], byte[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
