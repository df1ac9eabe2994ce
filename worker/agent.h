// `logit-worker --server HOST:PORT`: registers with the coordinator, heartbeats, runs the ranks
// it is assigned (one at a time) and reports their progress, outcome and model.
#ifndef LOGIT_WORKER_AGENT_H_
#define LOGIT_WORKER_AGENT_H_

#include <atomic>
#include <iosfwd>
#include <string>

#include "worker/data_fetch.h"

namespace logit {

class AgentMetrics;

struct AgentOptions {
  std::string server;                                    // coordinator HOST:PORT
  std::string token;                                     // the server's worker token ("" = none)
  std::string tls_ca_file, tls_cert_file, tls_key_file;  // TLS (see proto/connect.h)
  std::string device = "cpu";
  int threads = 0;  // 0: cores / ranks of the job on this host
  // Where the agent reports what it does (the caller serves it on /metrics); null: nowhere.
  AgentMetrics* metrics = nullptr;
  // How the job's data files are read: directly, or fetched from the coordinator into a cache.
  DataCacheOptions data;
};

// Runs until `stop` becomes true (SIGTERM); returns the process exit code. Events go to the
// process's logger (worker/common/log.h); `log` only gets a failure to start.
int RunAgent(const AgentOptions& options, const std::atomic<bool>& stop, std::ostream& log);

}  // namespace logit

#endif  // LOGIT_WORKER_AGENT_H_
