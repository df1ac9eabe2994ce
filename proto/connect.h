// Dialing the logit API: one place that turns a server address, TLS files and a bearer token
// into a gRPC channel, for every client of the API (the CLI, workers, tests). The token rides
// on every call of the channel as `authorization: Bearer <token>`.
#ifndef LOGIT_PROTO_CONNECT_H_
#define LOGIT_PROTO_CONNECT_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace logit {

struct ConnectOptions {
  std::string server;         // HOST:PORT
  std::string token;          // bearer token; "" sends none
  std::string tls_ca_file;    // PEM roots to verify the server; TLS is on when this or
                              // tls_cert_file is set ("" roots: the system's)
  std::string tls_cert_file;  // PEM client certificate for mutual TLS (with tls_key_file)
  std::string tls_key_file;
  bool tls = false;  // TLS even without files (system roots)
};

// The token from `token_file` when given, else from the environment variable LOGIT_TOKEN,
// else "". InvalidArgument naming --token-file when the file cannot be read or is empty.
absl::StatusOr<std::string> LoadToken(const std::string& token_file);

// A channel to options.server; InvalidArgument naming the flag when a TLS file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(const ConnectOptions& options);

}  // namespace logit

#endif  // LOGIT_PROTO_CONNECT_H_
