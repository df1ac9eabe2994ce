// `--local-workers N`: N logit-worker processes on loopback, restarted when one dies, stopped
// (SIGTERM, then SIGKILL after a grace period) when the server shuts down.
#ifndef LOGIT_SERVER_WORKER_POOL_H_
#define LOGIT_SERVER_WORKER_POOL_H_

#include <sys/types.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace logit {

class WorkerPool {
 public:
  // `binary`: the logit-worker executable; `server`: the address the workers dial; `extra_args`
  // follow the defaults (TLS files); a non-empty `token` reaches the workers as LOGIT_TOKEN in
  // their environment (never on a command line, which any local user can read).
  WorkerPool(std::string binary, std::string server, int count, int threads_each,
             std::vector<std::string> extra_args = {}, std::string token = "");
  ~WorkerPool();  // Stop()
  void Start();
  void Stop();
  int restarts() const { return restarts_; }

 private:
  pid_t Spawn();
  void Supervise();

  const std::string binary_, server_;
  const int count_, threads_;
  const std::vector<std::string> extra_args_;
  const std::string token_;
  std::mutex mu_;
  std::vector<pid_t> pids_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> restarts_{0};
  std::thread supervisor_;
};

// The logit-worker next to this executable (build tree or install), else "logit-worker".
std::string DefaultWorkerBinary();

}  // namespace logit

#endif  // LOGIT_SERVER_WORKER_POOL_H_
