#include "server/worker_pool.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>

extern char** environ;

namespace logit {

namespace fs = std::filesystem;

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

pid_t WorkerPool::Spawn() {
  std::vector<std::string> args = {binary_,
                                   "--server",
                                   server_,
                                   "--threads",
                                   std::to_string(threads_),
                                   "--parent-pid",
                                   std::to_string(getpid())};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "LOGIT_TOKEN=", 12) != 0) env_strings.emplace_back(*e);
  }
  if (!token_.empty()) env_strings.push_back("LOGIT_TOKEN=" + token_);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  // The server blocks SIGTERM/SIGINT (a thread sigwaits for them); children must not inherit
  // that mask, or they could not be stopped.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, binary_.c_str(), nullptr, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    std::cerr << "logit-server: cannot start " << binary_ << std::endl;
    return -1;
  }
  return pid;
}

void WorkerPool::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int i = 0; i < count_; ++i) pids_.push_back(Spawn());
  }
  supervisor_ = std::thread([this] { Supervise(); });
}

void WorkerPool::Supervise() {
  while (!stopping_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::lock_guard<std::mutex> lock(mu_);
    for (pid_t& pid : pids_) {
      if (stopping_) break;
      int status = 0;
      if (pid > 0 && waitpid(pid, &status, WNOHANG) != pid) continue;
      std::cerr << "logit-server: local worker " << pid << " exited; starting another" << std::endl;
      pid = Spawn();
      ++restarts_;
    }
  }
}

void WorkerPool::Stop() {
  if (stopping_.exchange(true)) return;
  if (supervisor_.joinable()) supervisor_.join();
  std::lock_guard<std::mutex> lock(mu_);
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

}  // namespace logit
