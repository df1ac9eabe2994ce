#include "client/output.h"

#include <cmath>
#include <ostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "yaml-cpp/yaml.h"

namespace logit {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

bool Is64Bit(const FieldDescriptor* f) {
  switch (f->type()) {
    case FieldDescriptor::TYPE_INT64:
    case FieldDescriptor::TYPE_SINT64:
    case FieldDescriptor::TYPE_SFIXED64:
    case FieldDescriptor::TYPE_UINT64:
    case FieldDescriptor::TYPE_FIXED64:
      return true;
    default:
      return false;
  }
}

// protobuf's JSON mapping writes 64-bit integers as strings; this turns them back into numbers.
void NumbersFor(const FieldDescriptor* f, nlohmann::json* v);

void Fix(const Descriptor* d, nlohmann::json* j) {
  if (!j->is_object() || absl::StartsWith(d->full_name(), "google.protobuf.")) return;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    auto it = j->find(f->name());
    if (it == j->end()) {
      // An unset message field is null rather than missing, so that every object of a type
      // has the same keys (a oneof's other members stay absent).
      if (f->type() == FieldDescriptor::TYPE_MESSAGE && !f->is_repeated() &&
          f->containing_oneof() == nullptr) {
        (*j)[f->name()] = nullptr;
      }
      continue;
    }
    if (f->is_map()) {
      const FieldDescriptor* value = f->message_type()->map_value();
      for (auto& [key, v] : it->items()) NumbersFor(value, &v);
    } else if (f->is_repeated()) {
      for (auto& v : *it) NumbersFor(f, &v);
    } else {
      NumbersFor(f, &*it);
    }
  }
}

void NumbersFor(const FieldDescriptor* f, nlohmann::json* v) {
  if (f->type() == FieldDescriptor::TYPE_MESSAGE) {
    Fix(f->message_type(), v);
  } else if (Is64Bit(f) && v->is_string()) {
    const std::string s = v->get<std::string>();
    int64_t i;
    uint64_t u;
    if (absl::SimpleAtoi(s, &i)) {
      *v = i;
    } else if (absl::SimpleAtoi(s, &u)) {
      *v = u;
    }
  }
}

void Emit(const nlohmann::json& v, YAML::Emitter* y) {
  switch (v.type()) {
    case nlohmann::json::value_t::object:
      if (v.empty()) *y << YAML::Flow;
      *y << YAML::BeginMap;
      for (const auto& [key, value] : v.items()) {
        *y << YAML::Key << key << YAML::Value;
        Emit(value, y);
      }
      *y << YAML::EndMap;
      break;
    case nlohmann::json::value_t::array:
      if (v.empty()) *y << YAML::Flow;
      *y << YAML::BeginSeq;
      for (const auto& value : v) Emit(value, y);
      *y << YAML::EndSeq;
      break;
    case nlohmann::json::value_t::string:
      *y << YAML::DoubleQuoted << v.get<std::string>();
      break;
    case nlohmann::json::value_t::boolean:
      *y << v.get<bool>();
      break;
    case nlohmann::json::value_t::number_integer:
      *y << v.get<int64_t>();
      break;
    case nlohmann::json::value_t::number_unsigned:
      *y << v.get<uint64_t>();
      break;
    case nlohmann::json::value_t::number_float: {
      const double d = v.get<double>();
      if (std::isnan(d)) {
        *y << ".nan";
      } else if (std::isinf(d)) {
        *y << (d > 0 ? ".inf" : "-.inf");
      } else {
        // The shortest text that reads back as the same double, with a '.' before any
        // exponent: YAML 1.1 readers (PyYAML) take "1e-06" for a string, "1.0e-06" for a float.
        std::string text = v.dump();
        const size_t e = text.find_first_of("eE");
        if (e != std::string::npos && text.find('.') == std::string::npos) text.insert(e, ".0");
        *y << text;
      }
      break;
    }
    default:
      *y << YAML::Null;
  }
}

}  // namespace

absl::StatusOr<OutputFormat> ParseOutputFormat(const std::string& name) {
  if (name == "table") return OutputFormat::kTable;
  if (name == "json") return OutputFormat::kJson;
  if (name == "yaml") return OutputFormat::kYaml;
  return absl::InvalidArgumentError(
      absl::StrCat("-o: '", name, "' is not table, json or yaml"));
}

nlohmann::json MessageJson(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &text, opts);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return nlohmann::json::object();
  Fix(message.GetDescriptor(), &j);
  return j;
}

nlohmann::json JobJson(const v1::Job& job) {
  nlohmann::json j = MessageJson(job);
  const v1::JobResult& r = job.result();
  const bool has_result = job.has_result();
  auto or_null = [&](bool known, double v) { return known ? nlohmann::json(v) : nlohmann::json(); };
  j["job_id"] = job.id();
  j["epochs_run"] = r.epochs_run();
  j["stop_reason"] = r.stop_reason();
  j["train_loss"] = or_null(has_result, r.train_loss());
  j["objective"] = or_null(has_result, r.objective());
  j["val_accuracy"] = or_null(r.has_val_accuracy(), r.val_accuracy());
  j["test_accuracy"] = or_null(r.has_test_accuracy(), r.test_accuracy());
  j["wall_seconds"] = or_null(has_result, r.wall_seconds());
  return j;
}

void PrintStructured(const nlohmann::json& value, OutputFormat format, std::ostream& out) {
  if (format == OutputFormat::kYaml) {
    YAML::Emitter y;
    y << YAML::BeginDoc;
    Emit(value, &y);
    out << y.c_str() << "\n";
    return;
  }
  out << value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace logit
