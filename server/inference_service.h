// The Open Inference Protocol v2 (KServe / Triton) on top of the coordinator's models:
// translates protocol tensors to Coordinator::Predict and back.
#ifndef LOGIT_SERVER_INFERENCE_SERVICE_H_
#define LOGIT_SERVER_INFERENCE_SERVICE_H_

#include "inference/grpc_predict_v2.grpc.pb.h"
#include "server/auth.h"
#include "server/coordinator.h"

namespace logit {

class InferenceServiceImpl final : public inference::GRPCInferenceService::Service {
 public:
  // Every call first passes `auth` with the client role.
  InferenceServiceImpl(Coordinator* coordinator, const Authorizer* auth)
      : c_(coordinator), auth_(auth) {}
  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse*) override;
  grpc::Status ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse*) override;
  grpc::Status ModelReady(grpc::ServerContext*, const inference::ModelReadyRequest*,
                          inference::ModelReadyResponse*) override;
  grpc::Status ServerMetadata(grpc::ServerContext*, const inference::ServerMetadataRequest*,
                              inference::ServerMetadataResponse*) override;
  grpc::Status ModelMetadata(grpc::ServerContext*, const inference::ModelMetadataRequest*,
                             inference::ModelMetadataResponse*) override;
  grpc::Status ModelInfer(grpc::ServerContext*, const inference::ModelInferRequest*,
                          inference::ModelInferResponse*) override;

 private:
  grpc::Status Infer(grpc::ServerContext*, const inference::ModelInferRequest*,
                     inference::ModelInferResponse*);

  Coordinator* c_;
  const Authorizer* auth_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_INFERENCE_SERVICE_H_
