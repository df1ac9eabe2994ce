#include "client/job_file.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace logit {

namespace {

// YAML scalars are untyped text: booleans and numbers become JSON booleans and numbers.
nlohmann::json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json obj = nlohmann::json::object();
      for (const auto& kv : node) obj[kv.first.as<std::string>()] = YamlToJson(kv.second);
      return obj;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& item : node) arr.push_back(YamlToJson(item));
      return arr;
    }
    case YAML::NodeType::Scalar: {
      const std::string s = node.Scalar();
      if (node.Tag() == "!") return s;  // quoted: a string
      if (s == "true" || s == "false") return s == "true";
      int64_t i;
      if (absl::SimpleAtoi(s, &i)) return i;
      double d;
      if (absl::SimpleAtod(s, &d)) return d;
      return s;
    }
    default:
      return nullptr;
  }
}

}  // namespace

absl::StatusOr<v1::JobSpec> LoadJobFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("file: cannot read ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  std::string json = buf.str();
  if (absl::EndsWith(path, ".yaml") || absl::EndsWith(path, ".yml")) {
    try {
      json = YamlToJson(YAML::Load(buf.str())).dump();
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("file: ", path, ":", e.mark.line + 1, ": ", e.msg));
    }
  } else if (!absl::EndsWith(path, ".json")) {
    return absl::InvalidArgumentError(
        absl::StrCat("file: '", path, "' must end in .yaml, .yml or .json"));
  }
  v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions opts;
  opts.case_insensitive_enum_parsing = true;  // optimizer: sgd, precision: float32
  const auto st = google::protobuf::util::JsonStringToMessage(json, &spec, opts);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("file: ", path, ": ", st.message().as_string()));
  }
  return spec;
}

}  // namespace logit
