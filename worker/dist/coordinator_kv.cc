#include "worker/dist/coordinator_kv.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace logit {

namespace {

using Request = v1::RendezvousRequest;

}  // namespace

CoordinatorKv::CoordinatorKv(std::shared_ptr<v1::WorkerService::StubInterface> stub,
                             v1::RankIdentity from, std::chrono::milliseconds call_timeout)
    : CoordinatorKv(
          [stub = std::move(stub),
           call_timeout](const Request& request) -> absl::StatusOr<v1::RendezvousResponse> {
            grpc::ClientContext ctx;
            ctx.set_deadline(std::chrono::system_clock::now() + call_timeout);
            v1::RendezvousResponse response;
            const grpc::Status st = stub->Rendezvous(&ctx, request, &response);
            if (!st.ok()) {
              return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                                  st.error_message());
            }
            return response;
          },
          std::move(from)) {}

CoordinatorKv::CoordinatorKv(Transport transport, v1::RankIdentity from)
    : transport_(std::move(transport)), from_(std::move(from)) {}

absl::StatusOr<v1::RendezvousResponse> CoordinatorKv::Call(Request request,
                                                           const std::string& what) const {
  *request.mutable_from() = from_;
  absl::StatusOr<v1::RendezvousResponse> response = transport_(request);
  if (!response.ok()) {
    return absl::Status(response.status().code(),
                        absl::StrCat("rendezvous store: ", Request::Op_Name(request.op()), " ",
                                     what, ": ", response.status().message()));
  }
  return response;
}

absl::Status CoordinatorKv::Set(const std::string& key, const std::string& value) {
  Request r;
  r.set_op(Request::SET);
  r.set_key(key);
  r.set_value(value);
  return Call(std::move(r), absl::StrCat("'", key, "'")).status();
}

absl::StatusOr<std::optional<std::string>> CoordinatorKv::Get(const std::string& key) {
  Request r;
  r.set_op(Request::GET);
  r.set_key(key);
  absl::StatusOr<v1::RendezvousResponse> response = Call(std::move(r), absl::StrCat("'", key, "'"));
  if (!response.ok()) return response.status();
  if (!response->found()) return std::optional<std::string>();
  return std::optional<std::string>(std::move(*response->mutable_value()));
}

absl::StatusOr<int64_t> CoordinatorKv::Add(const std::string& key, int64_t delta) {
  Request r;
  r.set_op(Request::ADD);
  r.set_key(key);
  r.set_delta(delta);
  absl::StatusOr<v1::RendezvousResponse> response = Call(std::move(r), absl::StrCat("'", key, "'"));
  if (!response.ok()) return response.status();
  return response->number();
}

absl::StatusOr<bool> CoordinatorKv::Check(const std::vector<std::string>& keys) {
  Request r;
  r.set_op(Request::CHECK);
  for (const std::string& k : keys) r.add_keys(k);
  absl::StatusOr<v1::RendezvousResponse> response =
      Call(std::move(r),
           keys.size() == 1 ? absl::StrCat("'", keys[0], "'") : absl::StrCat(keys.size(), " keys"));
  if (!response.ok()) return response.status();
  return response->found();
}

absl::StatusOr<bool> CoordinatorKv::Delete(const std::string& key) {
  Request r;
  r.set_op(Request::DELETE);
  r.set_key(key);
  absl::StatusOr<v1::RendezvousResponse> response = Call(std::move(r), absl::StrCat("'", key, "'"));
  if (!response.ok()) return response.status();
  return response->found();
}

absl::StatusOr<int64_t> CoordinatorKv::NumKeys() {
  Request r;
  r.set_op(Request::NUM_KEYS);
  absl::StatusOr<v1::RendezvousResponse> response = Call(std::move(r), "of the attempt");
  if (!response.ok()) return response.status();
  return response->number();
}

absl::StatusOr<std::string> CoordinatorKv::CompareSet(const std::string& key,
                                                      const std::string& expected,
                                                      const std::string& desired) {
  Request r;
  r.set_op(Request::COMPARE_SET);
  r.set_key(key);
  r.set_expected(expected);
  r.set_value(desired);
  absl::StatusOr<v1::RendezvousResponse> response = Call(std::move(r), absl::StrCat("'", key, "'"));
  if (!response.ok()) return response.status();
  return std::move(*response->mutable_value());
}

}  // namespace logit
