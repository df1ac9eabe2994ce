#include "server/rendezvous_kv.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/common/status.h"

namespace logit {

namespace {

using Op = v1::RendezvousRequest;

bool NeedsKey(Op::Op op) {
  return op == Op::SET || op == Op::GET || op == Op::ADD || op == Op::DELETE ||
         op == Op::COMPARE_SET;
}

absl::Status Validate(const std::string& scope, const v1::RendezvousRequest& r) {
  if (scope.empty()) return FieldError("scope", "must not be empty");
  if (r.op() == Op::OP_UNSPECIFIED || !v1::RendezvousRequest::Op_IsValid(r.op())) {
    return FieldError("op", absl::StrCat("unknown operation ", static_cast<int>(r.op())));
  }
  if (NeedsKey(r.op()) && r.key().empty()) {
    return FieldError("key", absl::StrCat("must not be empty for ", Op::Op_Name(r.op())));
  }
  if (r.op() == Op::CHECK) {
    if (r.keys().empty()) return FieldError("keys", "CHECK needs at least one key");
    for (const std::string& k : r.keys()) {
      if (k.empty()) return FieldError("keys", "must not contain an empty key");
    }
  }
  return absl::OkStatus();
}

}  // namespace

RendezvousKv::RendezvousKv(RendezvousKvLimits limits) : limits_(limits) {}

absl::Status RendezvousKv::Put(const std::string& scope_name, const std::string& key,
                               std::string value) {
  const int64_t key_bytes = static_cast<int64_t>(key.size());
  const int64_t value_bytes = static_cast<int64_t>(value.size());
  if (key_bytes > limits_.max_key_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "key of ", key_bytes, " bytes exceeds max_key_bytes (", limits_.max_key_bytes, ")"));
  }
  if (value_bytes > limits_.max_value_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("value of ", value_bytes,
                                                     " bytes exceeds max_value_bytes (",
                                                     limits_.max_value_bytes, ")"));
  }
  auto scope_it = scopes_.find(scope_name);
  if (scope_it == scopes_.end() && static_cast<int64_t>(scopes_.size()) >= limits_.max_scopes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a new scope would exceed max_scopes (", limits_.max_scopes, ")"));
  }
  const Scope empty;
  const Scope& scope = scope_it == scopes_.end() ? empty : scope_it->second;
  const auto old = scope.values.find(key);
  const bool is_new = old == scope.values.end();
  if (is_new && static_cast<int64_t>(scope.values.size()) >= limits_.max_keys_per_scope) {
    return absl::ResourceExhaustedError(absl::StrCat("a new key would exceed max_keys_per_scope (",
                                                     limits_.max_keys_per_scope, ")"));
  }
  const int64_t delta =
      is_new ? key_bytes + value_bytes : value_bytes - static_cast<int64_t>(old->second.size());
  if (scope.bytes + delta > limits_.max_scope_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the scope's keys and values would exceed max_scope_bytes (",
                     limits_.max_scope_bytes, ")"));
  }
  if (total_bytes_ + delta > limits_.max_total_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all scopes' keys and values would exceed max_total_bytes (",
                     limits_.max_total_bytes, ")"));
  }
  Scope& target = scopes_[scope_name];
  target.values[key] = std::move(value);
  target.bytes += delta;
  total_bytes_ += delta;
  return absl::OkStatus();
}

void RendezvousKv::EraseIfEmpty(const std::string& scope_name) {
  auto it = scopes_.find(scope_name);
  if (it != scopes_.end() && it->second.values.empty()) scopes_.erase(it);
}

absl::StatusOr<v1::RendezvousResponse> RendezvousKv::Apply(const std::string& scope_name,
                                                           const v1::RendezvousRequest& r) {
  RETURN_IF_ERROR(Validate(scope_name, r));
  v1::RendezvousResponse out;
  MutexLock lock(&mu_);
  const auto scope_it = scopes_.find(scope_name);
  const std::map<std::string, std::string>* values =
      scope_it == scopes_.end() ? nullptr : &scope_it->second.values;
  // The value under `key`, or nullptr.
  auto lookup = [&](const std::string& key) -> const std::string* {
    if (values == nullptr) return nullptr;
    const auto it = values->find(key);
    return it == values->end() ? nullptr : &it->second;
  };
  switch (r.op()) {
    case Op::SET:
      RETURN_IF_ERROR(Put(scope_name, r.key(), r.value()));
      break;
    case Op::GET:
      if (const std::string* v = lookup(r.key())) {
        out.set_found(true);
        out.set_value(*v);
      }
      break;
    case Op::ADD: {
      int64_t sum = 0;
      if (const std::string* v = lookup(r.key())) {
        if (!absl::SimpleAtoi(*v, &sum)) {
          return FieldError("key",
                            absl::StrCat("ADD on '", r.key(), "', whose value is not an integer"));
        }
      }
      if (__builtin_add_overflow(sum, r.delta(), &sum)) {
        return absl::OutOfRangeError(
            absl::StrCat("ADD of ", r.delta(), " to '", r.key(), "' overflows int64"));
      }
      RETURN_IF_ERROR(Put(scope_name, r.key(), absl::StrCat(sum)));
      out.set_number(sum);
      break;
    }
    case Op::CHECK: {
      bool all = true;
      for (const std::string& k : r.keys()) all = all && lookup(k) != nullptr;
      out.set_found(all);
      break;
    }
    case Op::DELETE: {
      if (values == nullptr) break;
      Scope& scope = scope_it->second;
      const auto it = scope.values.find(r.key());
      if (it == scope.values.end()) break;
      const int64_t bytes = static_cast<int64_t>(it->first.size() + it->second.size());
      scope.bytes -= bytes;
      total_bytes_ -= bytes;
      scope.values.erase(it);
      EraseIfEmpty(scope_name);
      out.set_found(true);
      break;
    }
    case Op::NUM_KEYS:
      out.set_number(values == nullptr ? 0 : static_cast<int64_t>(values->size()));
      break;
    case Op::COMPARE_SET: {
      const std::string* v = lookup(r.key());
      // An absent key matches only an empty expected value, as in c10d's TCPStore.
      if (v == nullptr ? r.expected().empty() : *v == r.expected()) {
        RETURN_IF_ERROR(Put(scope_name, r.key(), r.value()));
        out.set_found(true);
        out.set_value(r.value());
      } else if (v != nullptr) {
        out.set_found(true);
        out.set_value(*v);
      }
      break;
    }
    default:  // Validate rejected every other op
      return FieldError("op", absl::StrCat("unknown operation ", static_cast<int>(r.op())));
  }
  return out;
}

void RendezvousKv::Drop(const std::string& scope) {
  MutexLock lock(&mu_);
  const auto it = scopes_.find(scope);
  if (it == scopes_.end()) return;
  total_bytes_ -= it->second.bytes;
  scopes_.erase(it);
}

int64_t RendezvousKv::scope_count() const {
  MutexLock lock(&mu_);
  return static_cast<int64_t>(scopes_.size());
}

}  // namespace logit
