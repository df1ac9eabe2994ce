#include "server/server_app.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <memory>
#include <ostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "server/coordinator.h"
#include "server/grpc_services.h"
#include "server/inference_service.h"
#include "server/worker_pool.h"
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
};

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
      ->capture_default_str();
  app.add_option("--advertise-host", f.advertise_host,
                 "host name workers use to reach this server's c10d store (default: the "
                 "--listen host; this machine's name when listening on 0.0.0.0)");
  app.add_option("--collective-timeout", f.collective_timeout_s,
                 "seconds a rank waits for its peers in a collective")
      ->capture_default_str();
  app.footer(
      "Example:\n  logit-server --listen 127.0.0.1:50051 --local-workers 2 --data-root "
      "/usr/share/datasets");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e, out, err);
    return e.get_exit_code() == 0 ? 0 : 2;
  }

  // SIGTERM / SIGINT are taken by a waiting thread (sigwait), so block them everywhere first.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  CoordinatorConfig cfg;
  cfg.data_dir = f.data_dir;
  cfg.data_root = f.data_root;
  cfg.store_host = f.advertise_host;
  if (cfg.store_host.empty()) {
    const std::string host = f.listen.substr(0, f.listen.rfind(':'));
    cfg.store_host = host == "0.0.0.0" || host == "[::]" ? LocalHostName() : HostOf(f.listen);
  }
  cfg.heartbeat_interval = std::chrono::milliseconds(f.heartbeat_ms);
  cfg.worker_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.worker_timeout_s * 1000));
  cfg.collective_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(f.collective_timeout_s * 1000));
  auto coordinator = Coordinator::Create(cfg);
  if (!coordinator.ok()) {
    err << "logit-server: " << coordinator.status().message() << "\n";
    return 1;
  }
  TrainingServiceImpl training(coordinator->get());
  WorkerServiceImpl workers(coordinator->get());
  InferenceServiceImpl inference(coordinator->get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(f.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&training);
  builder.RegisterService(&workers);
  builder.RegisterService(&inference);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    err << "logit-server: --listen: cannot listen on " << f.listen << "\n";
    return 1;
  }
  const std::string address = absl::StrCat(HostOf(f.listen), ":", port);
  out << "logit-server listening on " << address << " (data dir " << f.data_dir << ")" << std::endl;

  std::unique_ptr<WorkerPool> pool;
  if (f.local_workers > 0) {
    pool = std::make_unique<WorkerPool>(
        f.worker_binary.empty() ? DefaultWorkerBinary() : f.worker_binary, address, f.local_workers,
        ThreadsPerRank(f.local_workers));
    pool->Start();
  }

  int sig = 0;
  sigwait(&signals, &sig);
  out << "logit-server: " << (sig == SIGTERM ? "SIGTERM" : "SIGINT") << ", shutting down"
      << std::endl;
  if (pool) pool->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  coordinator->reset();
  out << "logit-server: stopped" << std::endl;
  return 0;
}

}  // namespace logit
