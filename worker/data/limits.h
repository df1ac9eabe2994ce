// Checked size arithmetic and the bounds that keep hostile files and requests from exhausting
// memory. Every size computed from input (shape products, header dimensions, rows x columns,
// sparse indices, archive entry sizes, parameter counts) goes through these before anything
// is allocated. LibTorch-free.
#ifndef LOGIT_WORKER_DATA_LIMITS_H_
#define LOGIT_WORKER_DATA_LIMITS_H_

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace logit {

// The largest feature count any reader accepts (a LibSVM index, a header dimension): 2^31.
// Hashed sparse data sets stay well below it; an index past it is a broken or hostile file.
inline constexpr int64_t kMaxFeatures = int64_t{1} << 31;

// The most classes a label may name: 2^20 (ImageNet-21k has 21,841).
inline constexpr int64_t kMaxClasses = int64_t{1} << 20;

// The largest model, in parameters (features x output columns): 2^30 (4 GiB of float32, 7x
// ImageNet's 150,528 x 1,000). The server can lower it for Predict and uploads.
inline constexpr int64_t kMaxParameters = int64_t{1} << 30;

// The largest model file: kMaxParameters float64 values plus room for headers and the summary.
inline constexpr int64_t kMaxModelFileBytes = kMaxParameters * 8 + (int64_t{64} << 20);

// gzip cannot expand data by more than about 1032:1 (deflate's limit), so a compressed file of
// n bytes holds at most n * kMaxGzipRatio bytes: a bound on what a .gz header may promise.
inline constexpr int64_t kMaxGzipRatio = 1032;

// a * b for non-negative operands; nullopt when either is negative or the product overflows.
std::optional<int64_t> CheckedMul(int64_t a, int64_t b);
// a + b for non-negative operands; nullopt when either is negative or the sum overflows.
std::optional<int64_t> CheckedAdd(int64_t a, int64_t b);

// The product of `dims` (1 for none). InvalidArgument "<what>: ..." when a dimension is
// negative or the product exceeds `limit` (overflow included).
absl::StatusOr<int64_t> CheckedProduct(absl::Span<const int64_t> dims, int64_t limit,
                                       const std::string& what);

}  // namespace logit

#endif  // LOGIT_WORKER_DATA_LIMITS_H_
