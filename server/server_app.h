// `logit-server`: flags, the gRPC server (TrainingService, WorkerService, health, reflection),
// local worker processes (--local-workers) and graceful shutdown on SIGTERM / SIGINT.
#ifndef LOGIT_SERVER_SERVER_APP_H_
#define LOGIT_SERVER_SERVER_APP_H_

#include <iosfwd>

namespace logit {

// Runs the server until SIGTERM / SIGINT; returns the exit code (2: bad flags, 1: failed).
int RunServerCli(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace logit

#endif  // LOGIT_SERVER_SERVER_APP_H_
