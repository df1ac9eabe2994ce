// Fault injection against real processes: a logit-server and external logit-workers on loopback
// run a mix of jobs while workers are killed (SIGKILL) and hung (SIGSTOP, then SIGCONT) at random
// and the coordinator is killed once and restarted on the same address and data dir. Then every
// job's spec runs again without faults, and the report gives jobs submitted and succeeded,
// retries, events lost or duplicated (watchers that reconnect from the last sequence seen, and a
// replay from 1), each job's final objective (L-BFGS: weights too) against its uninterrupted
// run, and how long the workers took to register with a restarted coordinator. Exit status: 0 when
// everything held, 1 when a check failed (or the coordinator did not come back), 2 when the run
// could not be set up, 130 when interrupted (SIGINT / SIGTERM; every process it started is stopped
// in every case). Logs, the data dir, each job's events and the report stay in the work dir. Not a
// ctest test: tests/fault/run_fault_injection.sh runs it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/time_util.h"
#include "logit/v1/training.grpc.pb.h"
#include "worker/common/mutex.h"
#include "worker/model/model_io.h"

extern char** environ;

namespace logit::fault {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

// Set by SIGINT / SIGTERM: every loop ends and the processes are stopped.
std::atomic<bool> g_interrupted{false};

void OnInterrupt(int) { g_interrupted = true; }

struct Options {
  std::string server_bin = "build/server/logit-server";
  std::string worker_bin = "build/worker/logit-worker";
  int workers = 4;            // external workers (restarted after a kill)
  int jobs = 8;               // jobs of the mix (cycled)
  double duration_s = 120;    // hard bound of the chaos phase (submission to the last job's end)
  int faults = 6;             // worker kills + stops at most
  int coordinator_kills = 1;  // SIGKILL + restart of the coordinator, among the worker faults
  uint64_t seed = 0;          // 0: from the clock (printed: the same random choices again)
  std::string work_dir;       // "": a new directory under /tmp
  std::string data_root = "/usr/share/datasets";
  std::string test_data = "tests/data";  // iris.csv, digits.csv, breast_cancer.csv
  double reference_timeout_s = 60;       // bound of the uninterrupted reruns
};

// The server's timing flags: short, so that lost and hung workers are given up on quickly.
constexpr double kWorkerTimeoutS = 3;
constexpr int kHeartbeatMs = 200;
constexpr double kCollectiveTimeoutS = 5;
constexpr double kRetryBackoffS = 0.5;
constexpr int kMaxRetries = 10;  // a job hit by several faults must still not run out

// Thresholds of "the same as uninterrupted" (tests/integration/fault_tolerance_test.cc).
constexpr double kMaxWeightDiff = 1e-6;        // L-BFGS: max |W - W_ref| and |b - b_ref|
constexpr double kMaxObjectiveRelDiff = 1e-4;  // SGD / Adam: |f - f_ref| / |f_ref|

double SecondsSince(Clock::time_point t) { return Seconds(Clock::now() - t).count(); }

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Sleeps `d`, waking early on an interrupt.
void Nap(Seconds d) {
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(d);
  while (!g_interrupted && Clock::now() < until) {
    std::this_thread::sleep_for(
        std::min<Clock::duration>(until - Clock::now(), std::chrono::milliseconds(20)));
  }
}

// A free TCP port on loopback (the server must come back on the same address).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// What happened when, for the report; printed to stderr as it happens. Thread-safe.
class Timeline {
 public:
  explicit Timeline(Clock::time_point start) : start_(start) {}
  void Add(const std::string& what) {
    const std::string line = absl::StrFormat("t=%6.1fs  %s", SecondsSince(start_), what);
    std::cerr << "fault_inject: " << line << std::endl;
    MutexLock lock(&mu_);
    lines_.push_back(line);
  }
  std::vector<std::string> lines() {
    MutexLock lock(&mu_);
    return lines_;
  }

 private:
  const Clock::time_point start_;
  Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

// A child process whose stdout and stderr go to one file, killed by the kernel
// (PR_SET_PDEATHSIG) if this tool dies first. The death signal follows the thread that forked:
// start children from the main thread only. Not thread-safe.
class ChildProcess {
 public:
  // nullptr (and `error`) when the program could not be started.
  static std::unique_ptr<ChildProcess> Start(const std::vector<std::string>& args,
                                             const std::string& log_path, std::string* error) {
    // Everything the child needs is built before fork: between fork and exec the child of this
    // multithreaded process may only make async-signal-safe calls.
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log_fd < 0 || null_fd < 0) {
      *error = absl::StrCat("cannot open ", log_path, ": ", std::strerror(errno));
      if (log_fd >= 0) close(log_fd);
      if (null_fd >= 0) close(null_fd);
      return nullptr;
    }
    sigset_t none;
    sigemptyset(&none);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      dup2(null_fd, 0);
      dup2(log_fd, 1);
      dup2(log_fd, 2);
      execve(argv[0], argv.data(), environ);
      _exit(127);
    }
    close(log_fd);
    close(null_fd);
    if (pid < 0) {
      *error = absl::StrCat("fork: ", std::strerror(errno));
      return nullptr;
    }
    return std::unique_ptr<ChildProcess>(new ChildProcess(pid));
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (running()) {
      kill(pid_, SIGKILL);
      Wait(Seconds(10));
    }
  }

  pid_t pid() const { return pid_; }
  bool running() const { return !exited_; }
  void Signal(int sig) {
    if (running()) kill(pid_, sig);
  }
  // Reaps without blocking; true when the process has exited.
  bool Poll() {
    if (exited_) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      status_ = status;
    }
    return exited_;
  }
  // True when the process exited within `timeout`.
  bool Wait(Seconds timeout) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
    while (!Poll()) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }
  // "exit N" or "signal N (NAME)"; REQUIRES: exited.
  std::string HowItEnded() const {
    if (WIFEXITED(status_)) return absl::StrCat("exit ", WEXITSTATUS(status_));
    if (WIFSIGNALED(status_)) {
      return absl::StrCat("signal ", WTERMSIG(status_), " (", strsignal(WTERMSIG(status_)), ")");
    }
    return "unknown status";
  }
  bool ExitedCleanly() const { return exited_ && WIFEXITED(status_) && WEXITSTATUS(status_) == 0; }

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  const pid_t pid_;
  bool exited_ = false;
  int status_ = 0;
};

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments args;
  // A restarted coordinator is found again within half a second.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

void SetDeadline(grpc::ClientContext* ctx, double seconds) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
}

std::string Describe(const grpc::Status& st) {
  return absl::StrCat("code ", st.error_code(), ": ", st.error_message());
}

// The status without the details that vary from call to call (addresses, ports).
std::string Kind(const grpc::Status& st) {
  const std::string& m = st.error_message();
  return absl::StrCat("code ", st.error_code(), ": ", m.substr(0, m.find(';')));
}

// The coordinator and the external workers. Main thread only.
class Cluster {
 public:
  Cluster(const Options& options, std::string address, std::string dir, Timeline* timeline)
      : options_(options), address_(std::move(address)), dir_(std::move(dir)), timeline_(timeline) {
    slots_.resize(options_.workers);
  }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;
  ~Cluster() { StopAll(); }

  const std::string& address() const { return address_; }

  // Starts the coordinator and waits until it listens on address(); false (with `error`) when it
  // exits or does not listen within a minute.
  bool StartServer(std::string* error) {
    ++server_starts_;
    const std::string log = absl::StrCat(dir_, "/server.", server_starts_, ".log");
    server_ = ChildProcess::Start(
        {options_.server_bin, "--listen", address_, "--data-dir", dir_ + "/data", "--data-root",
         options_.data_root, "--local-workers", "0", "--worker-timeout",
         absl::StrCat(kWorkerTimeoutS), "--heartbeat-ms", absl::StrCat(kHeartbeatMs),
         "--collective-timeout", absl::StrCat(kCollectiveTimeoutS), "--retry-backoff",
         absl::StrCat(kRetryBackoffS), "--retry-backoff-max", "2"},
        log, error);
    if (server_ == nullptr) return false;
    server_crash_recorded_ = false;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline && !g_interrupted) {
      if (ReadFile(log).find("listening on " + address_) != std::string::npos) return true;
      if (server_->Poll()) {
        *error = absl::StrCat("logit-server ended (", server_->HowItEnded(), ") before listening; ",
                              "see ", log);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    *error = absl::StrCat("logit-server did not listen on ", address_, " within 60 s; see ", log);
    return false;
  }

  // SIGKILL, reaped.
  void KillServer() {
    server_->Signal(SIGKILL);
    server_->Wait(Seconds(10));
  }
  pid_t server_pid() const { return server_ ? server_->pid() : -1; }

  void StartWorker(int slot) {
    Slot& s = slots_[slot];
    ++s.generation;
    s.log = absl::StrCat(dir_, "/worker", slot, ".", s.generation, ".log");
    std::string error;
    s.proc = ChildProcess::Start({options_.worker_bin, "--server", address_, "--threads", "1"},
                                 s.log, &error);
    s.stopped = false;
    s.restart_at.reset();
    s.resume_at.reset();
    if (s.proc == nullptr) timeline_->Add(absl::StrCat("cannot start worker ", slot, ": ", error));
  }
  void StartWorkers() {
    for (int i = 0; i < options_.workers; ++i) StartWorker(i);
  }

  int workers() const { return static_cast<int>(slots_.size()); }
  bool Alive(int slot) const { return slots_[slot].proc && slots_[slot].proc->running(); }
  bool Stopped(int slot) const { return slots_[slot].stopped; }
  pid_t Pid(int slot) const { return slots_[slot].proc ? slots_[slot].proc->pid() : -1; }

  // The id the worker registered under last ("" before it registered).
  std::string WorkerId(int slot) const {
    const std::string text = ReadFile(slots_[slot].log);
    // The worker's log line: "... INFO logit-worker: registered server=ADDR worker=w-N".
    const std::string key = "registered server=" + address_ + " worker=";
    const size_t at = text.rfind(key);
    if (at == std::string::npos) return "";
    const size_t begin = at + key.size();
    return text.substr(begin, text.find_first_of(" \n", begin) - begin);
  }

  // How many times the worker process in `slot` has registered so far, and which process that is
  // (a new one after each restart).
  std::pair<int, int> Registrations(int slot) const {
    const std::string text = ReadFile(slots_[slot].log);
    int n = 0;
    for (size_t at = text.find("registered server="); at != std::string::npos;
         at = text.find("registered server=", at + 1)) {
      ++n;
    }
    return {slots_[slot].generation, n};
  }

  // SIGKILL; the worker comes back after `restart_after`.
  void KillWorker(int slot, Seconds restart_after) {
    Slot& s = slots_[slot];
    s.proc->Signal(SIGKILL);
    s.proc->Wait(Seconds(10));
    s.restart_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(restart_after);
  }
  // SIGSTOP; SIGCONT after `stop_for`.
  void StopWorker(int slot, Seconds stop_for) {
    Slot& s = slots_[slot];
    s.proc->Signal(SIGSTOP);
    s.stopped = true;
    s.resume_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(stop_for);
  }

  // Resumes stopped workers and restarts killed ones when their time has come (`now_all`: at
  // once); records processes that ended without being killed here (crashes) and restarts them.
  void Tend(bool now_all = false) {
    const auto now = Clock::now();
    for (int i = 0; i < workers(); ++i) {
      Slot& s = slots_[i];
      if (s.stopped && (now_all || now >= *s.resume_at)) {
        s.proc->Signal(SIGCONT);
        s.stopped = false;
        s.resume_at.reset();
        timeline_->Add(absl::StrCat("SIGCONT worker ", i, " (pid ", s.proc->pid(), ")"));
      }
      if (s.proc && !s.restart_at && s.proc->Poll()) {
        const std::string what =
            absl::StrCat("worker ", i, " (pid ", s.proc->pid(),
                         ") ended by itself: ", s.proc->HowItEnded(), "; log ", s.log);
        crashes_.push_back(what);
        timeline_->Add("UNEXPECTED: " + what);
        s.restart_at = now + std::chrono::seconds(1);
      }
      if (s.restart_at && (now_all || now >= *s.restart_at)) {
        StartWorker(i);
        timeline_->Add(absl::StrCat("restarted worker ", i, " (pid ", Pid(i), ")"));
      }
    }
    if (server_ && !server_killed_on_purpose_ && server_->Poll() && !server_crash_recorded_) {
      server_crash_recorded_ = true;
      const std::string what = absl::StrCat("logit-server (pid ", server_->pid(),
                                            ") ended by itself: ", server_->HowItEnded());
      crashes_.push_back(what);
      timeline_->Add("UNEXPECTED: " + what);
    }
  }
  // Marks the next server exit as intended (KillServer), until the next StartServer.
  void ExpectServerExit(bool expected) { server_killed_on_purpose_ = expected; }

  const std::vector<std::string>& crashes() const { return crashes_; }

  // SIGCONT and SIGTERM to everything, SIGKILL after 20 s; records a coordinator that does not
  // shut down cleanly. Idempotent.
  void StopAll() {
    for (Slot& s : slots_) {
      if (s.proc && s.proc->running()) {
        s.proc->Signal(SIGCONT);
        s.proc->Signal(SIGTERM);
      }
    }
    if (server_ && server_->running()) {
      server_->Signal(SIGTERM);
      if (!server_->Wait(Seconds(20))) {
        crashes_.push_back("logit-server did not stop within 20 s of SIGTERM");
      } else if (!server_->ExitedCleanly() && !server_killed_on_purpose_) {
        crashes_.push_back(
            absl::StrCat("logit-server ended with ", server_->HowItEnded(), " on SIGTERM"));
      }
    }
    for (Slot& s : slots_) {
      if (!s.proc || !s.proc->running()) continue;
      if (!s.proc->Wait(Seconds(20))) {
        crashes_.push_back(
            absl::StrCat("worker pid ", s.proc->pid(), " did not stop within 20 s of SIGTERM"));
      } else if (!s.proc->ExitedCleanly()) {
        crashes_.push_back(absl::StrCat("worker pid ", s.proc->pid(), " ended with ",
                                        s.proc->HowItEnded(), " on SIGTERM; log ", s.log));
      }
    }
    for (Slot& s : slots_) s.proc.reset();  // SIGKILL what is left
    server_.reset();
  }

 private:
  struct Slot {
    std::unique_ptr<ChildProcess> proc;
    std::string log;
    int generation = 0;
    bool stopped = false;
    std::optional<Clock::time_point> resume_at;   // while stopped
    std::optional<Clock::time_point> restart_at;  // while dead
  };

  const Options& options_;
  const std::string address_, dir_;
  Timeline* const timeline_;
  std::unique_ptr<ChildProcess> server_;
  int server_starts_ = 0;
  bool server_killed_on_purpose_ = false;
  bool server_crash_recorded_ = false;
  std::vector<Slot> slots_;
  std::vector<std::string> crashes_;
};

bool IsFinal(v1::JobState s) { return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED; }

// Follows one job's WatchJob stream the way a client that survives coordinator restarts does:
// on any error it reconnects from the sequence after the last one it saw. Progress events (not
// stored, numbered as the latest stored event) are not recorded. Thread-safe.
class JobWatcher {
 public:
  struct Record {
    std::vector<v1::JobEvent> events;  // stored events in arrival order
    int reconnects = 0;
    std::map<std::string, int> errors;  // stream error -> count
    bool finished = false;              // a stream ended OK (after the final event)
  };

  JobWatcher(std::string address, std::string job_id)
      : address_(std::move(address)), job_id_(std::move(job_id)) {
    thread_ = std::thread([this] { Follow(); });
  }
  JobWatcher(const JobWatcher&) = delete;
  JobWatcher& operator=(const JobWatcher&) = delete;
  ~JobWatcher() { Stop(); }

  bool finished() {
    MutexLock lock(&mu_);
    return record_.finished;
  }
  // Cancels the stream in flight and joins; idempotent.
  void Stop() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
      if (ctx_ != nullptr) ctx_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }
  Record record() {
    MutexLock lock(&mu_);
    return record_;
  }

 private:
  void Follow() {
    while (true) {
      auto stub = v1::TrainingService::NewStub(MakeChannel(address_));
      grpc::ClientContext ctx;
      v1::WatchJobRequest req;
      req.set_job_id(job_id_);
      {
        MutexLock lock(&mu_);
        if (stop_) return;
        ctx_ = &ctx;
        req.set_from_sequence(record_.events.empty() ? 1 : record_.events.back().sequence() + 1);
      }
      auto reader = stub->WatchJob(&ctx, req);
      v1::JobEvent ev;
      while (reader->Read(&ev)) {
        if (ev.has_progress()) continue;
        MutexLock lock(&mu_);
        record_.events.push_back(ev);
      }
      const grpc::Status st = reader->Finish();
      {
        MutexLock lock(&mu_);
        ctx_ = nullptr;
        if (st.ok()) {
          record_.finished = true;
          return;
        }
        if (stop_) return;
        ++record_.reconnects;
        ++record_.errors[Kind(st)];
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  const std::string address_, job_id_;
  Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;  // the stream in flight
  Record record_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// One line of a job's history for the event files of the work dir.
std::string EventLine(const v1::JobEvent& e) {
  std::string line =
      absl::StrCat(e.sequence(), " ", google::protobuf::util::TimeUtil::ToString(e.time()), " ");
  if (e.has_state_change()) {
    absl::StrAppend(&line, v1::JobState_Name(e.state_change().state()), ": ",
                    e.state_change().reason());
  } else if (e.has_epoch()) {
    absl::StrAppend(&line, "epoch ", e.epoch().epoch(), " objective ",
                    absl::StrFormat("%.10g", e.epoch().objective()));
  } else if (e.has_checkpoint()) {
    absl::StrAppend(&line, "checkpoint ", e.checkpoint().number(), " after epoch ",
                    e.checkpoint().epoch(), " of attempt ", e.checkpoint().attempt());
  } else {
    absl::StrAppend(&line, "(other)");
  }
  return line;
}

// One job of the mix.
struct JobPlan {
  std::string name;  // what it is, e.g. "fmnist-lbfgs"
  std::string data;  // the data set, for the report
  v1::JobSpec spec;
};

// What became of one job.
struct JobOutcome {
  JobPlan plan;
  std::string id;
  v1::Job final_job;  // GetJob at the end
  JobWatcher::Record watched;
  // Events: against 1..last_sequence.
  int64_t lost = 0, duplicated = 0, beyond_last = 0, out_of_order = 0;
  int64_t replay_lost = 0, replay_duplicated = 0, differing = 0;
  // The uninterrupted rerun.
  std::optional<v1::Job> reference;
  std::string reference_problem;  // why there is no comparison
  double objective_rel_diff = NAN;
  double max_weight_diff = NAN;  // L-BFGS only
  bool matches = false;
};

// Fashion-MNIST from --data-root.
v1::JobSpec FashionSpec() {
  v1::JobSpec s;
  s.set_data("server:fashion-mnist/train-images-idx3-ubyte.gz");
  s.set_labels("server:fashion-mnist/train-labels-idx1-ubyte.gz");
  return s;
}

v1::JobSpec CsvSpec(const std::string& dataset_id) {
  v1::JobSpec s;
  s.set_data("dataset:" + dataset_id);
  s.set_label_column("target");
  return s;
}

// The mix: every optimizer on the shipped CSVs and on Fashion-MNIST, one and two workers, some
// allowed to retry on fewer ranks, small checkpoint periods; sized to run for seconds each on a
// loaded 2-core machine so that faults land mid-run. `datasets`: file name -> dataset id.
std::vector<JobPlan> JobMix(const std::map<std::string, std::string>& datasets) {
  std::vector<JobPlan> mix;
  {
    JobPlan p{"fmnist-lbfgs", "fashion-mnist", FashionSpec()};
    p.spec.set_optimizer(v1::LBFGS);
    p.spec.set_workers(2);
    p.spec.set_min_workers(1);
    p.spec.set_l2(1e-4);
    p.spec.set_epochs(100);
    p.spec.set_tol(1e-12);  // runs every iteration
    p.spec.set_checkpoint_every(5);
    mix.push_back(p);
  }
  {
    JobPlan p{"digits-adam", "digits.csv", CsvSpec(datasets.at("digits.csv"))};
    p.spec.set_optimizer(v1::ADAM);
    p.spec.set_workers(2);
    p.spec.set_lr(1e-2);
    p.spec.set_batch_size(64);
    p.spec.set_epochs(300);
    p.spec.set_l2(1e-3);
    p.spec.set_standardize(true);
    p.spec.set_checkpoint_every(10);
    mix.push_back(p);
  }
  {
    JobPlan p{"fmnist-sgd-momentum", "fashion-mnist", FashionSpec()};
    p.spec.set_optimizer(v1::SGD);
    p.spec.set_workers(1);
    p.spec.set_lr(0.05);
    p.spec.set_momentum(0.9);
    p.spec.set_epochs(12);
    p.spec.set_l2(1e-4);
    p.spec.set_checkpoint_every(1);
    mix.push_back(p);
  }
  {
    JobPlan p{"breast-lbfgs", "breast_cancer.csv", CsvSpec(datasets.at("breast_cancer.csv"))};
    p.spec.set_optimizer(v1::LBFGS);
    p.spec.set_workers(2);
    p.spec.set_l2(1e-4);
    p.spec.set_standardize(true);
    p.spec.set_epochs(300);
    p.spec.set_tol(1e-12);
    p.spec.set_checkpoint_every(1);
    mix.push_back(p);
  }
  {
    JobPlan p{"fmnist-adam", "fashion-mnist", FashionSpec()};
    p.spec.set_optimizer(v1::ADAM);
    p.spec.set_workers(2);
    p.spec.set_min_workers(1);
    p.spec.set_epochs(15);
    p.spec.set_l2(1e-4);
    p.spec.set_checkpoint_every(1);
    mix.push_back(p);
  }
  {
    JobPlan p{"iris-sgd-nesterov", "iris.csv", CsvSpec(datasets.at("iris.csv"))};
    p.spec.set_optimizer(v1::SGD);
    p.spec.set_workers(1);
    p.spec.set_lr(0.05);
    p.spec.set_momentum(0.9);
    p.spec.set_nesterov(true);
    p.spec.set_batch_size(16);
    p.spec.set_epochs(1000);
    p.spec.set_l2(1e-3);
    p.spec.set_standardize(true);
    p.spec.set_checkpoint_every(20);
    mix.push_back(p);
  }
  {
    JobPlan p{"digits-lbfgs", "digits.csv", CsvSpec(datasets.at("digits.csv"))};
    p.spec.set_optimizer(v1::LBFGS);
    p.spec.set_workers(1);
    p.spec.set_l2(1e-4);
    p.spec.set_epochs(700);
    p.spec.set_tol(1e-12);
    p.spec.set_checkpoint_every(2);
    mix.push_back(p);
  }
  {
    JobPlan p{"fmnist-lbfgs-1", "fashion-mnist", FashionSpec()};
    p.spec.set_optimizer(v1::LBFGS);
    p.spec.set_workers(1);
    p.spec.set_l2(1e-3);
    p.spec.set_epochs(50);
    p.spec.set_tol(1e-12);
    p.spec.set_checkpoint_every(4);
    mix.push_back(p);
  }
  for (JobPlan& p : mix) p.spec.set_max_retries(kMaxRetries);
  return mix;
}

// Seconds from submission to the end ("-" while unfinished).
std::string Turnaround(const v1::Job& j) {
  if (!IsFinal(j.state())) return "-";
  using google::protobuf::util::TimeUtil;
  return absl::StrFormat("%.0f",
                         TimeUtil::DurationToMilliseconds(j.finished() - j.created()) / 1e3);
}

std::string WorkersText(const v1::JobSpec& s) {
  std::string t = absl::StrCat(s.workers());
  if (s.has_min_workers() && s.min_workers() != s.workers())
    absl::StrAppend(&t, "(min ", s.min_workers(), ")");
  return t;
}

// The whole run: setup, chaos, checks, references, report.
class FaultRun {
 public:
  explicit FaultRun(Options options)
      : options_(std::move(options)),
        start_(Clock::now()),
        timeline_(start_),
        rng_(options_.seed) {}

  int Run() {
    std::string error;
    if (!Setup(&error)) {
      std::cerr << "fault_inject: setup failed: " << error << std::endl;
      return 2;
    }
    if (!SubmitJobs(&error)) {
      std::cerr << "fault_inject: " << error << std::endl;
      return 2;
    }
    if (!Chaos(&error)) {
      std::cerr << "fault_inject: " << error << std::endl;
      cluster_->StopAll();
      for (const std::string& c : cluster_->crashes()) std::cerr << "fault_inject: " << c << "\n";
      return g_interrupted ? 130 : 1;  // else the coordinator did not come back: a failure
    }
    Settle();
    CheckEvents();
    RunReferences();
    cluster_->StopAll();
    return Report();
  }

 private:
  bool Setup(std::string* error) {
    for (std::string* bin : {&options_.server_bin, &options_.worker_bin}) {
      *bin = fs::absolute(*bin).string();
      if (access(bin->c_str(), X_OK) != 0) {
        *error = absl::StrCat(*bin, ": not an executable");
        return false;
      }
    }
    for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}) {
      const std::string path = absl::StrCat(options_.data_root, "/fashion-mnist/", name);
      if (access(path.c_str(), R_OK) != 0) {
        *error = absl::StrCat(path, ": not readable (Fashion-MNIST under --data-root)");
        return false;
      }
    }
    for (const char* name : {"iris.csv", "digits.csv", "breast_cancer.csv"}) {
      const std::string path = absl::StrCat(options_.test_data, "/", name);
      if (access(path.c_str(), R_OK) != 0) {
        *error = absl::StrCat(path, ": not readable (--test-data)");
        return false;
      }
    }
    // A data dir from an earlier run would bring its jobs back.
    if (!options_.work_dir.empty() && fs::exists(options_.work_dir + "/data")) {
      *error = absl::StrCat(options_.work_dir, " was used before: give a new --work-dir");
      return false;
    }
    if (options_.work_dir.empty()) {
      char tmpl[] = "/tmp/logit-fault-XXXXXX";
      if (mkdtemp(tmpl) == nullptr) {
        *error = absl::StrCat("mkdtemp: ", std::strerror(errno));
        return false;
      }
      options_.work_dir = tmpl;
    }
    std::error_code ec;
    fs::create_directories(options_.work_dir, ec);
    if (ec) {
      *error = absl::StrCat(options_.work_dir, ": ", ec.message());
      return false;
    }
    options_.work_dir = fs::absolute(options_.work_dir).string();
    const int port = FreePort();
    if (port == 0) {
      *error = "no free port on 127.0.0.1";
      return false;
    }
    cluster_ = std::make_unique<Cluster>(options_, absl::StrCat("127.0.0.1:", port),
                                         options_.work_dir, &timeline_);
    timeline_.Add(absl::StrCat("work dir ", options_.work_dir, ", seed ", options_.seed));
    if (!cluster_->StartServer(error)) return false;
    timeline_.Add(absl::StrCat("logit-server pid ", cluster_->server_pid(), " listening on ",
                               cluster_->address()));
    stub_ = v1::TrainingService::NewStub(MakeChannel(cluster_->address()));
    cluster_->StartWorkers();
    for (const char* name : {"iris.csv", "digits.csv", "breast_cancer.csv"}) {
      const std::string path = absl::StrCat(options_.test_data, "/", name);
      const std::string bytes = ReadFile(path);
      if (bytes.empty()) {
        *error = absl::StrCat(path, ": missing or empty (--test-data)");
        return false;
      }
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 30);
      v1::Dataset dataset;
      auto writer = stub_->UploadDataset(&ctx, &dataset);
      v1::UploadDatasetRequest head;
      head.mutable_info()->set_name(name);
      writer->Write(head);
      for (size_t i = 0; i < bytes.size(); i += 64 << 10) {
        v1::UploadDatasetRequest chunk;
        chunk.set_chunk(bytes.substr(i, 64 << 10));
        writer->Write(chunk);
      }
      writer->WritesDone();
      const grpc::Status st = writer->Finish();
      if (!st.ok()) {
        *error = absl::StrCat("upload ", name, ": ", Describe(st));
        return false;
      }
      datasets_[name] = dataset.id();
    }
    return true;
  }

  bool SubmitJobs(std::string* error) {
    const std::vector<JobPlan> mix = JobMix(datasets_);
    for (int i = 0; i < options_.jobs; ++i) {
      JobOutcome o;
      o.plan = mix[i % mix.size()];
      if (i >= static_cast<int>(mix.size())) {
        o.plan.spec.set_seed(i / mix.size());  // the same kind of job, another shuffle / split
        o.plan.name += absl::StrCat("#", i / mix.size() + 1);
      }
      o.plan.spec.set_name(o.plan.name);
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 30);
      v1::SubmitJobRequest req;
      *req.mutable_spec() = o.plan.spec;
      v1::Job job;
      const grpc::Status st = stub_->SubmitJob(&ctx, req, &job);
      if (!st.ok()) {
        *error = absl::StrCat("submit ", o.plan.name, ": ", Describe(st));
        return false;
      }
      o.id = job.id();
      o.final_job = job;
      timeline_.Add(absl::StrCat("submitted ", o.id, " ", o.plan.name));
      watchers_.push_back(std::make_unique<JobWatcher>(cluster_->address(), o.id));
      outcomes_.push_back(std::move(o));
    }
    return true;
  }

  // Polls every job (GetJob); a job the coordinator cannot answer for keeps its last state.
  void PollJobs() {
    for (JobOutcome& o : outcomes_) {
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 2);
      v1::GetJobRequest req;
      req.set_job_id(o.id);
      v1::Job job;
      if (stub_->GetJob(&ctx, req, &job).ok()) o.final_job = job;
    }
  }
  bool AllFinal() const {
    return std::all_of(outcomes_.begin(), outcomes_.end(),
                       [](const JobOutcome& o) { return IsFinal(o.final_job.state()); });
  }
  bool AnyRunning() const {
    return std::any_of(outcomes_.begin(), outcomes_.end(),
                       [](const JobOutcome& o) { return o.final_job.state() == v1::RUNNING; });
  }

  double Uniform(double lo, double hi) { return std::uniform_real_distribution<>(lo, hi)(rng_); }

  // A worker to hit: most of the time one that holds a rank of a running job. -1: none usable.
  int PickVictim(std::string* what) {
    std::map<std::string, std::string> rank_of;  // worker id -> "job-3 rank 1"
    for (const JobOutcome& o : outcomes_) {
      if (o.final_job.state() != v1::RUNNING) continue;
      for (int r = 0; r < o.final_job.workers_size(); ++r) {
        rank_of[o.final_job.workers(r)] = absl::StrCat(o.id, " (", o.plan.name, ") rank ", r);
      }
    }
    std::vector<int> busy, usable;
    for (int i = 0; i < cluster_->workers(); ++i) {
      if (!cluster_->Alive(i) || cluster_->Stopped(i)) continue;
      usable.push_back(i);
      if (rank_of.count(cluster_->WorkerId(i))) busy.push_back(i);
    }
    if (usable.empty()) return -1;
    const std::vector<int>& from = (!busy.empty() && Uniform(0, 1) < 0.85) ? busy : usable;
    const int slot = from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng_)];
    const std::string id = cluster_->WorkerId(slot);
    *what = absl::StrCat("worker ", slot, " (pid ", cluster_->Pid(slot), ", ",
                         id.empty() ? "unregistered" : id, ", ",
                         rank_of.count(id) ? rank_of[id] : "idle", ")");
    return slot;
  }

  // SIGKILL, then a restart on the same address and data dir; false (with `error`) when the
  // coordinator does not come back.
  bool KillAndRestartCoordinator(std::string* error) {
    std::string running;
    for (const JobOutcome& o : outcomes_) {
      if (o.final_job.state() != v1::RUNNING) continue;
      absl::StrAppend(
          &running, running.empty() ? "" : ", ", o.id,
          o.final_job.has_latest_checkpoint()
              ? absl::StrCat(" (checkpoint at epoch ", o.final_job.latest_checkpoint().epoch(), ")")
              : " (no checkpoint)");
    }
    cluster_->ExpectServerExit(true);
    timeline_.Add(absl::StrCat("SIGKILL logit-server (pid ", cluster_->server_pid(),
                               "); running: ", running));
    cluster_->KillServer();
    ++coordinator_kills_;
    Nap(Seconds(Uniform(0.5, 1.5)));
    cluster_->ExpectServerExit(false);
    const auto t = Clock::now();
    if (!cluster_->StartServer(error)) return false;
    timeline_.Add(absl::StrFormat("logit-server restarted (pid %d), listening after %.1f s",
                                  cluster_->server_pid(), SecondsSince(t)));
    restarted_at_ = Clock::now();
    awaiting_registration_.clear();
    for (int i = 0; i < cluster_->workers(); ++i) {
      if (cluster_->Alive(i)) awaiting_registration_[i] = cluster_->Registrations(i);
    }
    return true;
  }

  // How long the workers that lived through the coordinator's restart took to register again
  // (their heartbeats and registrations back off while it is down). Workers killed or stopped
  // in the meantime are not counted.
  void TrackRegistrations() {
    if (awaiting_registration_.empty()) return;
    for (auto it = awaiting_registration_.begin(); it != awaiting_registration_.end();) {
      const int slot = it->first;
      const auto now = cluster_->Registrations(slot);
      if (!cluster_->Alive(slot) || cluster_->Stopped(slot) || now.first != it->second.first) {
        it = awaiting_registration_.erase(it);
      } else if (now.second > it->second.second) {
        registration_delays_.push_back(SecondsSince(restarted_at_));
        it = awaiting_registration_.erase(it);
      } else {
        ++it;
      }
    }
    if (awaiting_registration_.empty()) {
      timeline_.Add(
          absl::StrFormat("the workers that lived through it registered again within "
                          "%.1f s of the restart",
                          SecondsSince(restarted_at_)));
    }
  }

  // Injects faults until every job has ended or --duration has passed.
  bool Chaos(std::string* error) {
    const auto chaos_start = Clock::now();
    const auto deadline =
        chaos_start + std::chrono::duration_cast<Clock::duration>(Seconds(options_.duration_s));
    // Faults stop early enough for the last retries to finish within the bound.
    const auto faults_until = chaos_start + std::chrono::duration_cast<Clock::duration>(
                                                Seconds(0.7 * options_.duration_s));
    const auto gap = [&] {
      return std::chrono::duration_cast<Clock::duration>(
          Seconds(Uniform(0.02, 0.05) * options_.duration_s));
    };
    auto next_fault = chaos_start + gap();
    // Kill k of the coordinator comes after coordinator_after[k] worker faults, all in the first
    // half of them (jobs are still running then).
    std::vector<int> coordinator_after(options_.coordinator_kills);
    const int earliest = std::min(1, options_.faults);
    const int latest = std::max(earliest, options_.faults / 2);
    for (int& n : coordinator_after) {
      n = std::uniform_int_distribution<int>(earliest, latest)(rng_);
    }
    std::sort(coordinator_after.begin(), coordinator_after.end());
    auto last_poll = Clock::time_point();
    while (!g_interrupted) {
      const auto now = Clock::now();
      if (now - last_poll > std::chrono::milliseconds(250)) {
        PollJobs();
        last_poll = Clock::now();
        if (AllFinal()) break;
      }
      if (now >= deadline) break;
      cluster_->Tend();
      TrackRegistrations();
      const bool fault_due = now >= next_fault && now < faults_until;
      if (fault_due) PollJobs();  // the victim is picked by what runs now
      if (fault_due && AnyRunning()) {
        const bool coordinator_due = coordinator_kills_ < options_.coordinator_kills &&
                                     worker_faults() >= coordinator_after[coordinator_kills_];
        if (coordinator_due) {
          if (!KillAndRestartCoordinator(error)) return false;
          last_poll = Clock::time_point();
        } else if (worker_faults() < options_.faults) {
          std::string what;
          const int slot = PickVictim(&what);
          if (slot >= 0 && Uniform(0, 1) < 0.5) {
            const double back = Uniform(1, 2);
            timeline_.Add(absl::StrFormat("SIGKILL %s; restart in %.1f s", what, back));
            cluster_->KillWorker(slot, Seconds(back));
            ++worker_kills_;
          } else if (slot >= 0) {
            // Some stops end before --worker-timeout (the worker should be kept), most after.
            const double stop_for = Uniform(1.5, 8);
            timeline_.Add(absl::StrFormat("SIGSTOP %s for %.1f s", what, stop_for));
            cluster_->StopWorker(slot, Seconds(stop_for));
            ++worker_stops_;
            if (stop_for > kWorkerTimeoutS) ++long_stops_;
          }
        }
        next_fault = Clock::now() + gap();
      } else if (fault_due) {
        next_fault = now + std::chrono::milliseconds(200);  // hit jobs, not an idle cluster
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    chaos_seconds_ = SecondsSince(chaos_start);
    timeline_.Add(absl::StrFormat("chaos phase over after %.1f s: %s", chaos_seconds_,
                                  g_interrupted ? "interrupted"
                                  : AllFinal()  ? "every job has ended"
                                                : "time bound reached"));
    if (g_interrupted) *error = "interrupted";
    return !g_interrupted;
  }

  int worker_faults() const { return worker_kills_ + worker_stops_; }

  // Every worker back, unfinished jobs cancelled (and reported), watchers ended.
  void Settle() {
    cluster_->Tend(/*now_all=*/true);
    PollJobs();
    for (JobOutcome& o : outcomes_) {
      if (IsFinal(o.final_job.state())) continue;
      unfinished_.push_back(absl::StrCat(o.id, " (", o.plan.name, ") ",
                                         v1::JobState_Name(o.final_job.state()), ": ",
                                         o.final_job.reason()));
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 10);
      v1::CancelJobRequest req;
      req.set_job_id(o.id);
      v1::Job job;
      stub_->CancelJob(&ctx, req, &job);
    }
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    for (size_t i = 0; i < watchers_.size(); ++i) {
      while (!watchers_[i]->finished() && Clock::now() < deadline && !g_interrupted) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (!watchers_[i]->finished()) {
        problems_.push_back(absl::StrCat("the watcher of ", outcomes_[i].id,
                                         " had not seen the job end 30 s after the chaos phase"));
      }
      watchers_[i]->Stop();
      outcomes_[i].watched = watchers_[i]->record();
    }
    for (int attempt = 0; attempt < 50; ++attempt) {
      bool all = true;
      for (JobOutcome& o : outcomes_) {
        grpc::ClientContext ctx;
        SetDeadline(&ctx, 5);
        v1::GetJobRequest req;
        req.set_job_id(o.id);
        if (!stub_->GetJob(&ctx, req, &o.final_job).ok()) all = false;
      }
      if (all) break;
      Nap(Seconds(0.2));
    }
  }

  // The job's full history, replayed from sequence 1.
  std::vector<v1::JobEvent> Replay(const std::string& id, std::string* error) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 30);
    v1::WatchJobRequest req;
    req.set_job_id(id);
    req.set_from_sequence(1);
    auto reader = stub_->WatchJob(&ctx, req);
    std::vector<v1::JobEvent> events;
    v1::JobEvent ev;
    while (reader->Read(&ev)) {
      if (!ev.has_progress()) events.push_back(ev);
    }
    const grpc::Status st = reader->Finish();
    if (!st.ok()) *error = Describe(st);
    return events;
  }

  // Sequences against 1..last_sequence: missing ones, repeats, ones beyond the last.
  static void CountAgainst(const std::vector<v1::JobEvent>& events, int64_t last, int64_t* lost,
                           int64_t* duplicated, int64_t* beyond) {
    std::map<int64_t, int> seen;
    for (const v1::JobEvent& e : events) ++seen[e.sequence()];
    *lost = *duplicated = 0;
    if (beyond) *beyond = 0;
    for (int64_t s = 1; s <= last; ++s) *lost += seen.count(s) ? 0 : 1;
    for (const auto& [s, n] : seen) {
      *duplicated += n - 1;
      if (beyond && (s < 1 || s > last)) *beyond += n;
    }
  }

  void CheckEvents() {
    std::error_code ec;
    fs::create_directories(options_.work_dir + "/events", ec);
    for (JobOutcome& o : outcomes_) {
      const int64_t last = o.final_job.last_sequence();
      const std::vector<v1::JobEvent>& live = o.watched.events;
      CountAgainst(live, last, &o.lost, &o.duplicated, &o.beyond_last);
      for (size_t i = 1; i < live.size(); ++i) {
        if (live[i].sequence() <= live[i - 1].sequence()) ++o.out_of_order;
      }
      std::string error;
      const std::vector<v1::JobEvent> replay = Replay(o.id, &error);
      if (!error.empty()) {
        problems_.push_back(absl::StrCat("replay of ", o.id, " from 1 failed: ", error));
      }
      CountAgainst(replay, last, &o.replay_lost, &o.replay_duplicated, nullptr);
      std::map<int64_t, std::string> stored;
      for (const v1::JobEvent& e : replay) stored[e.sequence()] = e.SerializeAsString();
      for (const v1::JobEvent& e : live) {
        auto it = stored.find(e.sequence());
        if (it != stored.end() && it->second != e.SerializeAsString()) ++o.differing;
      }
      // The evidence: the stored history and what the live watcher saw, in arrival order.
      std::ofstream history(absl::StrCat(options_.work_dir, "/events/", o.id, ".txt"));
      for (const v1::JobEvent& e : replay) history << EventLine(e) << "\n";
      std::ofstream seen(absl::StrCat(options_.work_dir, "/events/", o.id, ".live.txt"));
      for (const v1::JobEvent& e : live) seen << EventLine(e) << "\n";
      if (o.beyond_last > 0 || o.out_of_order > 0 || o.differing > 0) {
        problems_.push_back(absl::StrCat(
            o.id, ": the live watcher saw ", o.beyond_last, " events beyond last_sequence ", last,
            ", ", o.out_of_order, " out of order, ", o.differing, " that differ from the replay"));
      }
    }
  }

  absl::StatusOr<LinearModel> Download(const std::string& model_id) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 60);
    v1::GetModelRequest req;
    req.set_model_id(model_id);
    auto reader = stub_->GetModel(&ctx, req);
    v1::GetModelResponse part;
    std::string bytes;
    while (reader->Read(&part)) bytes += part.chunk();
    const grpc::Status st = reader->Finish();
    if (!st.ok())
      return absl::UnavailableError(absl::StrCat("GetModel ", model_id, ": ", Describe(st)));
    return ParseModel(bytes, model_id + ".npz");
  }

  static double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double{a[i]} - b[i]));
    return m;
  }

  // Each succeeded job's spec again, all at once, with no faults.
  void RunReferences() {
    const auto start = Clock::now();
    std::vector<std::pair<JobOutcome*, std::string>> pending;  // (job, reference id)
    for (JobOutcome& o : outcomes_) {
      if (o.final_job.state() != v1::SUCCEEDED) {
        o.reference_problem = "not succeeded";
        continue;
      }
      v1::JobSpec spec = o.plan.spec;
      spec.set_name(o.plan.name + "-uninterrupted");
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 30);
      v1::SubmitJobRequest req;
      *req.mutable_spec() = spec;
      v1::Job job;
      const grpc::Status st = stub_->SubmitJob(&ctx, req, &job);
      if (!st.ok()) {
        o.reference_problem = "submit: " + Describe(st);
        continue;
      }
      pending.emplace_back(&o, job.id());
    }
    timeline_.Add(absl::StrCat("submitted ", pending.size(), " uninterrupted reruns"));
    const auto deadline =
        start + std::chrono::duration_cast<Clock::duration>(Seconds(options_.reference_timeout_s));
    while (!g_interrupted) {
      cluster_->Tend();
      bool all = true;
      for (auto& [o, id] : pending) {
        if (o->reference && IsFinal(o->reference->state())) continue;
        grpc::ClientContext ctx;
        SetDeadline(&ctx, 5);
        v1::GetJobRequest req;
        req.set_job_id(id);
        v1::Job job;
        if (stub_->GetJob(&ctx, req, &job).ok()) o->reference = job;
        all = all && o->reference && IsFinal(o->reference->state());
      }
      if (all || Clock::now() >= deadline) break;
      Nap(Seconds(0.25));
    }
    reference_seconds_ = SecondsSince(start);
    timeline_.Add(absl::StrFormat("uninterrupted reruns over after %.1f s", reference_seconds_));
    for (auto& [o, id] : pending) {
      if (!o->reference || o->reference->state() != v1::SUCCEEDED) {
        o->reference_problem =
            absl::StrCat("rerun ", id, " ",
                         o->reference ? absl::StrCat(v1::JobState_Name(o->reference->state()), ": ",
                                                     o->reference->reason())
                                      : "unknown");
        if (o->reference && !IsFinal(o->reference->state())) {
          grpc::ClientContext ctx;
          SetDeadline(&ctx, 10);
          v1::CancelJobRequest req;
          req.set_job_id(id);
          v1::Job job;
          stub_->CancelJob(&ctx, req, &job);
        }
        continue;
      }
      const v1::Job& ref = *o->reference;
      if (ref.failed_attempts_size() > 0) {
        problems_.push_back(absl::StrCat("the uninterrupted rerun ", id, " of ", o->id,
                                         " was retried: ", ref.failed_attempts(0).reason()));
      }
      const double a = o->final_job.result().objective(), b = ref.result().objective();
      o->objective_rel_diff = std::abs(a - b) / std::max(std::abs(b), 1e-300);
      if (o->plan.spec.optimizer() == v1::LBFGS) {
        auto fa = Download(o->final_job.model_id());
        auto fb = Download(ref.model_id());
        if (!fa.ok() || !fb.ok()) {
          o->reference_problem =
              std::string(fa.ok() ? fb.status().message() : fa.status().message());
          continue;
        }
        o->max_weight_diff =
            std::max(MaxAbsDiff(fa->weights, fb->weights), MaxAbsDiff(fa->bias, fb->bias));
        o->matches = o->max_weight_diff <= kMaxWeightDiff;
      } else {
        o->matches = o->objective_rel_diff <= kMaxObjectiveRelDiff;
      }
    }
  }

  int Report() {
    int succeeded = 0, failed = 0, other = 0, retries = 0, failed_attempts = 0, uncharged = 0;
    int64_t events = 0, lost = 0, duplicated = 0, replay_lost = 0, replay_duplicated = 0,
            reconnects = 0;
    for (const JobOutcome& o : outcomes_) {
      const v1::Job& j = o.final_job;
      if (j.state() == v1::SUCCEEDED)
        ++succeeded;
      else if (j.state() == v1::FAILED)
        ++failed;
      else
        ++other;
      retries += j.retries();
      failed_attempts += j.failed_attempts_size();
      for (const v1::AttemptFailure& f : j.failed_attempts()) uncharged += f.charged() ? 0 : 1;
      events += j.last_sequence();
      lost += o.lost;
      duplicated += o.duplicated;
      replay_lost += o.replay_lost;
      replay_duplicated += o.replay_duplicated;
      reconnects += o.watched.reconnects;
    }
    std::ostringstream r;
    r << "== logit fault injection ==\n";
    r << absl::StrFormat(
        "seed %d, %d external workers, %d jobs, chaos bound %.0f s, worker faults at most %d, "
        "coordinator kills %d\n",
        options_.seed, options_.workers, options_.jobs, options_.duration_s, options_.faults,
        options_.coordinator_kills);
    r << absl::StrFormat(
        "server: --worker-timeout %.0f --heartbeat-ms %d --collective-timeout %.0f "
        "--retry-backoff %.1f; jobs: max_retries %d\n",
        kWorkerTimeoutS, kHeartbeatMs, kCollectiveTimeoutS, kRetryBackoffS, kMaxRetries);
    r << "work dir: " << options_.work_dir << "\n\n";
    r << "timeline:\n";
    for (const std::string& line : timeline_.lines()) r << "  " << line << "\n";
    r << "\n";
    r << absl::StrFormat("jobs submitted: %d, succeeded: %d, failed: %d, other: %d\n",
                         outcomes_.size(), succeeded, failed, other);
    for (const JobOutcome& o : outcomes_) {
      if (o.final_job.state() != v1::SUCCEEDED) {
        r << "  " << o.id << " (" << o.plan.name << ") " << v1::JobState_Name(o.final_job.state())
          << ": " << o.final_job.reason() << "\n";
      }
    }
    for (const std::string& u : unfinished_) r << "  unfinished at the bound: " << u << "\n";
    r << absl::StrFormat(
        "retries: %d charged (Job.retries); %d failed attempts (%d not charged: coordinator "
        "restart)\n",
        retries, failed_attempts, uncharged);
    r << absl::StrFormat(
        "faults injected: %d worker SIGKILL, %d worker SIGSTOP (%d longer than the %.0f s "
        "worker timeout); coordinator SIGKILL + restart: %d%s\n",
        worker_kills_, worker_stops_, long_stops_, kWorkerTimeoutS, coordinator_kills_,
        coordinator_kills_ < options_.coordinator_kills ? " (the jobs ended before the rest)" : "");
    r << absl::StrFormat(
        "events: %d stored; live watchers (%d reconnects): lost %d, duplicated %d; replay "
        "from 1: lost %d, duplicated %d\n",
        events, reconnects, lost, duplicated, replay_lost, replay_duplicated);
    std::map<std::string, int> stream_errors;
    for (const JobOutcome& o : outcomes_) {
      for (const auto& [what, n] : o.watched.errors) stream_errors[what] += n;
    }
    for (const auto& [what, n] : stream_errors) {
      r << "  watch streams that ended in \"" << what << "\" (then reconnected): " << n << "\n";
    }
    if (!registration_delays_.empty()) {
      r << absl::StrFormat(
          "workers registered again after a coordinator restart: %d, within %.1f s (max)\n",
          registration_delays_.size(),
          *std::max_element(registration_delays_.begin(), registration_delays_.end()));
    }
    r << absl::StrFormat("time: chaos phase %.1f s, uninterrupted reruns %.1f s, total %.1f s\n",
                         chaos_seconds_, reference_seconds_, SecondsSince(start_));
    r << "\nfailed attempts:\n";
    bool any_attempt = false;
    for (const JobOutcome& o : outcomes_) {
      for (const v1::AttemptFailure& f : o.final_job.failed_attempts()) {
        any_attempt = true;
        r << absl::StrFormat("  %-7s attempt %d (%d ranks%s): %s\n", o.id, f.attempt(), f.workers(),
                             f.charged() ? "" : ", not charged", f.reason());
      }
    }
    if (!any_attempt) r << "  none\n";
    r << "\n";
    r << absl::StrFormat("%-7s %-22s %-9s %-17s %-8s %-8s %-6s %-9s %-16s %-16s %-9s %-9s %s\n",
                         "job", "name", "optimizer", "data", "workers", "attempts", "s", "epochs",
                         "objective", "uninterrupted", "rel diff", "max |dW|", "");
    bool all_match = true;
    for (const JobOutcome& o : outcomes_) {
      const v1::Job& j = o.final_job;
      const bool compared =
          o.reference && o.reference->state() == v1::SUCCEEDED && o.reference_problem.empty();
      const std::string verdict =
          compared ? (o.matches ? "ok" : "DIFFERS") : ("no comparison: " + o.reference_problem);
      all_match = all_match && compared && o.matches;
      r << absl::StrFormat(
          "%-7s %-22s %-9s %-17s %-8s %-8d %-6s %-9s %-16s %-16s %-9s %-9s %s\n", o.id, o.plan.name,
          v1::Optimizer_Name(o.plan.spec.optimizer()), o.plan.data, WorkersText(o.plan.spec),
          j.failed_attempts_size() + 1, Turnaround(j),
          compared ? absl::StrCat(j.result().epochs_run(), "/", o.reference->result().epochs_run())
                   : absl::StrCat(j.result().epochs_run()),
          j.state() == v1::SUCCEEDED ? absl::StrFormat("%.10g", j.result().objective()) : "-",
          compared ? absl::StrFormat("%.10g", o.reference->result().objective()) : "-",
          compared ? absl::StrFormat("%.1e", o.objective_rel_diff) : "-",
          compared && !std::isnan(o.max_weight_diff) ? absl::StrFormat("%.1e", o.max_weight_diff)
                                                     : "-",
          verdict);
    }
    r << absl::StrFormat(
        "(s: submission to end; epochs: faulted/uninterrupted; pass: L-BFGS max |dW| <= %.0e, "
        "SGD/Adam rel diff <= "
        "%.0e)\n",
        kMaxWeightDiff, kMaxObjectiveRelDiff);
    std::vector<std::string> problems = problems_;
    for (const std::string& c : cluster_->crashes()) problems.push_back(c);
    if (!problems.empty()) {
      r << "\nproblems:\n";
      for (const std::string& p : problems) r << "  " << p << "\n";
    }
    const bool pass = succeeded == static_cast<int>(outcomes_.size()) && lost == 0 &&
                      duplicated == 0 && replay_lost == 0 && replay_duplicated == 0 && all_match &&
                      problems.empty() && unfinished_.empty();
    r << "\nresult: " << (pass ? "PASS" : "FAIL") << "\n";
    std::cout << r.str() << std::flush;
    std::ofstream(options_.work_dir + "/report.txt") << r.str();
    return pass ? 0 : 1;
  }

  Options options_;
  const Clock::time_point start_;
  Timeline timeline_;
  std::mt19937_64 rng_;
  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<v1::TrainingService::Stub> stub_;
  std::map<std::string, std::string> datasets_;  // file name -> dataset id
  std::vector<JobOutcome> outcomes_;
  std::vector<std::unique_ptr<JobWatcher>> watchers_;  // index = outcomes_ index
  int worker_kills_ = 0, worker_stops_ = 0, long_stops_ = 0, coordinator_kills_ = 0;
  double chaos_seconds_ = 0, reference_seconds_ = 0;
  // After the latest coordinator restart: workers not registered again yet (slot -> what
  // Registrations said at the restart), and how long each took.
  Clock::time_point restarted_at_;
  std::map<int, std::pair<int, int>> awaiting_registration_;
  std::vector<double> registration_delays_;
  std::vector<std::string> unfinished_;
  std::vector<std::string> problems_;  // system misbehaviour beyond the counted figures
};

}  // namespace
}  // namespace logit::fault

int main(int argc, char** argv) {
  using logit::fault::Options;
  Options o;
  CLI::App app{
      "fault_inject: jobs on a logit-server and workers under killed and hung workers "
      "and a killed coordinator, against the same jobs uninterrupted",
      "fault_inject"};
  app.add_option("--server-bin", o.server_bin, "logit-server executable")->capture_default_str();
  app.add_option("--worker-bin", o.worker_bin, "logit-worker executable")->capture_default_str();
  app.add_option("--workers", o.workers, "external workers")
      ->capture_default_str()
      ->check(CLI::Range(2, 64));
  app.add_option("--jobs", o.jobs, "jobs (the mix, cycled)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--duration", o.duration_s, "hard bound of the chaos phase, seconds")
      ->capture_default_str()
      ->check(CLI::Range(5.0, 3600.0));
  app.add_option("--faults", o.faults, "worker kills and stops at most")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.add_option("--coordinator-kills", o.coordinator_kills,
                 "coordinator SIGKILLs (each followed by a restart)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  app.add_option("--seed", o.seed, "random seed (0: from the clock)")->capture_default_str();
  app.add_option("--work-dir", o.work_dir, "logs, data dir and report (default: a new /tmp dir)");
  app.add_option("--data-root", o.data_root, "the server's --data-root (Fashion-MNIST)")
      ->capture_default_str();
  app.add_option("--test-data", o.test_data,
                 "directory of iris.csv, digits.csv, "
                 "breast_cancer.csv")
      ->capture_default_str();
  app.add_option("--reference-timeout", o.reference_timeout_s,
                 "bound of the uninterrupted reruns, seconds")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (o.seed == 0) {
    o.seed = static_cast<uint64_t>(
        std::chrono::system_clock::now().time_since_epoch().count() % 1000000 + 1);
  }
  struct sigaction sa {};
  sa.sa_handler = logit::fault::OnInterrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return logit::fault::FaultRun(o).Run();
}
