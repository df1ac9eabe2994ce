// Who may call what. Bearer tokens (compared in constant time) give a caller a role: a client
// token opens TrainingService and the inference services, a worker token opens WorkerService.
// TLS (optionally mutual) protects the transport. The gRPC handlers call Authorizer::Check
// first; nothing runs for a caller without the role.
#ifndef LOGIT_SERVER_AUTH_H_
#define LOGIT_SERVER_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace logit {

enum class Role {
  kClient,  // TrainingService, GRPCInferenceService
  kWorker,  // WorkerService
};

struct SecurityOptions {
  std::string client_token;                 // "" = clients need no token
  std::string worker_token;                 // "" = workers need no token
  std::string tls_cert_file, tls_key_file;  // both or neither; PEM
  std::string tls_client_ca_file;           // PEM; given = clients must present a certificate

  bool tls() const { return !tls_cert_file.empty(); }
  bool tokens() const { return !client_token.empty() || !worker_token.empty(); }
};

// Checks the `authorization: Bearer <token>` metadata of a call against the role's token.
// Thread-safe (immutable).
class Authorizer {
 public:
  explicit Authorizer(SecurityOptions options) : options_(std::move(options)) {}
  // OK when the role needs no token or the call carries it; UNAUTHENTICATED when the call has
  // no bearer token; PERMISSION_DENIED when it has a token that is not the role's. Messages
  // never contain a token.
  absl::Status Check(const grpc::ServerContext& context, Role role) const;

 private:
  const SecurityOptions options_;
};

// Reads a token (or any secret) from `path`: the first line, surrounding whitespace removed.
// InvalidArgument naming `flag` when the file cannot be read or holds no token.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path, const std::string& flag);

// Reads a whole PEM file; InvalidArgument naming `flag` when it cannot be read or is empty.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag);

// TLS server credentials (mutual TLS when a client CA is given), or insecure ones without TLS.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityOptions& options);

// 32 random bytes as 64 hex digits (getrandom).
std::string RandomSecret();

// Constant-time comparison: the time taken does not depend on where `a` and `b` differ.
bool SecretsEqual(const std::string& a, const std::string& b);

}  // namespace logit

#endif  // LOGIT_SERVER_AUTH_H_
