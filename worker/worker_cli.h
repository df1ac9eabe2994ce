// The `logit-worker` command line. main() only calls RunWorkerCli.
#ifndef LOGIT_WORKER_WORKER_CLI_H_
#define LOGIT_WORKER_WORKER_CLI_H_

#include <iosfwd>

namespace logit {

// Runs `logit-worker` with `argv`; exit codes as the CLI's: 0 ok, 1 the job failed, 2 usage.
int RunWorkerCli(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace logit

#endif  // LOGIT_WORKER_WORKER_CLI_H_
