#include <signal.h>
#include <unistd.h>

#include <iostream>
#include <thread>

#include "client/cli.h"
#include "client/remote.h"

// SIGINT is blocked before any thread starts (gRPC's threads inherit the mask) and taken by one
// waiting thread: while a job is followed, Ctrl-C detaches from it; otherwise it ends the
// program as usual (exit 130).
int main(int argc, char** argv) {
  sigset_t sigint;
  sigemptyset(&sigint);
  sigaddset(&sigint, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigint, nullptr);
  std::thread([sigint] {
    while (true) {
      int sig = 0;
      if (sigwait(&sigint, &sig) != 0) continue;
      if (!logit::DetachFollow()) _exit(130);
    }
  }).detach();
  return logit::RunCli(argc, argv, std::cout, std::cerr);
}
