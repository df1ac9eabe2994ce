#include "server/auth.h"

#include <sys/random.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace logit {

absl::Status Authorizer::Check(const grpc::ServerContext& context, Role role) const {
  const std::string& expected =
      role == Role::kClient ? options_.client_token : options_.worker_token;
  if (expected.empty()) return absl::OkStatus();
  const auto& md = context.client_metadata();
  const auto it = md.find("authorization");
  constexpr absl::string_view kBearer = "Bearer ";
  if (it == md.end() ||
      !absl::StartsWith(absl::string_view(it->second.data(), it->second.size()), kBearer)) {
    return absl::UnauthenticatedError(
        absl::StrCat("authorization: this server requires 'authorization: Bearer <token>' (",
                     role == Role::kClient ? "a client token: logit --token-file or LOGIT_TOKEN"
                                           : "the worker token: logit-worker --token-file",
                     ")"));
  }
  const std::string token(it->second.data() + kBearer.size(), it->second.size() - kBearer.size());
  if (SecretsEqual(token, expected)) return absl::OkStatus();
  // The other role's token is a known caller in the wrong place; anything else is unknown.
  const std::string& other = role == Role::kClient ? options_.worker_token : options_.client_token;
  if (!other.empty() && SecretsEqual(token, other)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "authorization: a ", role == Role::kClient ? "worker" : "client",
        " token may not call the ", role == Role::kClient ? "client" : "worker", " API"));
  }
  return absl::UnauthenticatedError("authorization: the bearer token is not valid here");
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path, const std::string& flag) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::string line;
  std::getline(in, line);
  const std::string token(absl::StripAsciiWhitespace(line));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " holds no token"));
  }
  return token;
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  if (s.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is not a PEM file"));
  }
  return s.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityOptions& o) {
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key: give both or neither");
  }
  if (!o.tls()) {
    if (!o.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls-client-ca: needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  auto cert = ReadPemFile(o.tls_cert_file, "--tls-cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadPemFile(o.tls_key_file, "--tls-key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!o.tls_client_ca_file.empty()) {
    auto ca = ReadPemFile(o.tls_client_ca_file, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

std::string RandomSecret() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

bool SecretsEqual(const std::string& a, const std::string& b) {
  // Every byte of the longer string is looked at whatever the contents.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0 && n > 0;
}

}  // namespace logit
