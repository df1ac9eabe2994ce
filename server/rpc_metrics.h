// Every gRPC call the server completes, counted and timed by service, method and code
// (ServerMetrics::Rpc), and failed calls logged at DEBUG: one server interceptor, so no handler
// has to remember it.
#ifndef LOGIT_SERVER_RPC_METRICS_H_
#define LOGIT_SERVER_RPC_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include "server/server_metrics.h"

namespace logit {

class RpcMetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `metrics` must outlive the server.
  explicit RpcMetricsInterceptorFactory(ServerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  ServerMetrics* metrics_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_RPC_METRICS_H_
