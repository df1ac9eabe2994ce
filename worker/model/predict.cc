#include "worker/model/predict.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace logit {

namespace {

// Logits z[0..c) of one dense row x[0..d) under W (d x c, row-major) and b.
template <typename T>
void DenseLogits(const T* x, float scale, const LinearModel& m, float* z) {
  const int64_t d = m.num_features, c = m.OutputColumns();
  const float* w = m.weights.data();
  std::copy(m.bias.begin(), m.bias.end(), z);
  if (c == 1) {
    float acc = 0;
    for (int64_t j = 0; j < d; ++j) acc += static_cast<float>(x[j]) * w[j];
    z[0] += acc * scale;
    return;
  }
  for (int64_t j = 0; j < d; ++j) {
    const float xj = static_cast<float>(x[j]) * scale;
    if (xj == 0) continue;
    const float* wj = w + j * c;
    for (int64_t k = 0; k < c; ++k) z[k] += xj * wj[k];
  }
}

void SparseLogits(const Dataset& data, int64_t row, const LinearModel& m, float* z) {
  const int64_t c = m.OutputColumns();
  std::copy(m.bias.begin(), m.bias.end(), z);
  for (int64_t p = data.csr_indptr[row]; p < data.csr_indptr[row + 1]; ++p) {
    const float v = data.CsrValue(p);
    const float* wj = m.weights.data() + data.csr_indices[p] * c;
    for (int64_t k = 0; k < c; ++k) z[k] += v * wj[k];
  }
}

// Probabilities from the logits of one row, written to p[0..K).
void Probabilities(const float* z, int64_t classes, float* p) {
  if (classes == 2) {
    const float s = 1.0f / (1.0f + std::exp(-z[0]));
    p[0] = 1.0f - s;
    p[1] = s;
    return;
  }
  const float top = *std::max_element(z, z + classes);
  float sum = 0;
  for (int64_t k = 0; k < classes; ++k) sum += p[k] = std::exp(z[k] - top);
  for (int64_t k = 0; k < classes; ++k) p[k] /= sum;
}

}  // namespace

absl::StatusOr<std::vector<float>> PredictProba(const LinearModel& model, const Dataset& data) {
  const int64_t d = model.num_features, c = model.OutputColumns(), k = model.num_classes;
  if (data.num_features != d &&
      !(data.storage == FeatureStorage::kSparseCsr && data.num_features <= d)) {
    return absl::InvalidArgumentError(absl::StrCat(data.source, ": has ", data.num_features,
                                                   " features but the model expects ", d));
  }
  if (k < 2 || static_cast<int64_t>(model.weights.size()) != d * c ||
      static_cast<int64_t>(model.bias.size()) != c) {
    return absl::InvalidArgumentError("model: weights and bias do not match its shape");
  }
  std::vector<float> out(static_cast<size_t>(data.num_rows * k));
  std::vector<float> z(static_cast<size_t>(c));
  for (int64_t i = 0; i < data.num_rows; ++i) {
    switch (data.storage) {
      case FeatureStorage::kDenseFloat32:
        DenseLogits(data.F32Rows() + i * d, 1.0f, model, z.data());
        break;
      case FeatureStorage::kDenseUint8:
        DenseLogits(data.U8Rows() + i * d, data.u8_scale, model, z.data());
        break;
      case FeatureStorage::kSparseCsr:
        SparseLogits(data, i, model, z.data());
        break;
    }
    Probabilities(z.data(), k, out.data() + i * k);
  }
  return out;
}

}  // namespace logit
