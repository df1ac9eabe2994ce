// Child processes for integration tests: spawn a binary with arguments, capture its output in
// files, wait with a deadline, kill. Every process a test starts is waited for.
#ifndef LOGIT_TESTS_INTEGRATION_SUBPROCESS_H_
#define LOGIT_TESTS_INTEGRATION_SUBPROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace logit::testing {

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

class Subprocess {
 public:
  // Starts `argv` with stdout and stderr written to `out_path` and `err_path`.
  Subprocess(const std::vector<std::string>& argv, std::string out_path, std::string err_path)
      : out_path_(std::move(out_path)), err_path_(std::move(err_path)) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  // A process still running at destruction is killed and reaped: tests never leak processes.
  ~Subprocess() {
    if (running()) {
      Kill(SIGKILL);
      Wait(std::chrono::seconds(10));
    }
  }

  bool started() const { return pid_ > 0; }
  bool running() const { return pid_ > 0 && !exited_; }
  pid_t pid() const { return pid_; }
  void Kill(int sig) {
    if (running()) kill(pid_, sig);
  }

  // Waits up to `timeout`; true when the process has exited (exit_code() then holds its code,
  // or 128 + signal).
  bool Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (running()) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }
  int exit_code() const { return code_; }
  std::string out() const { return ReadWholeFile(out_path_); }
  std::string err() const { return ReadWholeFile(err_path_); }

 private:
  std::string out_path_, err_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = -1;
};

}  // namespace logit::testing

#endif  // LOGIT_TESTS_INTEGRATION_SUBPROCESS_H_
