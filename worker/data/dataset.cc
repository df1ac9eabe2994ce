#include "worker/data/dataset.h"

#include <algorithm>

namespace logit {

int64_t Dataset::MaxLabel() const {
  int64_t m = -1;
  for (int64_t y : labels) m = std::max(m, y);
  return m;
}

Dataset TakeRows(const Dataset& data, const std::vector<int64_t>& rows) {
  Dataset out;
  out.source = data.source;
  out.num_rows = static_cast<int64_t>(rows.size());
  out.num_features = data.num_features;
  out.has_labels = data.has_labels;
  out.total_rows = data.total_rows;
  out.first_row = 0;
  out.storage = data.storage;
  out.u8_scale = data.u8_scale;
  const int64_t d = data.num_features;
  switch (data.storage) {
    case FeatureStorage::kDenseFloat32:
      out.dense_f32.resize(rows.size() * d);
      for (size_t i = 0; i < rows.size(); ++i)
        std::copy_n(data.dense_f32.data() + rows[i] * d, d, out.dense_f32.data() + i * d);
      break;
    case FeatureStorage::kDenseUint8:
      out.dense_u8.resize(rows.size() * d);
      for (size_t i = 0; i < rows.size(); ++i)
        std::copy_n(data.dense_u8.data() + rows[i] * d, d, out.dense_u8.data() + i * d);
      break;
    case FeatureStorage::kSparseCsr:
      out.csr_indptr.reserve(rows.size() + 1);
      out.csr_indptr.push_back(0);
      for (int64_t r : rows) {
        const int64_t b = data.csr_indptr[r], e = data.csr_indptr[r + 1];
        out.csr_indices.insert(out.csr_indices.end(), data.csr_indices.begin() + b,
                               data.csr_indices.begin() + e);
        out.csr_values.insert(out.csr_values.end(), data.csr_values.begin() + b,
                              data.csr_values.begin() + e);
        out.csr_indptr.push_back(static_cast<int64_t>(out.csr_indices.size()));
      }
      break;
  }
  out.labels.reserve(rows.size());
  out.global_row.reserve(rows.size());
  for (int64_t r : rows) {
    out.labels.push_back(data.labels[r]);
    out.global_row.push_back(data.GlobalRow(r));
  }
  if (!data.sample_weights.empty()) {
    out.sample_weights.reserve(rows.size());
    for (int64_t r : rows) out.sample_weights.push_back(data.sample_weights[r]);
  }
  return out;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

SplitIndices SplitRows(const Dataset& data, double val_fraction, double test_fraction,
                       uint64_t seed) {
  SplitIndices s;
  const uint64_t seed_mix = SplitMix64(seed ^ 0x6c6f676974ULL);
  for (int64_t i = 0; i < data.num_rows; ++i) {
    const double u =
        static_cast<double>(SplitMix64(seed_mix ^ static_cast<uint64_t>(data.GlobalRow(i))) >> 11) *
        (1.0 / 9007199254740992.0);
    if (u < val_fraction) {
      s.val.push_back(i);
    } else if (u < val_fraction + test_fraction) {
      s.test.push_back(i);
    } else {
      s.train.push_back(i);
    }
  }
  return s;
}

}  // namespace logit
