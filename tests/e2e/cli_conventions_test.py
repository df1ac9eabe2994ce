#!/usr/bin/python3
"""The `logit` CLI as a user of kubectl, gh and scikit-learn expects it (issue 15).

Drives the real binary against a real logit-server (two local workers, on loopback, a free
port): global flags anywhere, --version, "did you mean", completion scripts, the config file and
its precedence, one exit code per kind of error, one JSON schema for jobs (numbers as numbers,
nested objects), YAML, NDJSON from watch, several ids, --save-model against a server, --local
refusing flags it would ignore, the warning before a distributed job that will be slow, and every
example printed by a --help text, run as written.

Run by ctest (cli_conventions_test); needs LOGIT_CLI, LOGIT_SERVER_BIN, LOGIT_SOURCE_DIR.
/usr/bin/python3 with yaml (Debian python3-yaml).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import yaml

SOURCE = os.environ.get("LOGIT_SOURCE_DIR",
                        os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SERVER = os.environ.get("LOGIT_SERVER_BIN", "logit-server")
CLI = os.environ.get("LOGIT_CLI", "logit")
IRIS = os.path.join(SOURCE, "tests", "data", "iris.csv")
DATASETS = "/usr/share/datasets"


def read(path):
    with open(path) as f:
        return f.read()


class Server:
    """A logit-server with two local workers on a free loopback port, in its own directory."""

    def __init__(self, root, workers=2):
        self.dir = tempfile.mkdtemp(prefix="server-", dir=root)
        out_path = os.path.join(self.dir, "server.out")
        argv = [SERVER, "--listen", "127.0.0.1:0", "--local-workers", str(workers), "--data-dir",
                os.path.join(self.dir, "data"), "--heartbeat-ms", "200"]
        if os.path.isdir(DATASETS):
            argv += ["--data-root", DATASETS]
        with open(out_path, "w") as out, open(os.path.join(self.dir, "server.err"), "w") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err)
        deadline = time.time() + 60
        self.address = None
        while time.time() < deadline and self.address is None:
            for line in read(out_path).splitlines():
                if line.startswith("logit-server listening on "):
                    self.address = line.split()[3]
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if self.address is None:
            self.stop()
            raise AssertionError("the server did not start:\n" +
                                 read(os.path.join(self.dir, "server.err")))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class CliTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="logit-cli-")
        cls.home = os.path.join(cls.root, "home")
        os.makedirs(cls.home)
        cls.server = Server(cls.root)
        cls.address = cls.server.address

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LOGIT_") or k in ("LOGIT_SOURCE_DIR",)}
        env["HOME"] = self.home  # no config file unless a test writes one
        env.pop("XDG_CONFIG_HOME", None)
        env.update(extra)
        return env

    def run_cli(self, *args, env=None, cwd=None, timeout=300):
        return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                              env=env or self.env(), cwd=cwd or self.root)

    def ok(self, *args, **kw):
        r = self.run_cli(*args, **kw)
        self.assertEqual(r.returncode, 0, f"logit {' '.join(args)}:\n{r.stdout}\n{r.stderr}")
        return r

    def server_args(self):
        return ["--server", self.address]

    def train_iris(self, *extra):
        r = self.ok("train", "--data", IRIS, "--label-column", "target", "--l2", "0.01",
                    "-o", "json", *extra, *self.server_args())
        return json.loads(r.stdout.strip().splitlines()[-1])


class GlobalsAndTyposTest(CliTestCase):
    def test_global_flags_work_before_and_after_the_subcommand(self):
        job = self.train_iris()["job_id"]
        before = self.ok("--server", self.address, "-o", "json", "status", job).stdout
        after = self.ok("status", job, "-o", "json", "--server", self.address).stdout
        middle = self.ok("-o", "json", "status", "--server", self.address, job).stdout
        self.assertEqual(json.loads(before)["id"], job)
        self.assertEqual(json.loads(before), json.loads(after))
        self.assertEqual(json.loads(before), json.loads(middle))

    def test_version_prints_the_release(self):
        r = self.ok("--version")
        self.assertRegex(r.stdout.strip(), r"^logit \d+\.\d+\.\d+$")

    def test_typos_get_a_suggestion_and_exit_two(self):
        r = self.run_cli("trian", "--local")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("unknown command 'trian'; did you mean 'train'?", r.stderr)
        r = self.run_cli("train", "--local", "--data", IRIS, "--epoch", "5")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("unknown flag '--epoch' for 'logit train'; did you mean '--epochs'?",
                      r.stderr)
        r = self.run_cli("model", "gt", "model-1", "m.npz")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("did you mean 'get'?", r.stderr)
        r = self.run_cli("jobs", "--sever", self.address)
        self.assertIn("did you mean '--server'?", r.stderr)

    def test_bash_completion_completes_commands_flags_and_values(self):
        script = self.ok("completion", "bash").stdout

        def complete(*words):
            prog = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
                    f"COMP_CWORD={len(words) - 1}\n_logit\necho \"${{COMPREPLY[@]}}\"\n")
            r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout.split()

        self.assertEqual(complete("logit", "tr"), ["train"])
        self.assertIn("--epochs", complete("logit", "train", "--ep"))
        self.assertIn("--server", complete("logit", "status", "--se"))  # globals after a command
        self.assertEqual(complete("logit", "model", ""), ["get"] + [
            w for w in complete("logit", "model", "") if w != "get"])
        self.assertEqual(complete("logit", "jobs", "-o", ""), ["table", "json", "yaml"])
        zsh = self.ok("completion", "zsh").stdout
        self.assertTrue(zsh.startswith("#compdef logit"))
        self.assertIn("bashcompinit", zsh)
        self.assertEqual(self.run_cli("completion", "fish").returncode, 2)


class ConfigTest(CliTestCase):
    def write_config(self, text):
        path = os.path.join(self.root, "config.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_flags_beat_the_environment_which_beats_the_config_file(self):
        path = self.write_config(f"server: {self.address}\noutput: json\n")
        env = self.env(LOGIT_CONFIG=path)
        jobs = json.loads(self.ok("jobs", env=env).stdout)  # server and output from the file
        self.assertIn("jobs", jobs)
        env_bad = self.env(LOGIT_CONFIG=path, LOGIT_SERVER="127.0.0.1:1")
        r = self.run_cli("jobs", env=env_bad)
        self.assertEqual(r.returncode, 3, r.stderr)  # the environment wins over the file
        self.assertIn("127.0.0.1:1", r.stderr)
        table = self.ok("jobs", "--server", self.address, "-o", "table", env=env_bad)
        self.assertTrue(table.stdout.startswith("JOB"), table.stdout)  # flags win over both

    def test_the_xdg_config_file_is_read(self):
        xdg = os.path.join(self.root, "xdg")
        os.makedirs(os.path.join(xdg, "logit"), exist_ok=True)
        with open(os.path.join(xdg, "logit", "config.yaml"), "w") as f:
            f.write(f"server: {self.address}\noutput: yaml\n")
        r = self.ok("jobs", env=self.env(XDG_CONFIG_HOME=xdg))
        self.assertIn("jobs", yaml.safe_load(r.stdout))

    def test_a_bad_config_file_is_a_usage_error_naming_file_line_and_key(self):
        path = self.write_config(f"server: {self.address}\noutptu: json\n")
        r = self.run_cli("jobs", env=self.env(LOGIT_CONFIG=path))
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{path}:2: unknown setting 'outptu'; did you mean 'output'?", r.stderr)
        path = self.write_config("server: [1, 2\n")
        r = self.run_cli("jobs", env=self.env(LOGIT_CONFIG=path))
        self.assertEqual(r.returncode, 2)
        self.assertIn(path, r.stderr)

    def test_without_any_setting_the_cli_dials_the_servers_default_address(self):
        r = self.run_cli("health", "--timeout", "1")
        if r.returncode == 0:
            self.skipTest("something serves on 127.0.0.1:50051 here")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("127.0.0.1:50051", r.stderr + r.stdout)


class ExitCodesAndIdsTest(CliTestCase):
    def test_each_kind_of_error_has_its_exit_code(self):
        srv = self.server_args()
        self.assertEqual(self.run_cli("status", "job-404", *srv).returncode, 4)
        self.assertEqual(self.run_cli("model", "get", "model-404", "m.npz", *srv,
                                      cwd=self.root).returncode, 4)
        self.assertEqual(self.run_cli("train", "--local", "--batch-size", "0").returncode, 2)
        self.assertEqual(self.run_cli("jobs", "--server", "127.0.0.1:1").returncode, 3)
        bad = os.path.join(self.root, "bad.csv")
        with open(bad, "w") as f:
            f.write("a,b,target\n1,2,0\n3,x,1\n")
        # Checked here before anything is uploaded: the user's file and line, exit 1 as the job
        # would fail; a label column the file lacks is a usage error.
        r = self.run_cli("train", "--data", bad, "--label-column", "target", *srv)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"logit train: {bad}:3: column 2: not a number", r.stderr)
        self.assertNotIn("uploaded", r.stderr)
        r = self.run_cli("train", "--data", bad, "--label-column", "label", *srv)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--label-column: no column named 'label' in the header of " + bad, r.stderr)
        r = self.run_cli("train", "--data", IRIS, "--label-column", "5", "--classes", "4",
                         "--detach", *srv)
        self.assertEqual(r.returncode, 0, r.stderr)  # columns count from 1: 5 is `target`
        self.assertIn("no rows of class 3 of --classes 4", r.stderr)
        # Data the CLI cannot check (already on the server) fails the job instead; the reason
        # names the dataset as the user gave it, and the failing rank once.
        ref = self.ok("upload", bad, *srv).stdout.strip()
        r = self.run_cli("train", "--data", ref, "--label-column", "target", *srv)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"FAILED: rank 0 (w-", r.stdout)
        self.assertIn(": bad.csv:3: column 2: not a number", r.stdout)  # its uploaded name
        self.assertNotIn("datasets/dataset-", r.stdout + r.stderr)
        self.assertEqual(r.stdout.count("rank 0"), r.stdout.count("FAILED: rank 0 (w-"), r.stdout)

    def test_cancel_and_status_take_several_ids_and_report_the_worst(self):
        srv = self.server_args()
        jobs = []
        for _ in range(2):
            r = self.ok("train", "--data", IRIS, "--label-column", "target", "--optimizer", "sgd",
                        "--epochs", "1000000", "--detach", *srv)
            jobs.append(r.stdout.strip())
        r = self.ok("cancel", *jobs, "-o", "json", *srv)
        states = [json.loads(line)["state"] for line in r.stdout.splitlines()]
        self.assertEqual(states, ["CANCELLED", "CANCELLED"])
        r = self.run_cli("status", jobs[0], "job-404", jobs[1], "-o", "json", *srv)
        self.assertEqual(r.returncode, 4)
        self.assertEqual([json.loads(line)["id"] for line in r.stdout.splitlines()], jobs)
        self.assertIn("job-404", r.stderr)


class OutputTest(CliTestCase):
    JOB_KEYS = {"job_id", "id", "state", "model_id", "epochs_run", "train_loss", "objective",
                "val_accuracy", "test_accuracy", "wall_seconds", "spec", "result", "created"}

    def test_train_status_and_jobs_print_the_same_job_object(self):
        trained = self.train_iris("--test-split", "0.2")
        job = trained["job_id"]
        status = json.loads(self.ok("status", job, "-o", "json", *self.server_args()).stdout)
        listed = json.loads(self.ok("jobs", "-o", "json", *self.server_args()).stdout)
        from_list = [j for j in listed["jobs"] if j["id"] == job][0]
        self.assertTrue(self.JOB_KEYS <= set(trained), self.JOB_KEYS - set(trained))
        self.assertEqual(set(trained), set(status))
        self.assertEqual(set(status), set(from_list))
        for j in (trained, status, from_list):
            self.assertEqual(j["state"], "SUCCEEDED")
            self.assertIsInstance(j["last_sequence"], int)  # int64: a number, not a string
            self.assertIsInstance(j["result"]["epochs_run"], int)
            self.assertIsInstance(j["result"]["summary"], dict)  # nested, not JSON in a string
            self.assertIsInstance(j["result"]["summary"]["history"], list)
            self.assertGreater(j["test_accuracy"], 0.8)
        # A --local run prints the same shape.
        local = self.ok("train", "--local", "--data", IRIS, "--label-column", "target", "-o",
                        "json")
        self.assertEqual(set(json.loads(local.stdout.strip().splitlines()[-1])), set(status))

    def test_yaml_is_the_same_document_as_json(self):
        job = self.train_iris()["job_id"]
        as_json = json.loads(self.ok("status", job, "-o", "json", *self.server_args()).stdout)
        as_yaml = yaml.safe_load(self.ok("status", job, "-o", "yaml",
                                         *self.server_args()).stdout)
        self.assertEqual(as_yaml, as_json)

    def test_watch_prints_one_json_object_per_event(self):
        job = self.train_iris("--optimizer", "adam", "--epochs", "3", "--lr", "0.05")["job_id"]
        r = self.ok("watch", job, "-o", "json", *self.server_args())
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        events, final = lines[:-1], lines[-1]
        self.assertEqual([e["sequence"] for e in events if "sequence" in e and "progress" not in e],
                         sorted(e["sequence"] for e in events if "progress" not in e))
        self.assertEqual([e["epoch"]["epoch"] for e in events if "epoch" in e], [1, 2, 3])
        self.assertIn("state_change", events[0])
        self.assertEqual(final["job_id"], job)
        self.assertEqual(final["state"], "SUCCEEDED")

    def test_save_model_downloads_the_model_of_a_server_job(self):
        path = os.path.join(self.root, "served.onnx")
        r = self.ok("train", "--data", IRIS, "--label-column", "target", "--save-model", path,
                    "-o", "json", *self.server_args())
        self.assertTrue(os.path.getsize(path) > 0)
        self.assertEqual(json.loads(r.stdout.strip().splitlines()[-1])["state"], "SUCCEEDED")
        r = self.run_cli("train", "--data", IRIS, "--detach", "--save-model", path,
                         *self.server_args())
        self.assertEqual(r.returncode, 2)
        self.assertIn("logit model get", r.stderr)

    def test_regularisation_defaults_to_scikit_learns_c_of_one(self):
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        data = np.genfromtxt(IRIS, delimiter=",", skip_header=1)
        x, y = data[:, :-1], data[:, -1].astype(int)
        n = len(y)
        runs = {}
        for name, flags in {"default": [], "C": ["--C", "0.1"],
                            "none": ["--penalty", "none"]}.items():
            r = self.ok("train", "--data", IRIS, "--label-column", "target", "--tol", "1e-10",
                        "-o", "json", *flags, *self.server_args())
            runs[name] = json.loads(r.stdout.strip().splitlines()[-1])
        opts = {k: v["result"]["summary"]["options"] for k, v in runs.items()}
        self.assertEqual(opts["default"]["c"], 1.0)
        self.assertAlmostEqual(opts["default"]["l2"], 1.0 / n, places=12)
        self.assertAlmostEqual(opts["C"]["l2"], 1.0 / (0.1 * n), places=12)
        self.assertEqual((opts["none"]["c"], opts["none"]["l2"]), (0.0, 0.0))
        # The same optimum as scikit-learn's LogisticRegression(C=...): its objective is
        # C * sum(loss) + |W|^2 / 2, ours the mean loss + l2 |W|^2 / 2 = that / (C n).
        for name, c in (("default", 1.0), ("C", 0.1)):
            sk = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
            p = sk.predict_proba(x)
            sk_objective = (-np.log(p[np.arange(n), y]).mean()
                            + 0.5 / (c * n) * np.square(sk.coef_).sum())
            self.assertAlmostEqual(runs[name]["objective"], sk_objective, delta=1e-6 * sk_objective)
        r = self.run_cli("train", "--data", IRIS, "--C", "1", "--l2", "0.1", *self.server_args())
        self.assertEqual(r.returncode, 2)
        self.assertIn("--C: give C or l2, not both", r.stderr)

    def test_local_runs_refuse_flags_only_a_server_acts_on(self):
        r = self.run_cli("train", "--local", "--data", IRIS, "--detach", "--checkpoint-every", "2")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--detach, --checkpoint-every need a server", r.stderr)

    def test_tiny_batches_over_many_workers_get_a_warning_first(self):
        r = self.ok("train", "--data", IRIS, "--label-column", "target", "--optimizer", "sgd",
                    "--batch-size", "16", "--epochs", "1", "--workers", "2",
                    *self.server_args())
        self.assertIn("warning: --batch-size 16 over --workers 2 is 8 rows per rank per step",
                      r.stderr)
        quiet = self.ok("train", "--data", IRIS, "--label-column", "target", "--optimizer",
                        "sgd", "--batch-size", "256", "--epochs", "1", "--workers", "2",
                        *self.server_args())
        self.assertNotIn("warning", quiet.stderr)


class ClassNamesTest(CliTestCase):
    """String labels become the model's class names, sorted as scikit-learn's classes_."""
    NAMES = {0: "zeta", 1: "alpha", 2: "mu"}  # sorted: alpha, mu, zeta (not the numeric order)

    def named_iris(self):
        path = os.path.join(self.root, "named_iris.csv")
        lines = read(IRIS).splitlines()
        with open(path, "w") as f:
            f.write(lines[0].replace("target", "species") + "\n")
            for line in lines[1:]:
                *x, y = line.split(",")
                f.write(",".join(x + [self.NAMES[int(float(y))]]) + "\n")
        return path

    def test_string_labels_train_save_and_predict_by_name_like_scikit_learn(self):
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        data = self.named_iris()
        model = os.path.join(self.root, "named.npz")
        r = self.ok("train", "--data", data, "--label-column", "species", "--tol", "1e-10",
                    "--save-model", model, "-o", "json", *self.server_args())
        job = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(job["result"]["summary"]["class_names"], ["alpha", "mu", "zeta"])
        self.assertEqual(np.load(model)["class_names"].tolist(), ["alpha", "mu", "zeta"])
        # Local predictions print the names; the evaluation's table names the classes.
        r = self.ok("predict", "--model-file", model, "--input", data, "--label-column", "species")
        rows = r.stdout.strip().splitlines()
        self.assertEqual(rows[0], "label,p_alpha,p_mu,p_zeta")
        ours = [row.split(",")[0] for row in rows[1:]]
        self.assertRegex(r.stderr, r"\n  alpha +\d")
        # The server's copy of the model predicts the same names.
        served = self.ok("predict", "--model", job["model_id"], "--input", data,
                         "--label-column", "species", "-o", "json", *self.server_args())
        labels = [json.loads(line)["label"] for line in served.stdout.splitlines()
                  if line.startswith('{"label"')]
        self.assertEqual(labels, ours)
        # scikit-learn on the same strings: the same classes_ and (same optimum) the same labels.
        x = np.genfromtxt(IRIS, delimiter=",", skip_header=1)[:, :-1]
        y = [row.rsplit(",", 1)[1] for row in read(data).splitlines()[1:]]
        sk = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(x, y)
        self.assertEqual(sk.classes_.tolist(), ["alpha", "mu", "zeta"])
        agree = sum(a == b for a, b in zip(sk.predict(x).tolist(), ours))
        self.assertGreaterEqual(agree, 149, (sk.predict(x).tolist(), ours))
        # A label the model does not know is an error naming the file and line.
        unknown = os.path.join(self.root, "unknown.csv")
        with open(unknown, "w") as f:
            f.write("f0,f1,f2,f3,species\n5.1,3.5,1.4,0.2,alpha\n5,3,1,0.2,omega\n")
        r = self.run_cli("predict", "--model-file", model, "--input", unknown,
                         "--label-column", "species")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{unknown}:3: column 5: label 'omega' is not one of the classes "
                      "(alpha, mu, zeta)", r.stderr)

    def test_local_training_prints_the_class_table_by_name(self):
        r = self.ok("train", "--local", "--data", self.named_iris(), "--label-column", "species",
                    "--test-split", "0.2")
        self.assertRegex(r.stdout, r"\n  zeta +\d")

    def test_a_declared_class_without_rows_is_reported_for_server_data_too(self):
        ref = self.ok("upload", IRIS, *self.server_args()).stdout.strip()
        r = self.ok("train", "--data", ref, "--label-column", "target", "--classes", "4",
                    *self.server_args())
        self.assertIn("warning: no training rows of class 3 of 4", r.stderr)


def help_examples():
    """(command path, example command line) for every example of every --help text."""
    def helps(path):
        r = subprocess.run([CLI, *path, "--help"], capture_output=True, text=True)
        yield path, r.stdout
        in_commands = False
        for line in r.stdout.splitlines():
            if line.strip() == "Subcommands:":
                in_commands = True
                continue
            m = re.match(r"^  (\w[\w-]*)\s{2,}", line) if in_commands else None
            if m:
                yield from helps(path + [m.group(1)])
            elif in_commands and not line.startswith("  "):
                in_commands = False

    out = []
    for path, text in helps([]):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("Example"):
                continue
            command = ""
            for follow in lines[i + 1:]:
                if not follow.startswith("  "):
                    break
                command += follow.strip()
                if command.endswith("\\"):
                    command = command[:-1] + " "
                    continue
                out.append((" ".join(path), command))
                command = ""
    return out


class HelpExamplesTest(CliTestCase):
    def test_every_help_example_runs_as_written(self):
        examples = help_examples()
        self.assertGreater(len(examples), 15, examples)
        work = tempfile.mkdtemp(prefix="examples-", dir=self.root)
        shutil.copy(IRIS, os.path.join(work, "iris.csv"))
        with open(IRIS) as src, open(os.path.join(work, "rows.csv"), "w") as dst:
            for line in src:
                dst.write(",".join(line.rstrip("\n").split(",")[:-1]) + "\n")
        # The ids the examples name: job-1 and model-1 (a finished job), job-2 and job-3 (queued
        # for more workers than there are, for `cancel`), dataset-2 (unused), model-2 (written
        # by a train example), from a server of our own.
        server = Server(self.root)
        try:
            env = self.env(LOGIT_SERVER=server.address,
                           PATH=os.path.dirname(os.path.abspath(CLI)) + ":" + os.environ["PATH"])
            run = lambda *a: subprocess.run([CLI, *a], capture_output=True, text=True, env=env,
                                            cwd=work, timeout=300)
            first = run("train", "--data", "iris.csv", "--label-column", "target")
            self.assertEqual(first.returncode, 0, first.stderr)
            for _ in range(2):
                r = run("train", "--data", "iris.csv", "--label-column", "target",
                        "--workers", "3", "--detach")
                self.assertEqual(r.returncode, 0, r.stderr)
            # dataset-2, free for `dataset rm` (iris.csv, dataset-1, is needed by the queued jobs).
            with open(os.path.join(work, "old.csv"), "w") as f:
                f.write("a,b,label\n1,2,0\n3,4,1\n")
            r = run("upload", "old.csv")
            self.assertEqual(r.stdout.strip(), "dataset:dataset-2", r.stderr)
            # Training examples next: the others use what they write (iris.npz, model-2).
            # `cancel` first: until then its two queued jobs hold the head of the queue.
            examples.sort(key=lambda e: (e[0] != "cancel", e[0] != "train",
                                         not e[1].startswith("logit train")))
            for path, command in examples:
                with self.subTest(command=command):
                    r = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                       env=env, cwd=work, timeout=600)
                    self.assertEqual(r.returncode, 0,
                                     f"'{command}' (logit {path} --help):\n{r.stdout[-2000:]}\n"
                                     f"{r.stderr[-2000:]}")
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
