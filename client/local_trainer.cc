#include "client/local_trainer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace logit {

namespace {

std::string ExecutableDir() {
  std::string buf(4096, '\0');
  const ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return ".";
  buf.resize(static_cast<size_t>(n));
  const size_t slash = buf.rfind('/');
  return slash == std::string::npos ? "." : buf.substr(0, slash);
}

std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("LOGIT_LOCAL_TRAINER"); env != nullptr && *env != 0) {
    paths.push_back(env);
  }
  const std::string dir = ExecutableDir();
  paths.push_back(dir + "/liblogit_local.so");
  paths.push_back(dir + "/../lib/logit/liblogit_local.so");
#ifdef LOGIT_LOCAL_TRAINER_BUILD_PATH
  paths.push_back(LOGIT_LOCAL_TRAINER_BUILD_PATH);
#endif
  return paths;
}

absl::StatusOr<const LocalTrainer*> Open() {
  std::vector<std::string> tried;
  for (const std::string& path : Candidates()) {
    if (access(path.c_str(), R_OK) != 0) {
      tried.push_back(absl::StrCat(path, " (absent)"));
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      tried.push_back(absl::StrCat(path, " (", dlerror(), ")"));
      continue;
    }
    using Entry = const LocalTrainer* (*)();
    auto entry = reinterpret_cast<Entry>(dlsym(handle, "logit_local_trainer"));
    if (entry == nullptr) {
      tried.push_back(absl::StrCat(path, " (no logit_local_trainer)"));
      continue;
    }
    return entry();  // the handle stays open for the life of the process
  }
  return absl::FailedPreconditionError(
      absl::StrCat("--local: cannot load the training kernel (liblogit_local.so); tried ",
                   absl::StrJoin(tried, ", "), ". Set LOGIT_LOCAL_TRAINER to its path."));
}

}  // namespace

absl::StatusOr<const LocalTrainer*> LoadLocalTrainer() {
  static const absl::StatusOr<const LocalTrainer*>* const loaded =
      new absl::StatusOr<const LocalTrainer*>(Open());
  return *loaded;
}

}  // namespace logit
