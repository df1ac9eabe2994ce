#include "server/rpc_metrics.h"

#include <chrono>
#include <string>

#include "worker/common/log.h"

namespace logit {

namespace {

using grpc::experimental::InterceptionHookPoints;

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(const char* method, bool streaming, ServerMetrics* metrics)
      : method_(method != nullptr ? method : ""),
        streaming_(streaming),
        metrics_(metrics),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      const std::string code = ServerMetrics::CodeName(status.error_code());
      metrics_->Rpc(method_, code, seconds, streaming_);
      if (!status.ok() && logging::Enabled(logging::Level::kDebug)) {
        logging::Debug("rpc failed", {{"method", method_},
                                      {"code", code},
                                      {"error", status.error_message()},
                                      {"seconds", seconds}});
      }
    }
    methods->Proceed();
  }

 private:
  const std::string method_;
  const bool streaming_;
  ServerMetrics* const metrics_;
  const std::chrono::steady_clock::time_point start_;
};

}  // namespace

grpc::experimental::Interceptor* RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RpcMetricsInterceptor(
      info->method(), info->type() != grpc::experimental::ServerRpcInfo::Type::UNARY, metrics_);
}

}  // namespace logit
