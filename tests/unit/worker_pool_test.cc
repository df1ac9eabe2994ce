// StartTiedProcess (server/worker_pool.h), how logit-server starts its local workers: the child
// gets the arguments, environment and signal state it is given, a failed exec is an error here,
// and a child dies (SIGKILL) with the process that started it.
#include "server/worker_pool.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/unit/test_util.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using Clock = std::chrono::steady_clock;

// waitpid(pid) for up to `limit`; the pid it returned (0: still running) and the status.
std::pair<pid_t, int> WaitFor(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  int status = 0;
  pid_t got = 0;
  while ((got = waitpid(pid, &status, WNOHANG)) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return {got, status};
}

TEST(StartTiedProcess, ChildGetsItsArgumentsAndExactlyItsEnvironment) {
  auto pid = StartTiedProcess(
      {"sh", "-c", "test \"$FOO\" = bar && test -z \"$HOME\" && exit \"$0\"", "7"}, {"FOO=bar"});
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto [got, status] = WaitFor(*pid, std::chrono::seconds(5));
  ASSERT_EQ(got, *pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 7);
}

TEST(StartTiedProcess, MissingOrUnrunnableProgramIsAnError) {
  EXPECT_THAT(StartTiedProcess({"no-such-logit-program"}, {}),
              StatusIs(absl::StatusCode::kNotFound, "no-such-logit-program: not found in PATH"));
  EXPECT_THAT(
      StartTiedProcess({"/dev/null"}, {}),
      StatusIs(absl::StatusCode::kUnavailable, "cannot start /dev/null: Permission denied"));
  EXPECT_THAT(StartTiedProcess({}, {}), StatusIs(absl::StatusCode::kInvalidArgument, "no program"));
}

TEST(StartTiedProcess, ChildStartsWithSigtermUnblockedAndDefault) {
  // logit-server blocks SIGTERM in its threads (one sigwaits for it); its workers must not.
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &term, &old), 0);
  auto pid = StartTiedProcess({"sleep", "30"}, {});
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(pid.ok()) << pid.status();
  ASSERT_EQ(kill(*pid, SIGTERM), 0);
  auto [got, status] = WaitFor(*pid, std::chrono::seconds(5));
  ASSERT_EQ(got, *pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

TEST(StartTiedProcess, ChildIsKilledWithinASecondOfItsParentsDeath) {
  // Orphans are re-parented to this process, so that it can reap (and see) the tied child.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t parent = fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {  // a stand-in for logit-server: starts a worker, then waits to be killed
    close(fds[0]);
    auto child = StartTiedProcess({"sleep", "30"}, {});
    const pid_t pid = child.ok() ? *child : -1;
    if (write(fds[1], &pid, sizeof(pid)) != sizeof(pid)) _exit(1);
    while (true) pause();
  }
  close(fds[1]);
  pid_t child = -1;
  ASSERT_EQ(read(fds[0], &child, sizeof(child)), static_cast<ssize_t>(sizeof(child)));
  close(fds[0]);
  ASSERT_GT(child, 0);
  EXPECT_EQ(kill(child, 0), 0) << "the child is not running";

  ASSERT_EQ(kill(parent, SIGKILL), 0);
  ASSERT_EQ(waitpid(parent, nullptr, 0), parent);
  auto [got, status] = WaitFor(child, std::chrono::seconds(1));
  if (got == 0) kill(child, SIGKILL);  // do not leave it behind
  ASSERT_EQ(got, child) << "the child outlived its parent by a second";
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

}  // namespace
}  // namespace logit
