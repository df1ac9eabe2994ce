// libFuzzer target: prediction request decoding (server/request_decode.h). The input is parsed
// as an Open Inference Protocol inference.ModelInferRequest -> PredictRequestFromInfer ->
// RowsFromPredict for models of 1, 3 and 784 features and 2 or 1000 classes (and small row and
// value limits), and also as a
// logit.v1.PredictRequest -> RowsFromPredict. Accepted requests must give whole rows.
#include <cstddef>
#include <cstdint>
#include <string>

#include "inference/grpc_predict_v2.pb.h"
#include "logit/v1/training.pb.h"
#include "server/request_decode.h"
#include "tests/fuzz/fuzz_util.h"

static void Rows(const logit::v1::PredictRequest& request) {
  for (int64_t d : {int64_t{1}, int64_t{3}, int64_t{784}}) {
    for (int64_t max_rows : {int64_t{1} << 20, int64_t{2}}) {
      const int64_t classes = max_rows == 2 ? 1000 : 2;
      logit::PredictLimits limits;
      limits.max_rows = max_rows;
      limits.max_values = max_rows == 2 ? 1500 : limits.max_values;
      auto rows = logit::RowsFromPredict(request, d, classes, limits);
      logit_fuzz::Report("RowsFromPredict", rows.status());
      if (!rows.ok()) continue;
      FUZZ_CHECK(rows->num_features == d && rows->num_rows >= 1 && rows->num_rows <= max_rows &&
                     rows->num_rows * classes <= limits.max_values &&
                     rows->num_rows * d == request.features_size() &&
                     static_cast<int64_t>(rows->dense_f32.size()) == request.features_size(),
                 "%d values gave %lld rows of %lld", request.features_size(),
                 (long long)rows->num_rows, (long long)rows->num_features);
    }
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inference::ModelInferRequest infer;
  if (infer.ParseFromArray(data, static_cast<int>(size))) {
    auto predict = logit::PredictRequestFromInfer(infer);
    logit_fuzz::Report("PredictRequestFromInfer", predict.status());
    if (predict.ok()) {
      const auto& input = infer.inputs(0);
      int64_t product = 1;
      for (int64_t dim : input.shape()) {
        FUZZ_CHECK(dim >= 0 && !__builtin_mul_overflow(product, dim, &product),
                   "an accepted shape has a negative dimension or overflows");
      }
      FUZZ_CHECK(predict->features_size() == product, "%d values for a shape of %lld",
                 predict->features_size(), (long long)product);
      FUZZ_CHECK(predict->model_id() == infer.model_name(), "model name lost");
      Rows(*predict);
    }
  }
  logit::v1::PredictRequest request;
  if (request.ParseFromArray(data, static_cast<int>(size))) Rows(request);
  return 0;
}
