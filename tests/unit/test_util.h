// Helpers shared by the tests: status matchers, temp files, shipped data paths.
#ifndef LOGIT_TESTS_UNIT_TEST_UTIL_H_
#define LOGIT_TESTS_UNIT_TEST_UTIL_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
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

inline std::string FashionDir() { return "/usr/share/datasets/fashion-mnist"; }

// A fresh directory removed at destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "logit-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
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
