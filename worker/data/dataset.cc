#include "worker/data/dataset.h"

#include <algorithm>
#include <cmath>

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
        std::copy_n(data.F32Rows() + rows[i] * d, d, out.dense_f32.data() + i * d);
      break;
    case FeatureStorage::kDenseUint8:
      out.dense_u8.resize(rows.size() * d);
      for (size_t i = 0; i < rows.size(); ++i)
        std::copy_n(data.U8Rows() + rows[i] * d, d, out.dense_u8.data() + i * d);
      break;
    case FeatureStorage::kSparseCsr:
      out.csr_indptr.reserve(rows.size() + 1);
      out.csr_indptr.push_back(0);
      for (int64_t r : rows) {
        const int64_t b = data.csr_indptr[r], e = data.csr_indptr[r + 1];
        out.csr_indices.insert(out.csr_indices.end(), data.csr_indices.begin() + b,
                               data.csr_indices.begin() + e);
        if (!data.csr_values.empty()) {  // else implicit ones stay implicit
          out.csr_values.insert(out.csr_values.end(), data.csr_values.begin() + b,
                                data.csr_values.begin() + e);
        }
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

namespace {

// The key that orders a row for splitting: a hash of (seed, global row).
uint64_t SplitKey(uint64_t seed, int64_t global_row) {
  return SplitMix64(SplitMix64(seed ^ 0x6c6f676974ULL) ^ static_cast<uint64_t>(global_row));
}

}  // namespace

SplitIndices SplitRows(const Dataset& data, double val_fraction, double test_fraction,
                       uint64_t seed) {
  SplitIndices s;
  for (int64_t i = 0; i < data.num_rows; ++i) {
    const double u = static_cast<double>(SplitKey(seed, data.GlobalRow(i)) >> 11) *
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

absl::StatusOr<SplitIndices> StratifiedSplitRows(const Dataset& data, int64_t classes,
                                                 double val_fraction, double test_fraction,
                                                 uint64_t seed, const SumOverRanks& sum) {
  const size_t k_count = static_cast<size_t>(classes);
  std::vector<uint64_t> key(static_cast<size_t>(data.num_rows));
  std::vector<double> totals(k_count, 0.0);
  for (int64_t i = 0; i < data.num_rows; ++i) {
    key[i] = SplitKey(seed, data.GlobalRow(i));
    totals[static_cast<size_t>(data.labels[i])] += 1;
  }
  if (sum) {
    absl::Status st = sum(&totals);
    if (!st.ok()) return st;
  }
  // For each class, the key of its m-th smallest row (0-based) over all ranks: rows with a
  // smaller key are exactly m (keys are distinct but for 64-bit collisions). Found a byte at a
  // time, most significant first: each round counts, per class, the next byte of the keys that
  // share the bytes chosen so far.
  auto select = [&](const std::vector<double>& rank) -> absl::StatusOr<std::vector<uint64_t>> {
    std::vector<uint64_t> prefix(k_count, 0);
    std::vector<double> remaining = rank;
    for (int shift = 56; shift >= 0; shift -= 8) {
      std::vector<double> hist(k_count * 256, 0.0);
      for (int64_t i = 0; i < data.num_rows; ++i) {
        const size_t k = static_cast<size_t>(data.labels[i]);
        // The bytes above `shift` must equal those chosen so far.
        if (shift < 56 && (key[i] >> (shift + 8)) != (prefix[k] >> (shift + 8))) continue;
        hist[k * 256 + ((key[i] >> shift) & 0xff)] += 1;
      }
      if (sum) {
        absl::Status st = sum(&hist);
        if (!st.ok()) return st;
      }
      for (size_t k = 0; k < k_count; ++k) {
        uint64_t byte = 0;
        for (; byte < 255; ++byte) {
          const double c = hist[k * 256 + byte];
          if (remaining[k] < c) break;
          remaining[k] -= c;
        }
        prefix[k] |= byte << shift;
      }
    }
    return prefix;
  };
  std::vector<double> val_rank(k_count), test_rank(k_count);
  for (size_t k = 0; k < k_count; ++k) {
    const double n_val = std::round(val_fraction * totals[k]);
    const double n_test = std::round(test_fraction * totals[k]);
    val_rank[k] = n_val;
    test_rank[k] = std::min(totals[k], n_val + n_test);
  }
  absl::StatusOr<std::vector<uint64_t>> val_cut = select(val_rank);
  if (!val_cut.ok()) return val_cut.status();
  absl::StatusOr<std::vector<uint64_t>> test_cut = select(test_rank);
  if (!test_cut.ok()) return test_cut.status();
  SplitIndices s;
  for (int64_t i = 0; i < data.num_rows; ++i) {
    const size_t k = static_cast<size_t>(data.labels[i]);
    // A rank equal to the class size selects past its last row: every row is below the cut.
    const bool all_val = val_rank[k] >= totals[k], all_test = test_rank[k] >= totals[k];
    if (all_val || key[i] < (*val_cut)[k]) {
      s.val.push_back(i);
    } else if (all_test || key[i] < (*test_cut)[k]) {
      s.test.push_back(i);
    } else {
      s.train.push_back(i);
    }
  }
  return s;
}

}  // namespace logit
