#include "server/server_app.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <signal.h>

#include <atomic>
#include <memory>
#include <ostream>
#include <thread>
#include <tuple>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/grpc_services.h"
#include "server/inference_service.h"
#include "server/rpc_metrics.h"
#include "server/server_metrics.h"
#include "server/worker_pool.h"
#include "worker/common/log.h"
#include "worker/common/metrics_endpoint.h"
#include "worker/dist/process_group.h"

namespace logit {

namespace {

struct ServerFlags {
  std::string listen = "127.0.0.1:50051";
  std::string data_dir = "./logit-data";
  std::string data_root;
  int local_workers = 0;
  std::string worker_binary;
  double worker_timeout_s = 10;
  int heartbeat_ms = 500;
  double collective_timeout_s = 60;
  std::string advertise_host;
  // Security (README "Security").
  std::string auth_token_file, worker_token_file, tls_cert, tls_key, tls_client_ca;
  // Limits (README "Limits").
  int64_t max_message_bytes = 64 << 20;
  int max_threads = 256;
  int max_streams = 100;
  // Observability (README "Metrics", "Logs").
  std::string metrics_listen, local_worker_metrics_listen;
  double metrics_job_grace_s = 120;
  std::string log_format = "text", log_level = "info";
};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "[::1]" || host == "::1";
}

std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return host;
}

}  // namespace

int RunServerCli(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"logit-server: the logit coordinator", "logit-server"};
  ServerFlags f;
  app.add_option("--listen", f.listen, "gRPC address HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--data-dir", f.data_dir, "SQLite job store, datasets and models")
      ->capture_default_str();
  app.add_option("--data-root", f.data_root, "the only directory server:PATH data may name");
  app.add_option("--local-workers", f.local_workers, "start N logit-worker processes on loopback")
      ->check(CLI::Range(0, 256));
  app.add_option("--worker-binary", f.worker_binary, "logit-worker executable for local workers");
  app.add_option("--worker-timeout", f.worker_timeout_s, "seconds without heartbeat = lost")
      ->capture_default_str();
  app.add_option("--heartbeat-ms", f.heartbeat_ms, "worker heartbeat period")
      ->capture_default_str()
      ->check(CLI::Range(10, 600000));
  app.add_option("--advertise-host", f.advertise_host,
                 "host name of this server as workers see it; picks their Gloo network device "
                 "(default: the --listen host; this machine's name when listening on 0.0.0.0)");
  app.add_option("--collective-timeout", f.collective_timeout_s,
                 "seconds a rank waits for its peers in a collective")
      ->capture_default_str();
  app.add_option("--auth-token-file", f.auth_token_file,
                 "clients must send 'authorization: Bearer <token in this file>'");
  app.add_option("--worker-token-file", f.worker_token_file,
                 "workers must send this token (default with --auth-token-file: a random one "
                 "that only the local workers get)");
  app.add_option("--tls-cert", f.tls_cert, "PEM server certificate (chain): TLS on the port");
  app.add_option("--tls-key", f.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", f.tls_client_ca,
                 "PEM CA: clients and workers must present a certificate it signed (mutual TLS)");
  CoordinatorConfig cfg;
  double retry_backoff_s = 1, retry_backoff_max_s = 30;
  app.add_option("--checkpoint-every", cfg.checkpoint_every,
                 "checkpoint period (epochs / L-BFGS iterations) of jobs that set none; 0: none")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--keep-checkpoints", cfg.keep_checkpoints, "newest checkpoints kept per job")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_flag("--keep-finished-checkpoints", cfg.keep_finished_checkpoints,
               "keep a job's checkpoints when it ends (default: deleted)");
  app.add_option("--max-checkpoint-bytes", cfg.max_checkpoint_bytes,
                 "largest checkpoint upload (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--retry-backoff", retry_backoff_s,
                 "seconds before a job's first retry; doubles with each further retry")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--retry-backoff-max", retry_backoff_max_s, "longest backoff between retries")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--max-message-bytes", f.max_message_bytes, "largest request message")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1} << 16, int64_t{INT32_MAX}));
  app.add_option("--max-predict-rows", cfg.predict_limits.max_rows,
                 "rows per Predict / ModelInfer request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-predict-values", cfg.predict_limits.max_values,
                 "probabilities (rows x classes) per Predict / ModelInfer response")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{INT32_MAX}));
  app.add_option("--max-queued-jobs", cfg.max_queued_jobs,
                 "jobs waiting in the queue (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-workers-per-job", cfg.max_workers_per_job,
                 "JobSpec.workers above this is refused at submit (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-watchers-per-job", cfg.max_watchers_per_job,
                 "concurrent WatchJob streams per job (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-upload-bytes", cfg.max_upload_bytes,
                 "bytes per uploaded dataset (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-dataset-bytes", cfg.max_dataset_bytes,
                 "bytes of all uploaded datasets together (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--min-free-disk-bytes", cfg.min_free_disk_bytes,
                 "uploads are refused once the data dir's disk has less free")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-threads", f.max_threads, "gRPC server threads (grpc::ResourceQuota)")
      ->capture_default_str()
      ->check(CLI::Range(4, 100000));
  app.add_option("--max-streams", f.max_streams, "concurrent streams per client connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--metrics-listen", f.metrics_listen,
                 "serve Prometheus metrics on http://HOST:PORT/metrics (default: none)");
  app.add_option("--local-worker-metrics-listen", f.local_worker_metrics_listen,
                 "HOST:PORT: local worker i serves its metrics on HOST:PORT+i");
  app.add_option("--metrics-job-grace", f.metrics_job_grace_s,
                 "seconds a finished job's logit_job_* series stay on /metrics")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--log-format", f.log_format, "log lines as text or json (one object per line)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--log-level", f.log_level, "lowest level logged")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  app.footer(
      "Example:\n  logit-server --listen 127.0.0.1:50051 --local-workers 2 --data-root "
      "/usr/share/datasets");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e, out, err);
    return e.get_exit_code() == 0 ? 0 : 2;
  }

  {
    logging::LogOptions log_options;
    log_options.format = *logging::ParseFormat(f.log_format);  // checked by the flag
    log_options.level = *logging::ParseLevel(f.log_level);
    logging::Configure("logit-server", log_options);
  }
  int local_metrics_port = 0;
  std::string local_metrics_host;
  if (!f.local_worker_metrics_listen.empty()) {
    const size_t colon = f.local_worker_metrics_listen.rfind(':');
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(f.local_worker_metrics_listen.substr(colon + 1), &local_metrics_port) ||
        local_metrics_port <= 0 || local_metrics_port + f.local_workers > 65536) {
      err << "logit-server: --local-worker-metrics-listen: '" << f.local_worker_metrics_listen
          << "' is not HOST:PORT with a port for each local worker\n";
      return 2;
    }
    local_metrics_host = f.local_worker_metrics_listen.substr(0, colon);
  }

  // SIGTERM / SIGINT are taken by a waiting thread (sigwait), so block them everywhere first.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  SecurityOptions security;
  security.tls_cert_file = f.tls_cert;
  security.tls_key_file = f.tls_key;
  security.tls_client_ca_file = f.tls_client_ca;
  for (auto [file, flag, token] :
       {std::tuple{&f.auth_token_file, "--auth-token-file", &security.client_token},
        std::tuple{&f.worker_token_file, "--worker-token-file", &security.worker_token}}) {
    if (file->empty()) continue;
    auto read = ReadTokenFile(*file, flag);
    if (!read.ok()) {
      err << "logit-server: " << read.status().message() << "\n";
      return 2;
    }
    *token = *read;
  }
  // With client tokens, workers always need one: a random token only local workers learn.
  if (!security.client_token.empty() && security.worker_token.empty()) {
    security.worker_token = RandomSecret();
  }
  auto creds = MakeServerCredentials(security);
  if (!creds.ok()) {
    err << "logit-server: " << creds.status().message() << "\n";
    return 2;
  }
  const Authorizer authorizer(security);
  cfg.data_dir = f.data_dir;
  cfg.data_root = f.data_root;
  cfg.store_host = f.advertise_host;
  if (cfg.store_host.empty()) {
    const std::string host = f.listen.substr(0, f.listen.rfind(':'));
    cfg.store_host = host == "0.0.0.0" || host == "[::]" ? LocalHostName() : HostOf(f.listen);
  }
  cfg.heartbeat_interval = std::chrono::milliseconds(f.heartbeat_ms);
  cfg.worker_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.worker_timeout_s * 1000));
  cfg.retry_backoff = std::chrono::milliseconds(static_cast<int64_t>(retry_backoff_s * 1000));
  cfg.retry_backoff_max =
      std::chrono::milliseconds(static_cast<int64_t>(retry_backoff_max_s * 1000));
  cfg.collective_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(f.collective_timeout_s * 1000));
  cfg.metrics = std::make_shared<ServerMetrics>();
  cfg.metrics_job_grace =
      std::chrono::milliseconds(static_cast<int64_t>(f.metrics_job_grace_s * 1000));
  std::unique_ptr<MetricsEndpoint> metrics_endpoint;
  if (!f.metrics_listen.empty()) {
    auto endpoint = MetricsEndpoint::Start(f.metrics_listen);
    if (!endpoint.ok()) {
      err << "logit-server: " << endpoint.status().message() << "\n";
      return endpoint.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    metrics_endpoint = std::move(*endpoint);
    for (const auto& c : cfg.metrics->collectables()) metrics_endpoint->Register(c);
  }
  auto coordinator = Coordinator::Create(cfg);
  if (!coordinator.ok()) {
    err << "logit-server: " << coordinator.status().message() << "\n";
    return 1;
  }
  TrainingServiceImpl training(coordinator->get(), &authorizer);
  WorkerServiceImpl workers(coordinator->get(), &authorizer);
  InferenceServiceImpl inference(coordinator->get(), &authorizer);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(f.listen, *creds, &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(f.max_message_bytes));
  grpc::ResourceQuota quota("logit-server");
  quota.SetMaxThreads(f.max_threads);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, f.max_streams);
  // Dead clients and workers are noticed: ping idle connections, accept clients' pings.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcMetricsInterceptorFactory>(cfg.metrics.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(&training);
  builder.RegisterService(&workers);
  builder.RegisterService(&inference);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    err << "logit-server: --listen: cannot listen on " << f.listen << "\n";
    return 1;
  }
  const std::string address = absl::StrCat(HostOf(f.listen), ":", port);
  out << "logit-server listening on " << address << " (data dir " << f.data_dir << ", "
      << (security.tls() ? (f.tls_client_ca.empty() ? "TLS" : "mutual TLS") : "no TLS") << ", "
      << (security.client_token.empty() ? "no client token" : "client token required") << ")"
      << std::endl;
  if (metrics_endpoint) {
    out << "logit-server metrics on http://" << HostOf(f.metrics_listen) << ":"
        << metrics_endpoint->port() << "/metrics" << std::endl;
  }
  logging::Info("server started",
                {{"listen", address},
                 {"data_dir", f.data_dir},
                 {"metrics_port", metrics_endpoint ? metrics_endpoint->port() : 0},
                 {"tls", security.tls()},
                 {"client_token", !security.client_token.empty()},
                 {"local_workers", f.local_workers}});
  if (!IsLoopback(HostOf(f.listen)) || f.listen.rfind("0.0.0.0", 0) == 0 ||
      f.listen.rfind("[::]", 0) == 0) {
    if (!security.tls() || security.client_token.empty()) {
      logging::Warn(
          "listening beyond loopback without TLS or client tokens: anyone who can reach this "
          "port can submit jobs, read models and act as a worker (see README, Security)",
          {{"listen", f.listen},
           {"tls", security.tls()},
           {"client_token", !security.client_token.empty()}});
    }
  }

  std::unique_ptr<WorkerPool> pool;
  if (f.local_workers > 0) {
    // Local workers trust the server's own certificate (a self-signed one, or a chain that
    // ends in its CA) and, under mutual TLS, present it.
    std::vector<std::string> tls_args;
    if (security.tls()) {
      tls_args = {"--tls-ca", f.tls_cert};
      if (!f.tls_client_ca.empty()) {
        tls_args.insert(tls_args.end(), {"--tls-cert", f.tls_cert, "--tls-key", f.tls_key});
      }
    }
    tls_args.insert(tls_args.end(), {"--log-format", f.log_format, "--log-level", f.log_level});
    pool = std::make_unique<WorkerPool>(
        f.worker_binary.empty() ? DefaultWorkerBinary() : f.worker_binary, address, f.local_workers,
        ThreadsPerRank(f.local_workers), tls_args, security.worker_token);
    if (local_metrics_port > 0) pool->set_metrics_listen(local_metrics_host, local_metrics_port);
    pool->Start();
  }

  // Each service can be asked for by name too (a Kubernetes grpc probe's `service`).
  if (grpc::HealthCheckServiceInterface* hc = server->GetHealthCheckService()) {
    for (const char* name : {"logit.v1.TrainingService", "logit.v1.WorkerService",
                             "inference.GRPCInferenceService"}) {
      hc->SetServingStatus(name, true);
    }
  }
  // Health follows the storage probe: a server that cannot persist what it acknowledges
  // says NOT_SERVING, so load balancers and probes move away from it.
  std::atomic<bool> stop_health{false};
  std::thread health([&] {
    grpc::HealthCheckServiceInterface* hc = server->GetHealthCheckService();
    bool serving = true;
    while (!stop_health) {
      const bool ok = (*coordinator)->StorageStatus().ok();
      if (hc != nullptr && ok != serving) {
        hc->SetServingStatus(ok);
        serving = ok;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });

  int sig = 0;
  sigwait(&signals, &sig);
  stop_health = true;
  health.join();
  out << "logit-server: " << (sig == SIGTERM ? "SIGTERM" : "SIGINT") << ", shutting down"
      << std::endl;
  logging::Info("server stopping", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  if (pool) pool->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  coordinator->reset();
  metrics_endpoint.reset();
  out << "logit-server: stopped" << std::endl;
  return 0;
}

}  // namespace logit
