#include "server/worker_pool.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "worker/common/log.h"

extern char** environ;

namespace logit {

namespace fs = std::filesystem;

namespace {

// args[0] as execve wants it: itself when it names a path, else its first executable match in
// PATH (execvp's search, done before fork because it allocates); "" when there is none.
std::string ResolveExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    const std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

}  // namespace

absl::StatusOr<pid_t> StartTiedProcess(const std::vector<std::string>& args,
                                       const std::vector<std::string>& env) {
  if (args.empty()) return absl::InvalidArgumentError("StartTiedProcess: no program given");
  const std::string path = ResolveExecutable(args[0]);
  if (path.empty()) return absl::NotFoundError(absl::StrCat(args[0], ": not found in PATH"));
  // Everything the child needs is built before fork: between fork and exec this multithreaded
  // process's child may only make async-signal-safe calls.
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  sigset_t none;
  sigemptyset(&none);
  // The child writes exec's errno here; the pipe closes on a successful exec.
  int exec_error_pipe[2];
  if (pipe2(exec_error_pipe, O_CLOEXEC) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot start ", path, ": pipe: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(exec_error_pipe[0]);
    close(exec_error_pipe[1]);
    return absl::UnavailableError(
        absl::StrCat("cannot start ", path, ": fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    close(exec_error_pipe[0]);
    // A parent that died before prctl took effect never sends the signal: getppid() then names
    // whoever adopted this process.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    // The server blocks SIGTERM/SIGINT (a thread sigwaits for them); children must not inherit
    // that, or they could not be stopped.
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(path.c_str(), argv.data(), envp.data());
    const int err = errno;
    [[maybe_unused]] const ssize_t n = write(exec_error_pipe[1], &err, sizeof(err));
    _exit(127);
  }
  close(exec_error_pipe[1]);
  int err = 0;
  ssize_t n;
  do {
    n = read(exec_error_pipe[0], &err, sizeof(err));
  } while (n < 0 && errno == EINTR);
  close(exec_error_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(err))) {
    waitpid(pid, nullptr, 0);
    return absl::UnavailableError(absl::StrCat("cannot start ", path, ": ", std::strerror(err)));
  }
  return pid;
}

std::string DefaultWorkerBinary() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const fs::path& p : {self.parent_path() / "logit-worker",
                              self.parent_path().parent_path() / "worker" / "logit-worker"}) {
      if (fs::exists(p, ec)) return p.string();
    }
  }
  return "logit-worker";
}

WorkerPool::WorkerPool(std::string binary, std::string server, int count, int threads_each,
                       std::vector<std::string> extra_args, std::string token)
    : binary_(std::move(binary)),
      server_(std::move(server)),
      count_(count),
      threads_(threads_each),
      extra_args_(std::move(extra_args)),
      token_(std::move(token)) {}

WorkerPool::~WorkerPool() { Stop(); }

pid_t WorkerPool::Spawn(int index) {
  std::vector<std::string> args = {binary_,
                                   "--server",
                                   server_,
                                   "--threads",
                                   std::to_string(threads_),
                                   "--parent-pid",
                                   std::to_string(getpid())};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  if (metrics_port_ > 0) {
    args.insert(args.end(),
                {"--metrics-listen", absl::StrCat(metrics_host_, ":", metrics_port_ + index)});
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "LOGIT_TOKEN=", 12) != 0) env.emplace_back(*e);
  }
  if (!token_.empty()) env.push_back("LOGIT_TOKEN=" + token_);
  absl::StatusOr<pid_t> pid = StartTiedProcess(args, env);
  if (!pid.ok()) {
    logging::Error("cannot start a local worker", {logging::Field::Error(pid.status())});
    return -1;
  }
  return *pid;
}

void WorkerPool::Start() {
  supervisor_ = std::thread([this] { Supervise(); });
}

void WorkerPool::Supervise() {
  for (int i = 0; i < count_ && !stopping_; ++i) pids_.push_back(Spawn(i));
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      stop_cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stopping_.load(); });
    }
    if (stopping_) break;
    for (size_t i = 0; i < pids_.size(); ++i) {
      pid_t& pid = pids_[i];
      int status = 0;
      if (pid > 0 && waitpid(pid, &status, WNOHANG) != pid) continue;
      logging::Warn("local worker exited; starting another",
                    {{"pid", static_cast<int64_t>(pid)}, {"status", status}});
      pid = Spawn(static_cast<int>(i));
      ++restarts_;
    }
  }
  // Stopped here, not by Stop()'s thread: the workers die with this thread.
  TerminateAll();
}

void WorkerPool::TerminateAll() {
  for (pid_t pid : pids_) {
    if (pid > 0) kill(pid, SIGTERM);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (pid_t pid : pids_) {
    if (pid <= 0) continue;
    while (waitpid(pid, nullptr, WNOHANG) != pid) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  pids_.clear();
}

void WorkerPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_.exchange(true)) return;
  }
  stop_cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
}

}  // namespace logit
