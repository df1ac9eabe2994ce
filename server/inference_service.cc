#include "server/inference_service.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/grpc_services.h"
#include "server/request_decode.h"

namespace logit {

grpc::Status InferenceServiceImpl::ServerLive(grpc::ServerContext* ctx,
                                              const inference::ServerLiveRequest*,
                                              inference::ServerLiveResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  resp->set_live(true);
  return grpc::Status::OK;
}

grpc::Status InferenceServiceImpl::ServerReady(grpc::ServerContext* ctx,
                                               const inference::ServerReadyRequest*,
                                               inference::ServerReadyResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  resp->set_ready(true);
  return grpc::Status::OK;
}

grpc::Status InferenceServiceImpl::ModelReady(grpc::ServerContext* ctx,
                                              const inference::ModelReadyRequest* req,
                                              inference::ModelReadyResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  resp->set_ready(c_->GetModel(req->name()).ok());
  return grpc::Status::OK;
}

grpc::Status InferenceServiceImpl::ServerMetadata(grpc::ServerContext* ctx,
                                                  const inference::ServerMetadataRequest*,
                                                  inference::ServerMetadataResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  resp->set_name("logit");
  resp->set_version("0.1.0");
  return grpc::Status::OK;
}

grpc::Status InferenceServiceImpl::ModelMetadata(grpc::ServerContext* ctx,
                                                 const inference::ModelMetadataRequest* req,
                                                 inference::ModelMetadataResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  auto rec = c_->GetModel(req->name());
  if (!rec.ok()) return ToGrpcStatus(rec.status());
  resp->set_name(req->name());
  resp->add_versions("1");
  resp->set_platform("logit");
  auto* in = resp->add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  in->add_shape(-1);
  in->add_shape(rec->info.num_features());
  auto* p = resp->add_outputs();
  p->set_name("probabilities");
  p->set_datatype("FP32");
  p->add_shape(-1);
  p->add_shape(rec->info.num_classes());
  auto* l = resp->add_outputs();
  l->set_name("label");
  l->set_datatype("INT64");
  l->add_shape(-1);
  return grpc::Status::OK;
}

grpc::Status InferenceServiceImpl::ModelInfer(grpc::ServerContext* ctx,
                                              const inference::ModelInferRequest* req,
                                              inference::ModelInferResponse* resp) {
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status = Infer(ctx, req, resp);
  int64_t rows = 0;
  if (status.ok() && resp->outputs_size() > 0 && resp->outputs(0).shape_size() > 0) {
    rows = resp->outputs(0).shape(0);
  }
  return ObservePredict(c_->metrics(), "oip", start, std::move(status), rows);
}

grpc::Status InferenceServiceImpl::Infer(grpc::ServerContext* ctx,
                                         const inference::ModelInferRequest* req,
                                         inference::ModelInferResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  auto preq = PredictRequestFromInfer(*req);
  if (!preq.ok()) return ToGrpcStatus(preq.status());
  if (req->inputs(0).shape_size() == 2) {
    auto rec = c_->GetModel(req->model_name());
    if (!rec.ok()) return ToGrpcStatus(rec.status());
    if (req->inputs(0).shape(1) != rec->info.num_features()) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat("inputs[0].shape[1]: ", req->inputs(0).shape(1), ", but model '",
                       req->model_name(), "' has ", rec->info.num_features(), " features")));
    }
  }
  auto pred = c_->Predict(*preq);
  if (!pred.ok()) return ToGrpcStatus(pred.status());
  const int64_t n = pred->labels_size(), k = pred->num_classes();
  bool want_p = req->outputs_size() == 0, want_l = req->outputs_size() == 0;
  for (const auto& o : req->outputs()) {
    if (o.name() == "probabilities") {
      want_p = true;
    } else if (o.name() == "label") {
      want_l = true;
    } else {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
          "outputs: unknown output '", o.name(), "' (the model has probabilities and label)")));
    }
  }
  const bool raw = req->raw_input_contents_size() > 0;
  resp->set_model_name(req->model_name());
  resp->set_model_version("1");
  resp->set_id(req->id());
  if (want_p) {
    auto* t = resp->add_outputs();
    t->set_name("probabilities");
    t->set_datatype("FP32");
    t->add_shape(n);
    t->add_shape(k);
    if (raw) {
      resp->add_raw_output_contents(
          std::string(reinterpret_cast<const char*>(pred->probabilities().data()),
                      sizeof(float) * pred->probabilities_size()));
    } else {
      *t->mutable_contents()->mutable_fp32_contents() = pred->probabilities();
    }
  }
  if (want_l) {
    auto* t = resp->add_outputs();
    t->set_name("label");
    t->set_datatype("INT64");
    t->add_shape(n);
    if (raw) {
      resp->add_raw_output_contents(
          std::string(reinterpret_cast<const char*>(pred->labels().data()), sizeof(int64_t) * n));
    } else {
      *t->mutable_contents()->mutable_int64_contents() = pred->labels();
    }
  }
  return grpc::Status::OK;
}

}  // namespace logit
