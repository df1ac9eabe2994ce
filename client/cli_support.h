// The parts of the `logit` command line around parsing: the config file, "did you mean"
// suggestions, and shell completion scripts generated from the parser's own tree.
#ifndef LOGIT_CLIENT_CLI_SUPPORT_H_
#define LOGIT_CLIENT_CLI_SUPPORT_H_

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"

namespace logit {

// The server address the CLI uses when neither --server, LOGIT_SERVER nor the config file
// names one: logit-server's default --listen.
inline constexpr char kDefaultServer[] = "127.0.0.1:50051";

// Settings from the config file; empty strings are unset.
struct CliConfig {
  std::string path;  // the file read (or that would have been)
  std::string server, token_file, tls_ca, tls_cert, tls_key, output;
};

// $LOGIT_CONFIG, else $XDG_CONFIG_HOME/logit/config.yaml, else ~/.config/logit/config.yaml.
std::string ConfigPath();

// Reads ConfigPath() (a missing file is no settings). InvalidArgument naming the file, and the
// line or key, when it is not a YAML mapping of the known keys to strings. Relative file paths
// in it are taken relative to the file's directory.
absl::StatusOr<CliConfig> LoadConfig();

// For a command line the parser refused: "unknown command 'trian'; did you mean 'train'?" or
// "unknown flag '--epoch' for 'logit train'; did you mean '--epochs'?"; empty when the refusal
// is not about an unknown name (the parser's own message says it then).
std::string Suggestion(const CLI::App& app, int argc, const char* const* argv);

// A completion script for `shell` ("bash" or "zsh") covering every subcommand and flag of `app`.
std::string CompletionScript(const CLI::App& app, const std::string& shell);

}  // namespace logit

#endif  // LOGIT_CLIENT_CLI_SUPPORT_H_
