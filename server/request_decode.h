// Turns prediction requests into rows: the Open Inference Protocol's ModelInfer tensors into a
// logit.v1.PredictRequest, and a PredictRequest into rows of a model's features. Every size in
// a request is checked before anything is allocated or read. No gRPC server types; the libFuzzer
// target tests/fuzz/request_fuzz.cc drives these directly.
#ifndef LOGIT_SERVER_REQUEST_DECODE_H_
#define LOGIT_SERVER_REQUEST_DECODE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "inference/grpc_predict_v2.pb.h"
#include "logit/v1/training.pb.h"
#include "worker/data/dataset.h"

namespace logit {

// Limits on one prediction request.
struct PredictLimits {
  int64_t max_rows = int64_t{1} << 20;  // rows per request (RESOURCE_EXHAUSTED beyond)
  // Probabilities per response (rows x classes): 2^26 floats are 256 MiB.
  int64_t max_values = int64_t{1} << 26;
};

// The single input tensor of `request` (FP32 or FP64, shape [N, d] or a flat [N*d], values in
// `contents` or in raw_input_contents[0]) as a PredictRequest for model `model_name`.
// InvalidArgument naming the field for a malformed tensor: a shape whose product overflows or
// does not match the values sent, an unknown datatype, more than one input.
absl::StatusOr<v1::PredictRequest> PredictRequestFromInfer(
    const inference::ModelInferRequest& request);

// The rows of `request` for a model with `num_features` (>= 1) features and `num_classes`
// classes, as dense float32. InvalidArgument when the values are not whole finite rows;
// ResourceExhausted naming the limit when there are more than limits.max_rows rows or the
// response would hold more than limits.max_values probabilities.
absl::StatusOr<Dataset> RowsFromPredict(const v1::PredictRequest& request, int64_t num_features,
                                        int64_t num_classes, const PredictLimits& limits);

}  // namespace logit

#endif  // LOGIT_SERVER_REQUEST_DECODE_H_
