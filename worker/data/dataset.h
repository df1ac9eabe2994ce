// In-memory rows of one shard of a dataset, independent of LibTorch so that any target
// (server, client, tests) can include it cheaply.
#ifndef LOGIT_WORKER_DATA_DATASET_H_
#define LOGIT_WORKER_DATA_DATASET_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace logit {

class MappedFile;

// How the feature matrix of a Dataset is held in memory.
enum class FeatureStorage {
  kDenseFloat32,  // dense_f32: row-major num_rows x num_features
  kDenseUint8,    // dense_u8: row-major, value = u8 * u8_scale (pixels: 4x less memory)
  kSparseCsr,     // csr_*: compressed sparse rows; never densified
};

// The rows a reader returned for one shard (or a subset made by TakeRows).
struct Dataset {
  std::string source;        // file path, for messages
  int64_t num_rows = 0;      // rows held here
  int64_t num_features = 0;  // d (for sparse data: max index + 1 seen, or as configured)
  int64_t total_rows = 0;    // rows in the whole file, all shards together
  int64_t first_row = 0;     // global index of the first row held (shards are contiguous)
  FeatureStorage storage = FeatureStorage::kDenseFloat32;

  std::vector<float> dense_f32;
  std::vector<uint8_t> dense_u8;
  float u8_scale = 1.0f;  // multiplier applied to dense_u8 values when they are used
  // Dense rows read in place from a read-only mapping of the file (ReadOptions::map_rows: a
  // .npy of uint8 or float32 rows) instead of dense_u8 / dense_f32, which stay empty: the page
  // cache holds them and the OS may drop and re-read pages, so a dataset larger than the
  // process's memory limit still trains (at the disk's speed). Read rows with U8Rows() /
  // F32Rows(), which serve either.
  std::shared_ptr<const MappedFile> mapping;
  const uint8_t* mapped_u8 = nullptr;
  const float* mapped_f32 = nullptr;

  std::vector<int64_t> csr_indptr;   // num_rows + 1 offsets into csr_indices / csr_values
  std::vector<int32_t> csr_indices;  // 0-based column of each stored value (< kMaxFeatures = 2^31)
  // The stored values, or empty when every one of them is 1 (binary features such as click logs
  // and bags of words: the reader keeps no values then, 4 bytes a stored value); read them with
  // CsrValue.
  std::vector<float> csr_values;

  std::vector<int64_t> labels;  // class index in [0, classes) per row
  // The class names string labels were mapped with (labels[i] indexes them): ReadOptions'
  // class_names, or the file's distinct labels sorted. Empty when the labels were numbers.
  std::vector<std::string> class_names;
  // False when the file carried no labels (an unlabelled CSV, .npy / IDX without a label file,
  // only when the reader was asked for no labels): `labels` then holds 0 for every row.
  bool has_labels = true;
  std::vector<float> sample_weights;  // per row; empty means every weight is 1
  std::vector<int64_t> global_row;    // global row index per row; empty means first_row + i

  int64_t GlobalRow(int64_t i) const { return global_row.empty() ? first_row + i : global_row[i]; }
  const uint8_t* U8Rows() const { return mapped_u8 != nullptr ? mapped_u8 : dense_u8.data(); }
  const float* F32Rows() const { return mapped_f32 != nullptr ? mapped_f32 : dense_f32.data(); }
  // Stored value p of a CSR matrix (1 when the values are implicit).
  float CsrValue(int64_t p) const { return csr_values.empty() ? 1.0f : csr_values[p]; }
  // The stored values, or null when they are all 1.
  const float* CsrValuesOrNull() const { return csr_values.empty() ? nullptr : csr_values.data(); }
  int64_t MaxLabel() const;  // -1 when empty
};

// Copies the given rows (indices into `data`, in order) into a new Dataset of the same storage.
Dataset TakeRows(const Dataset& data, const std::vector<int64_t>& rows);

// SplitMix64's finaliser: a well-mixed 64-bit hash, stable across platforms and library
// versions (the row splits and the SGD/Adam shuffles are drawn from it).
uint64_t SplitMix64(uint64_t x);

// Row subsets of a train/validation/test split.
struct SplitIndices {
  std::vector<int64_t> train, val, test;
};

// Assigns each row to train, validation or test by a hash of (seed, global row index), so the
// assignment of a row never depends on how the file was sharded. Expected fractions are
// val_fraction and test_fraction. REQUIRES: fractions >= 0 and their sum < 1.
SplitIndices SplitRows(const Dataset& data, double val_fraction, double test_fraction,
                       uint64_t seed);

// Sums a vector of counts over all ranks of a job, in place (nothing to do on one process).
using SumOverRanks = std::function<absl::Status(std::vector<double>* counts)>;

// A stratified split, as scikit-learn's train_test_split(stratify=y): of each class's n_k rows
// (over all ranks), exactly round(val_fraction n_k) go to validation and round(test_fraction
// n_k) to test. Within a class the rows are ordered by the same hash of (seed, global row) as
// SplitRows, and the cut-offs are found by a radix selection over all ranks (`sum`, 16 calls
// of 256 x classes counts), so a row's split never depends on the sharding either. Every rank
// must call it. REQUIRES: labels in [0, classes), fractions as for SplitRows.
absl::StatusOr<SplitIndices> StratifiedSplitRows(const Dataset& data, int64_t classes,
                                                 double val_fraction, double test_fraction,
                                                 uint64_t seed, const SumOverRanks& sum);

}  // namespace logit

#endif  // LOGIT_WORKER_DATA_DATASET_H_
