#include "worker/data/limits.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace logit {

std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t out;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

std::optional<int64_t> CheckedAdd(int64_t a, int64_t b) {
  int64_t out;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

absl::StatusOr<int64_t> CheckedProduct(absl::Span<const int64_t> dims, int64_t limit,
                                       const std::string& what) {
  int64_t n = 1;
  bool empty = false;  // a zero dimension makes any product of the others 0
  for (int64_t d : dims) empty |= d == 0;
  for (int64_t d : dims) {
    if (empty && d >= 0) continue;
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": dimension ", d, " is negative (shape [", absl::StrJoin(dims, ", "), "])"));
    }
    auto next = CheckedMul(n, d);
    if (!next || *next > limit) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": shape [", absl::StrJoin(dims, ", "),
                                                     "] has more than ", limit, " elements"));
    }
    n = *next;
  }
  return empty ? 0 : n;
}

}  // namespace logit
