// Helpers shared by the libFuzzer targets in tests/fuzz (not part of any library).
//   TempPath:     a per-process file path (reused by every input) in $LOGIT_FUZZ_TMP or /dev/shm.
//   WriteFile:    writes bytes there (plain, or gzip-compressed through zlib).
//   SplitInput:   the first two bytes (little-endian) give the length of part one.
//   CheckDataset: the invariants every Dataset a reader returns must satisfy; aborts otherwise.
#ifndef LOGIT_TESTS_FUZZ_FUZZ_UTIL_H_
#define LOGIT_TESTS_FUZZ_FUZZ_UTIL_H_

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "worker/data/dataset.h"
#include "worker/data/readers.h"

namespace logit_fuzz {

// Aborts (a libFuzzer crash) with a message when `cond` is false.
#define FUZZ_CHECK(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d): ", #cond, __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                                                  \
      std::fprintf(stderr, "\n");                                                         \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

// LOGIT_FUZZ_VERBOSE=1: print each call's status (to see what a single input does).
inline void Report(const char* what, const absl::Status& status) {
  static const bool verbose = std::getenv("LOGIT_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "[fuzz] %s: %s\n", what, status.ToString().c_str());
}

inline const std::string& TempDir() {
  static const std::string dir = [] {
    const char* env = std::getenv("LOGIT_FUZZ_TMP");
    std::string d = env != nullptr && *env != '\0' ? env : "/dev/shm";
    d += "/logit-fuzz-" + std::to_string(::getpid());
    ::mkdir(d.c_str(), 0700);
    return d;
  }();
  return dir;
}

// A path under this process's temporary directory; `name` keeps the extension readers sniff.
inline std::string TempPath(const std::string& name) { return TempDir() + "/" + name; }

inline void WriteFile(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  FUZZ_CHECK(f != nullptr, "cannot create %s", path.c_str());
  if (size > 0) FUZZ_CHECK(std::fwrite(data, 1, size, f) == size, "cannot write %s", path.c_str());
  FUZZ_CHECK(std::fclose(f) == 0, "cannot close %s", path.c_str());
}

inline void WriteGzipFile(const std::string& path, const uint8_t* data, size_t size) {
  gzFile f = gzopen(path.c_str(), "wb");
  FUZZ_CHECK(f != nullptr, "gzopen %s", path.c_str());
  if (size > 0) {
    FUZZ_CHECK(gzwrite(f, data, static_cast<unsigned>(size)) == static_cast<int>(size),
               "gzwrite %s", path.c_str());
  }
  FUZZ_CHECK(gzclose(f) == Z_OK, "gzclose %s", path.c_str());
}

// Two parts of one input: bytes [2, 2 + len) and the rest, len = data[0] | data[1] << 8
// (clamped to what is there).
struct Parts {
  const uint8_t* a = nullptr;
  size_t a_size = 0;
  const uint8_t* b = nullptr;
  size_t b_size = 0;
};
inline Parts SplitInput(const uint8_t* data, size_t size) {
  Parts p;
  if (size < 2) {
    p.a = p.b = data;
    return p;
  }
  size_t len = data[0] | (size_t{data[1]} << 8);
  const size_t rest = size - 2;
  if (len > rest) len = rest;
  p.a = data + 2;
  p.a_size = len;
  p.b = data + 2 + len;
  p.b_size = rest - len;
  return p;
}

// What ReadDataset promises about a successful result for `opt`.
inline void CheckDataset(const logit::Dataset& d, const logit::ReadOptions& opt) {
  using logit::FeatureStorage;
  FUZZ_CHECK(d.num_rows >= 0 && d.total_rows >= d.num_rows, "rows %lld of total %lld",
             (long long)d.num_rows, (long long)d.total_rows);
  const int64_t begin = logit::ShardBegin(d.total_rows, opt.rank, opt.world);
  const int64_t end = logit::ShardBegin(d.total_rows, opt.rank + 1, opt.world);
  FUZZ_CHECK(d.first_row == begin && d.num_rows == end - begin,
             "shard [%lld, +%lld) of %lld rows, expected [%lld, %lld)", (long long)d.first_row,
             (long long)d.num_rows, (long long)d.total_rows, (long long)begin, (long long)end);
  FUZZ_CHECK(static_cast<int64_t>(d.labels.size()) == d.num_rows, "%zu labels for %lld rows",
             d.labels.size(), (long long)d.num_rows);
  for (int64_t y : d.labels) {
    FUZZ_CHECK(y >= 0 && (opt.classes <= 0 || y < opt.classes), "label %lld (classes=%lld)",
               (long long)y, (long long)opt.classes);
  }
  if (opt.num_features > 0) {
    FUZZ_CHECK(d.num_features == opt.num_features, "%lld features, asked for %lld",
               (long long)d.num_features, (long long)opt.num_features);
  }
  FUZZ_CHECK(d.num_features >= 0, "%lld features", (long long)d.num_features);
  switch (d.storage) {
    case FeatureStorage::kDenseFloat32:
      FUZZ_CHECK(d.num_features >= 1, "dense rows with %lld features", (long long)d.num_features);
      FUZZ_CHECK(d.mapped_f32 != nullptr ||
                     static_cast<int64_t>(d.dense_f32.size()) == d.num_rows * d.num_features,
                 "dense_f32 holds %zu values for %lld x %lld", d.dense_f32.size(),
                 (long long)d.num_rows, (long long)d.num_features);
      for (float v : d.dense_f32) FUZZ_CHECK(std::isfinite(v), "non-finite feature value");
      break;
    case FeatureStorage::kDenseUint8:
      FUZZ_CHECK(d.num_features >= 1, "dense rows with %lld features", (long long)d.num_features);
      FUZZ_CHECK(d.mapped_u8 != nullptr ||
                     static_cast<int64_t>(d.dense_u8.size()) == d.num_rows * d.num_features,
                 "dense_u8 holds %zu values for %lld x %lld", d.dense_u8.size(),
                 (long long)d.num_rows, (long long)d.num_features);
      break;
    case FeatureStorage::kSparseCsr: {
      FUZZ_CHECK(static_cast<int64_t>(d.csr_indptr.size()) == d.num_rows + 1,
                 "csr_indptr has %zu entries for %lld rows", d.csr_indptr.size(),
                 (long long)d.num_rows);
      FUZZ_CHECK(d.csr_indptr.front() == 0, "csr_indptr[0] != 0");
      FUZZ_CHECK((d.csr_values.empty() || d.csr_indices.size() == d.csr_values.size()) &&
                     d.csr_indptr.back() == static_cast<int64_t>(d.csr_indices.size()),
                 "csr sizes disagree");
      for (int64_t r = 0; r < d.num_rows; ++r) {
        FUZZ_CHECK(d.csr_indptr[r] <= d.csr_indptr[r + 1], "csr_indptr decreases at row %lld",
                   (long long)r);
        for (int64_t k = d.csr_indptr[r]; k < d.csr_indptr[r + 1]; ++k) {
          FUZZ_CHECK(d.csr_indices[k] >= 0 && d.csr_indices[k] < d.num_features,
                     "csr index %lld outside [0, %lld)", (long long)d.csr_indices[k],
                     (long long)d.num_features);
          FUZZ_CHECK(k == d.csr_indptr[r] || d.csr_indices[k - 1] < d.csr_indices[k],
                     "csr indices do not increase in row %lld", (long long)r);
          FUZZ_CHECK(std::isfinite(d.CsrValue(k)), "non-finite csr value");
        }
      }
      break;
    }
  }
}

// ReadDataset, and CheckDataset when it succeeds.
inline bool ReadAndCheck(const logit::ReadOptions& opt, logit::Dataset* out = nullptr) {
  auto r = logit::ReadDataset(opt);
  Report("ReadDataset", r.status());
  if (!r.ok()) return false;
  CheckDataset(*r, opt);
  if (out != nullptr) *out = std::move(*r);
  return true;
}

// The same reads as unlabeled prediction input (`num_features` > 0 fixes the width; no label
// file) and as the second of two shards.
inline void ReadVariants(const logit::ReadOptions& opt, int64_t num_features) {
  logit::ReadOptions u = opt;
  u.labels_path.clear();
  u.require_labels = false;
  u.num_features = num_features;
  ReadAndCheck(u);
  logit::ReadOptions s = opt;
  s.rank = 1;
  s.world = 2;
  ReadAndCheck(s);
}

}  // namespace logit_fuzz

#endif  // LOGIT_TESTS_FUZZ_FUZZ_UTIL_H_
