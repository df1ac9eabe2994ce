#include "server/request_decode.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/data/limits.h"

namespace logit {

absl::StatusOr<v1::PredictRequest> PredictRequestFromInfer(
    const inference::ModelInferRequest& req) {
  auto invalid = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (req.inputs_size() != 1) {
    return invalid("inputs: expected one FP32 tensor [N, d], got ", req.inputs_size(), " tensors");
  }
  const auto& input = req.inputs(0);
  const bool fp64 = input.datatype() == "FP64";
  if (input.datatype() != "FP32" && !fp64) {
    return invalid("inputs[0].datatype: '", input.datatype(), "' is not FP32 or FP64");
  }
  if (input.shape_size() != 2 && input.shape_size() != 1) {
    return invalid("inputs[0].shape: expected [N, d], got ", input.shape_size(), " dimensions");
  }
  const size_t width = fp64 ? 8 : 4;
  const bool raw = req.raw_input_contents_size() > 0;
  if (raw && req.raw_input_contents_size() != 1) {
    return invalid("raw_input_contents: expected one entry for the one input, got ",
                   req.raw_input_contents_size());
  }
  // The values actually sent bound the shape: a product past them (overflow included) is
  // refused before anything is read or allocated.
  const int64_t sent =
      raw ? static_cast<int64_t>(req.raw_input_contents(0).size() / width)
          : (fp64 ? input.contents().fp64_contents_size() : input.contents().fp32_contents_size());
  const std::vector<int64_t> dims(input.shape().begin(), input.shape().end());
  auto count = CheckedProduct(dims, sent, "inputs[0].shape");
  if (!count.ok()) {
    return invalid(count.status().message(), " but the request carries ", sent, " values");
  }
  if (raw && req.raw_input_contents(0).size() != static_cast<size_t>(*count) * width) {
    return invalid("raw_input_contents[0]: ", req.raw_input_contents(0).size(),
                   " bytes, the shape needs ", *count * static_cast<int64_t>(width));
  }
  if (!raw && sent != *count) {
    return invalid("inputs[0].contents: ", sent, " values, the shape needs ", *count);
  }
  v1::PredictRequest out;
  out.set_model_id(req.model_name());
  auto* x = out.mutable_features();
  if (raw) {
    const char* p = req.raw_input_contents(0).data();
    x->Resize(static_cast<int>(*count), 0.0f);
    for (int64_t i = 0; i < *count; ++i) {
      if (fp64) {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        x->Set(static_cast<int>(i), static_cast<float>(v));
      } else {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        x->Set(static_cast<int>(i), v);
      }
    }
  } else if (fp64) {
    x->Reserve(static_cast<int>(*count));
    for (double v : input.contents().fp64_contents()) x->Add(static_cast<float>(v));
  } else {
    *x = input.contents().fp32_contents();
  }
  return out;
}

absl::StatusOr<Dataset> RowsFromPredict(const v1::PredictRequest& request, int64_t num_features,
                                        int64_t num_classes, const PredictLimits& limits) {
  if (num_features < 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", request.model_id(), "' has no features"));
  }
  const int64_t values = request.features_size();
  if (values == 0 || values % num_features != 0) {
    return absl::InvalidArgumentError(absl::StrCat("features: ", values,
                                                   " values are not whole rows of the model's ",
                                                   num_features, " features"));
  }
  Dataset rows;
  rows.source = "request";
  rows.storage = FeatureStorage::kDenseFloat32;
  rows.num_rows = values / num_features;
  if (rows.num_rows > limits.max_rows) {
    return absl::ResourceExhaustedError(absl::StrCat("features: ", rows.num_rows,
                                                     " rows in one request, over the limit "
                                                     "--max-predict-rows=",
                                                     limits.max_rows));
  }
  const auto outputs = CheckedMul(rows.num_rows, std::max<int64_t>(num_classes, 1));
  if (!outputs || *outputs > limits.max_values || *outputs > INT32_MAX) {
    return absl::ResourceExhaustedError(
        absl::StrCat("features: ", rows.num_rows, " rows x ", num_classes,
                     " classes is more probabilities than one response may hold, over the limit "
                     "--max-predict-values=",
                     limits.max_values, "; send fewer rows per request"));
  }
  for (int64_t i = 0; i < values; ++i) {
    if (!std::isfinite(request.features(static_cast<int>(i)))) {
      return absl::InvalidArgumentError(
          absl::StrCat("features: value ", request.features(static_cast<int>(i)), " at row ",
                       i / num_features, ", column ", i % num_features, " is not finite"));
    }
  }
  rows.total_rows = rows.num_rows;
  rows.num_features = num_features;
  rows.dense_f32.assign(request.features().begin(), request.features().end());
  return rows;
}

}  // namespace logit
