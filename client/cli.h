// The `logit` command line: parsing (CLI11) and dispatch. main() only calls RunCli.
#ifndef LOGIT_CLIENT_CLI_H_
#define LOGIT_CLIENT_CLI_H_

#include <iosfwd>

namespace logit {

// Exit codes of the CLI.
enum ExitCode {
  kExitOk = 0,
  kExitJobFailed = 1,    // the job failed or was cancelled (bad data included)
  kExitUsage = 2,        // bad flags or option values, missing or refused credentials
  kExitUnreachable = 3,  // the server could not be reached (management commands, see
                         // client/manage.h: or it refused the credentials)
  kExitNotFound = 4,     // management commands: no such model / dataset
};

// Runs the CLI with `argv`; writes results to `out` and diagnostics to `err`.
int RunCli(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace logit

#endif  // LOGIT_CLIENT_CLI_H_
