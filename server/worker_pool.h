// `--local-workers N`: N logit-worker processes on loopback, restarted when one dies, stopped
// (SIGTERM, then SIGKILL after a grace period) when the server shuts down, and killed by the
// kernel (SIGKILL) when the server dies without shutting down.
#ifndef LOGIT_SERVER_WORKER_POOL_H_
#define LOGIT_SERVER_WORKER_POOL_H_

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace logit {

// Starts `args[0]` (a path, or a name looked up in PATH) with arguments `args` and exactly the
// environment `env` ("NAME=value" each) as a child tied to this process: the kernel sends it
// SIGKILL when the calling THREAD ends (PR_SET_PDEATHSIG follows the thread that forked, so call
// this from a thread that lives as long as the child should), and a child whose parent died
// before that was arranged exits at once. The child starts with no signal blocked and SIGTERM
// and SIGINT at their default actions. Returns its pid; NotFound when args[0] is not in PATH,
// Unavailable when fork or exec fails (an exec failure is reported here, not as an exit status).
absl::StatusOr<pid_t> StartTiedProcess(const std::vector<std::string>& args,
                                       const std::vector<std::string>& env);

class WorkerPool {
 public:
  // `binary`: the logit-worker executable; `server`: the address the workers dial; `extra_args`
  // follow the defaults (TLS files); a non-empty `token` reaches the workers as LOGIT_TOKEN in
  // their environment (never on a command line, which any local user can read).
  WorkerPool(std::string binary, std::string server, int count, int threads_each,
             std::vector<std::string> extra_args = {}, std::string token = "");
  ~WorkerPool();  // Stop()
  // Before Start: worker i serves its Prometheus metrics on host:(first_port + i).
  void set_metrics_listen(std::string host, int first_port) {
    metrics_host_ = std::move(host);
    metrics_port_ = first_port;
  }
  // Starts the supervisor thread, which starts the workers (they are tied to it, see
  // StartTiedProcess), restarts the ones that exit, and stops them all on Stop().
  void Start();
  // Stops the workers (SIGTERM, SIGKILL after 10 s) and the supervisor; idempotent.
  void Stop();
  int restarts() const { return restarts_; }

 private:
  // A new worker's pid, or -1 (logged) when it could not be started.
  pid_t Spawn(int index);
  // The supervisor thread's body.
  void Supervise();
  void TerminateAll();

  const std::string binary_, server_;
  const int count_, threads_;
  const std::vector<std::string> extra_args_;
  const std::string token_;
  std::string metrics_host_;
  int metrics_port_ = 0;  // 0: no metrics endpoint
  std::mutex mu_;
  std::condition_variable stop_cv_;  // signalled (under mu_) when stopping_ is set
  std::vector<pid_t> pids_;          // used by the supervisor thread only
  std::atomic<bool> stopping_{false};
  std::atomic<int> restarts_{0};
  std::thread supervisor_;
};

// The logit-worker next to this executable (build tree or install), else "logit-worker".
std::string DefaultWorkerBinary();

}  // namespace logit

#endif  // LOGIT_SERVER_WORKER_POOL_H_
