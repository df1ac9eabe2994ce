#include "worker/worker_cli.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <ostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "proto/connect.h"
#include "worker/agent.h"
#include "worker/agent_metrics.h"
#include "worker/common/log.h"
#include "worker/common/metrics_endpoint.h"
#include "worker/common/status.h"
#include "worker/dist/process_group.h"
#include "worker/job.h"
#include "worker/job_cli.h"
#include "worker/job_spec.h"
#include "worker/kernel/collective.h"
#include "worker/model/model_io.h"
#include "worker/summary.h"

namespace logit {

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

// Flags of `logit-worker run`: one rank of a job, rendezvous given on the command line (the
// coordinator passes the same facts in a job assignment).
struct RankFlags {
  v1::JobSpec spec;     // the training flags
  LocalRunFlags local;  // --save-model, --threads
  int rank = 0;
  int world_size = 1;
  std::string store;  // HOST:PORT
  std::string prefix = "logit";
  bool host_store = false;
  double timeout_s = 60;
  std::string interface;
  std::string output = "table";
};

absl::Status ParseHostPort(const std::string& text, std::string* host, int* port) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(text.substr(colon + 1), port) ||
      *port < 1 || *port > 65535) {
    return FieldError("store",
                      absl::StrCat("'", text, "' is not HOST:PORT with a port in [1, 65535]"));
  }
  *host = text.substr(0, colon);
  return absl::OkStatus();
}

// torchrun's (and the Kubeflow PyTorchJob operator's) environment: RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT. Rank 0 hosts the store, unless torchrun's agent already does
// (TORCHELASTIC_USE_AGENT_STORE=True). InvalidArgument naming the variable that is missing.
absl::Status RendezvousFromEnvironment(RankFlags* f) {
  auto env = [](const char* name) -> absl::StatusOr<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == 0) {
      return FieldError("rank", absl::StrCat("no --rank/--world-size/--store, and ", name,
                                             " is not set (torchrun's environment)"));
    }
    return std::string(v);
  };
  ASSIGN_OR_RETURN(const std::string rank, env("RANK"));
  ASSIGN_OR_RETURN(const std::string world, env("WORLD_SIZE"));
  ASSIGN_OR_RETURN(const std::string addr, env("MASTER_ADDR"));
  ASSIGN_OR_RETURN(const std::string port, env("MASTER_PORT"));
  if (!absl::SimpleAtoi(rank, &f->rank) || !absl::SimpleAtoi(world, &f->world_size)) {
    return FieldError("rank", absl::StrCat("RANK '", rank, "' and WORLD_SIZE '", world,
                                           "' must be integers"));
  }
  f->store = absl::StrCat(addr, ":", port);
  const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  const bool agent_hosts = agent_store != nullptr && std::string(agent_store) == "True";
  f->host_store = f->host_store || (f->rank == 0 && !agent_hosts);
  return absl::OkStatus();
}

struct AllreduceStats {
  int64_t count = 0, bytes = 0;
  double seconds = 0;
};

int RunRank(const RankFlags& f, std::ostream& out, std::ostream& err) {
  const std::string who = absl::StrCat("logit-worker rank ", f.rank, "/", f.world_size);
  auto plan = PlanJob(f.spec);
  RendezvousOptions ro;
  absl::Status st = plan.status();
  if (st.ok()) st = ParseHostPort(f.store, &ro.store_host, &ro.store_port);
  if (st.ok() && !(f.timeout_s > 0)) st = FieldError("timeout", "must be positive");
  if (!st.ok()) {
    err << who << ": " << FlagMessage(st) << "\n";
    return kExitUsage;
  }
  const DataConfig& dc = plan->data;
  TrainOptions& opts = plan->train;
  opts.threads = f.local.threads;
  const bool json = f.output == "json";
  ro.prefix = f.prefix;
  ro.rank = f.rank;
  ro.world_size = f.world_size;
  ro.host_store = f.host_store;
  ro.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000));
  ro.device = opts.device;
  ro.interface = f.interface;
  AllreduceStats stats;
  ro.on_allreduce = [&stats](double seconds, int64_t bytes) {
    ++stats.count;
    stats.bytes += bytes;
    stats.seconds += seconds;
  };
  auto conn = ConnectProcessGroup(ro);
  if (!conn.ok()) {
    err << who << ": " << FlagMessage(conn.status()) << "\n";
    return absl::IsInvalidArgument(conn.status()) ? kExitUsage : kExitFailed;
  }
  // Ranks that share a host share its cores (two 2-thread ranks on 2 cores thrash).
  if (opts.threads == 0) opts.threads = ThreadsPerRank(conn->local_ranks);
  opts.device = conn->device;
  err << who << ": joined (" << conn->backend << ", " << conn->local_ranks
      << " rank(s) on this host, " << opts.threads << " thread(s), "
      << Fixed(conn->connect_seconds, 3) << "s) " << DescribeComputeBackend() << "\n";

  const int64_t total_epochs = EffectiveEpochs(opts);
  auto on_epoch = [&](const EpochRecord& e) {
    if (!json) out << EpochLine(e, total_epochs) << std::endl;
  };
  JobHooks hooks;
  hooks.on_epoch = on_epoch;
  auto outcome = RunTrainingJob(dc, opts, conn->collective.get(), hooks);
  if (!outcome.ok()) {
    err << who << ": " << FlagMessage(outcome.status()) << "\n";
    // The store lives in this process: keep it up a moment so that the peers can read why.
    if (f.host_store) std::this_thread::sleep_for(std::chrono::seconds(2));
    if (json) {
      out << nlohmann::json{{"rank", f.rank},
                            {"state", "FAILED"},
                            {"code", absl::StatusCodeToString(outcome.status().code())},
                            {"error", std::string(outcome.status().message())}}
                 .dump()
          << "\n";
    }
    return kExitFailed;
  }
  const v1::TrainingSummary summary = MakeSummary(*outcome, opts);
  // "%r" in the path gives every rank its own copy (tests compare them); otherwise rank 0 writes.
  std::string model_path;
  const std::string& save = f.local.save_model;
  if (!save.empty() && (f.rank == 0 || save.find("%r") != std::string::npos)) {
    model_path = absl::StrReplaceAll(save, {{"%r", std::to_string(f.rank)}});
    st = SaveModel(outcome->result.model, model_path, SummaryToJson(summary).dump());
    if (!st.ok()) {
      err << who << ": " << FlagMessage(st) << "\n";
      return kExitFailed;
    }
  }
  if (json) {
    nlohmann::json line = SummaryToJson(summary);  // with the per-epoch history
    line["rank"] = f.rank;
    line["world_size"] = f.world_size;
    line["state"] = "SUCCEEDED";
    line["model_file"] = model_path;
    line["backend"] = conn->backend;
    line["threads"] = opts.threads;
    line["allreduce"] = {{"count", stats.count},
                         {"bytes", stats.bytes},
                         {"seconds", stats.seconds},
                         {"connect_seconds", conn->connect_seconds}};
    out << line.dump() << "\n";
  } else {
    PrintResultTable(summary, out);
    out << "allreduce: " << stats.count << " calls, " << Fixed(stats.seconds, 3) << "s, "
        << stats.bytes << " bytes\n";
    if (!model_path.empty()) out << "model written to " << model_path << "\n";
  }
  return kExitOk;
}

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

}  // namespace

int RunWorkerCli(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"logit-worker: runs ranks of logit training jobs", "logit-worker"};
  app.require_subcommand(0, 1);
  AgentOptions agent;
  app.add_option("--server", agent.server,
                 "coordinator HOST:PORT: register and run the ranks it assigns");
  app.add_option("--device", agent.device, "cpu|cuda[:N]|auto")->capture_default_str();
  app.add_option("--threads", agent.threads, "compute threads (0 = cores / local ranks)");
  std::string token_file;
  app.add_option("--token-file", token_file,
                 "file holding the server's worker token (default: env LOGIT_TOKEN)");
  app.add_option("--tls-ca", agent.tls_ca_file,
                 "PEM CA that signed the server's certificate (TLS)");
  app.add_option("--tls-cert", agent.tls_cert_file, "PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", agent.tls_key_file, "PEM key of --tls-cert");
  std::string metrics_listen, log_format = "text", log_level = "info", data_access = "auto";
  app.add_option("--data-access", data_access,
                 "read the job's data files where the coordinator has them (direct), fetch "
                 "them into --cache-dir (fetch), or direct when the same file is here (auto)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "direct", "fetch"}));
  app.add_option("--cache-dir", agent.data.dir, "where fetched data files are kept")
      ->capture_default_str();
  app.add_option("--cache-max-bytes", agent.data.max_bytes,
                 "size bound of --cache-dir (least recently used files go first)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--metrics-listen", metrics_listen,
                 "serve Prometheus metrics on http://HOST:PORT/metrics (default: none)");
  app.add_option("--log-format", log_format, "log lines as text or json (one object per line)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--log-level", log_level, "lowest level logged")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  int parent_pid = 0;
  app.add_option("--parent-pid", parent_pid,
                 "stop when process PID ends (logit-server sets it for its local workers, so "
                 "that none outlives a killed server)");
  app.footer(
      "Modes:\n"
      "  logit-worker --server 127.0.0.1:50051     serve a coordinator (what --local-workers "
      "starts)\n"
      "  logit-worker run --rank R --world-size W --store HOST:PORT ...   one rank by hand");
  RankFlags rf;
  CLI::App* run = app.add_subcommand(
      "run", "run one rank of a data-parallel job (rendezvous through a c10d TCPStore)");
  run->footer(
      "Example (two ranks on one machine; rank 0 hosts the store):\n"
      "  logit-worker run --rank 0 --world-size 2 --store 127.0.0.1:29500 --host-store \\\n"
      "      --data iris.csv --label-column target &\n"
      "  logit-worker run --rank 1 --world-size 2 --store 127.0.0.1:29500 \\\n"
      "      --data iris.csv --label-column target");
  CLI::Option* rank_flag =
      run->add_option("--rank", rf.rank, "this process's rank in [0, world-size) (env RANK)");
  CLI::Option* world_flag =
      run->add_option("--world-size", rf.world_size, "number of ranks (env WORLD_SIZE)");
  CLI::Option* store_flag = run->add_option(
      "--store", rf.store, "c10d TCPStore address HOST:PORT (env MASTER_ADDR:MASTER_PORT)");
  run->add_option("--store-prefix", rf.prefix, "key prefix of this job attempt")
      ->capture_default_str();
  run->add_flag("--host-store", rf.host_store, "this rank starts the store server");
  run->add_option("--timeout", rf.timeout_s,
                  "seconds to wait for peers (rendezvous and every collective)")
      ->capture_default_str();
  run->add_option("--interface", rf.interface, "network interface for Gloo (default: by address)");
  run->add_option("-o,--output-format", rf.output, "printed format")
      ->check(CLI::IsMember({"table", "json"}));
  AddJobFlags(run, &rf.spec);
  AddLocalRunFlags(run, &rf.local);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e, out, err);
    return e.get_exit_code() == 0 ? kExitOk : kExitUsage;
  }
  {
    logging::LogOptions log_options;
    log_options.format = *logging::ParseFormat(log_format);  // checked by the flag
    log_options.level = *logging::ParseLevel(log_level);
    logging::Configure("logit-worker", log_options);
  }
  if (run->parsed()) {
    const int given = static_cast<int>(rank_flag->count() > 0) +
                      static_cast<int>(world_flag->count() > 0) +
                      static_cast<int>(store_flag->count() > 0);
    absl::Status st =
        given == 3 ? absl::OkStatus()
        : given == 0
            ? RendezvousFromEnvironment(&rf)
            : FieldError("rank", "give all of --rank, --world-size and --store, or none of them "
                                 "(then torchrun's RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)");
    if (!st.ok()) {
      err << "logit-worker run: " << FlagMessage(st) << "\n";
      return kExitUsage;
    }
    return RunRank(rf, out, err);
  }
  if (agent.server.empty()) {
    err << "logit-worker: give --server HOST:PORT, or the run subcommand (see --help)\n";
    return kExitUsage;
  }
  auto token = LoadToken(token_file);
  if (!token.ok()) {
    err << "logit-worker: " << token.status().message() << "\n";
    return kExitUsage;
  }
  agent.token = *token;
  agent.data.access = *ParseDataAccess(data_access);  // checked by the flag
  AgentMetrics metrics;
  agent.metrics = &metrics;
  std::unique_ptr<MetricsEndpoint> endpoint;
  if (!metrics_listen.empty()) {
    auto started = MetricsEndpoint::Start(metrics_listen);
    if (started.ok()) {
      endpoint = std::move(*started);
      for (const auto& c : metrics.collectables()) endpoint->Register(c);
      logging::Info("metrics endpoint started",
                    {{"listen", metrics_listen}, {"port", endpoint->port()}});
    } else if (parent_pid > 0) {
      // A local worker of logit-server: training matters more than its metrics, and exiting
      // would only have the server start it again on the same port.
      logging::Error("no metrics endpoint", {logging::Field::Error(started.status())});
    } else {
      err << "logit-worker: " << started.status().message() << "\n";
      return started.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage
                                                                           : kExitFailed;
    }
  }
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  sigset_t stop_signals;  // a parent may have left them blocked
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
  if (parent_pid > 0) {
    // SIGKILL, as logit-server's StartTiedProcess already arranged before exec: a worker whose
    // coordinator is gone has no one to report to, and must not linger in a collective.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent_pid) return kExitOk;  // the parent ended before prctl took effect
  }
  return RunAgent(agent, g_stop, err);
}

}  // namespace logit
