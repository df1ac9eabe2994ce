// Helpers shared by the tests: status matchers, temp files, shipped data paths.
#ifndef LOGIT_TESTS_UNIT_TEST_UTIL_H_
#define LOGIT_TESTS_UNIT_TEST_UTIL_H_

#include <ftw.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace logit::testing {

// Matches an absl::Status (or StatusOr) with the given code whose message contains `substr`.
MATCHER_P2(StatusIs, code, substr, "") {
  const absl::Status& st = [&]() -> absl::Status {
    if constexpr (std::is_same_v<std::decay_t<decltype(arg)>, absl::Status>) {
      return arg;
    } else {
      return arg.status();
    }
  }();
  if (st.code() != code) {
    *result_listener << "code is " << absl::StatusCodeToString(st.code()) << ": " << st.message();
    return false;
  }
  if (std::string(st.message()).find(substr) == std::string::npos) {
    *result_listener << "message is '" << st.message() << "'";
    return false;
  }
  return true;
}

inline std::string SourceDir() {
  const char* d = std::getenv("LOGIT_SOURCE_DIR");
  return d ? d : ".";
}

inline std::string TestData(const std::string& name) { return SourceDir() + "/tests/data/" + name; }

// The Fashion-MNIST files (Debian's dataset-fashion-mnist; LOGIT_FMNIST_DIR elsewhere).
inline std::string FashionDir() {
  const char* d = std::getenv("LOGIT_FMNIST_DIR");
  return d ? d : "/usr/share/datasets/fashion-mnist";
}

// A fresh directory removed at destruction. POSIX calls, not std::filesystem: a pip LibTorch
// exports its own std::filesystem symbols, and remove_all resolved to that copy crashed there.
class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(tmp != nullptr && *tmp != 0 ? tmp : "/tmp") + "/logit-test-XXXXXX";
    const char* made = mkdtemp(tmpl.data());
    if (made == nullptr) {
      ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
      path_ = "/nonexistent-logit-test-dir";
      return;
    }
    path_ = made;
  }
  ~TempDir() {
    nftw(
        path_.c_str(),
        [](const char* p, const struct stat*, int, struct FTW*) { return remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  std::string Write(const std::string& name, const std::string& content) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  std::string Path(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace logit::testing

#endif  // LOGIT_TESTS_UNIT_TEST_UTIL_H_
