// Status plumbing shared by every layer: RETURN_IF_ERROR / ASSIGN_OR_RETURN, and the offending
// field of an InvalidArgument carried as a status payload, so that callers (the CLI's flag
// names, the gRPC error details) never parse it back out of the message text.
#ifndef LOGIT_WORKER_COMMON_STATUS_H_
#define LOGIT_WORKER_COMMON_STATUS_H_

#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace logit {

// Payload type URL of the offending field's name (a JobSpec field, "data", "workers", ...).
inline constexpr absl::string_view kFieldPayload = "type.logit.dev/logit.Field";

// InvalidArgument "FIELD: message" with FIELD also attached as the field payload.
inline absl::Status FieldError(absl::string_view field, absl::string_view message) {
  absl::Status st = absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
  st.SetPayload(kFieldPayload, absl::Cord(field));
  return st;
}

// The field a status names (its payload), if any.
inline std::optional<std::string> ErrorField(const absl::Status& status) {
  const auto field = status.GetPayload(kFieldPayload);  // absl::optional on Debian's Abseil
  if (!field) return std::nullopt;
  return std::string(*field);
}

}  // namespace logit

#define LOGIT_STATUS_CONCAT_INNER_(a, b) a##b
#define LOGIT_STATUS_CONCAT_(a, b) LOGIT_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                                   \
  do {                                                          \
    const ::absl::Status logit_status_ = (expr);                \
    if (!logit_status_.ok()) return logit_status_;              \
  } while (false)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the StatusOr `expr`; returns its status when not OK,
// otherwise moves its value into `lhs` (a declaration such as `auto x` or an existing lvalue).
#define ASSIGN_OR_RETURN(lhs, expr) \
  LOGIT_ASSIGN_OR_RETURN_IMPL_(LOGIT_STATUS_CONCAT_(logit_statusor_, __LINE__), lhs, expr)
#define LOGIT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // LOGIT_WORKER_COMMON_STATUS_H_
