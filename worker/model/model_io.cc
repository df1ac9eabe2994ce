#include "worker/model/model_io.h"

#include <zip.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <list>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "onnx/onnx_pb.h"
#include "worker/common/status.h"
#include "worker/common/utf8.h"
#include "worker/data/limits.h"
#include "worker/data/npy.h"

namespace logit {

namespace {

// Class names in the metadata of safetensors and ONNX files (string values): a JSON array.
std::string ClassNamesJson(const std::vector<std::string>& names) {
  return nlohmann::json(names).dump();
}

// The JSON array ClassNamesJson wrote, checked to hold strings.
absl::StatusOr<std::vector<std::string>> ParseClassNamesJson(const std::string& text,
                                                             const std::string& where) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> names;
  if (!j.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": class_names is not a JSON array"));
  }
  for (const auto& v : j) {
    if (!v.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": class_names holds a non-string"));
    }
    names.push_back(v.get<std::string>());
  }
  return names;
}

// Class names as NumPy's fixed-width unicode array ('<U' + the longest name in code points,
// UTF-32LE, zero-padded): np.load gives a str array, like scikit-learn's classes_.
std::string EncodeClassNamesNpy(const std::vector<std::string>& names) {
  std::vector<std::u32string> decoded(names.size());
  size_t width = 1;
  for (size_t i = 0; i < names.size(); ++i) {
    DecodeUtf8(names[i], &decoded[i]);  // valid: the readers refuse other labels
    width = std::max(width, decoded[i].size());
  }
  std::string data(names.size() * width * 4, '\0');
  for (size_t i = 0; i < names.size(); ++i) {
    for (size_t k = 0; k < decoded[i].size(); ++k) {
      const uint32_t c = decoded[i][k];
      for (int b = 0; b < 4; ++b) data[(i * width + k) * 4 + b] = static_cast<char>(c >> (8 * b));
    }
  }
  return EncodeNpy(absl::StrCat("<U", width), {static_cast<int64_t>(names.size())}, data.data(),
                   data.size());
}

// The names of a '<U' array EncodeClassNamesNpy wrote.
absl::StatusOr<std::vector<std::string>> DecodeClassNamesNpy(const std::string& bytes,
                                                             const std::string& where) {
  auto h = ParseNpyHeader(bytes, where);  // checks that the data fits in `bytes`
  if (!h.ok()) return h.status();
  int64_t width = 0;
  if (!absl::StartsWith(h->descr, "<U") || !absl::SimpleAtoi(h->descr.substr(2), &width) ||
      width < 1 || h->shape.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected a 1-d '<U' array, found '", h->descr, "'"));
  }
  const int64_t n = h->shape[0];
  std::vector<std::string> names(static_cast<size_t>(n));
  const char* p = bytes.data() + h->data_offset;
  for (int64_t i = 0; i < n; ++i) {
    std::u32string points;
    for (int64_t k = 0; k < width; ++k) {
      uint32_t c = 0;
      for (int b = 0; b < 4; ++b) {
        c |= static_cast<uint32_t>(static_cast<unsigned char>(p[(i * width + k) * 4 + b])) << (8 * b);
      }
      if (c == 0) break;  // NumPy pads with zeros
      points.push_back(c);
    }
    if (!EncodeUtf8(points, &names[static_cast<size_t>(i)])) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": name ", i, " is not unicode"));
    }
  }
  return names;
}

// safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range, then the raw little-endian data. Metadata values are strings.
absl::Status SaveSafetensors(const LinearModel& m, const std::string& path,
                             const std::string& summary) {
  const int64_t d = m.num_features, c = m.OutputColumns();
  const size_t wbytes = m.weights.size() * 4, bbytes = m.bias.size() * 4;
  nlohmann::json header;
  header["W"] = {{"dtype", "F32"},
                 {"shape", m.IsBinary() ? std::vector<int64_t>{d} : std::vector<int64_t>{d, c}},
                 {"data_offsets", {0, wbytes}}};
  header["b"] = {{"dtype", "F32"},
                 {"shape", std::vector<int64_t>{c}},
                 {"data_offsets", {wbytes, wbytes + bbytes}}};
  header["__metadata__"] = {{"classes", std::to_string(m.num_classes)},
                            {"n_features", std::to_string(d)},
                            {"format", "logit"}};
  if (!m.class_names.empty()) header["__metadata__"]["class_names"] = ClassNamesJson(m.class_names);
  if (!summary.empty()) header["__metadata__"]["summary_json"] = summary;
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // data starts 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("save_model: cannot write ", path));
  uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.write(reinterpret_cast<const char*>(m.weights.data()), static_cast<std::streamsize>(wbytes));
  out.write(reinterpret_cast<const char*>(m.bias.data()), static_cast<std::streamsize>(bbytes));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("save_model: writing ", path, " failed"));
  return absl::OkStatus();
}

absl::StatusOr<LinearModel> ParseSafetensors(const std::string& bytes, const std::string& path) {
  if (bytes.size() < 8) return absl::InvalidArgumentError(absl::StrCat(path, ": truncated"));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header length ", n, " exceeds the file"));
  }
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + n, nullptr,
                                            /*allow_exceptions=*/false);
  if (!header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the header is not a JSON object"));
  }
  const uint64_t data_bytes = bytes.size() - 8 - n;
  // Reads tensor `name` (F32, rank 1 or 2) without trusting any number in the header.
  auto tensor = [&](const char* name,
                    std::vector<int64_t>* shape) -> absl::StatusOr<std::vector<float>> {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", name, ": ", why));
    };
    const auto t = header.find(name);
    if (t == header.end() || !t->is_object()) return bad("missing");
    const auto dtype = t->find("dtype");
    if (dtype == t->end() || *dtype != "F32") return bad("dtype is not F32");
    const auto sh = t->find("shape");
    const auto off = t->find("data_offsets");
    if (sh == t->end() || !sh->is_array() || sh->empty() || sh->size() > 2) {
      return bad("shape must be [d] or [d, K]");
    }
    shape->clear();
    for (const auto& dim : *sh) {
      if (!dim.is_number_unsigned()) return bad("shape holds a non-integer or negative dimension");
      const uint64_t v = dim.get<uint64_t>();
      if (v > static_cast<uint64_t>(kMaxParameters)) return bad("shape is too large");
      shape->push_back(static_cast<int64_t>(v));
    }
    if (off == t->end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
      return bad("data_offsets must be [begin, end]");
    }
    const uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    auto count = CheckedProduct(*shape, kMaxParameters, absl::StrCat(path, ": ", name));
    if (!count.ok()) return count.status();
    if (end < begin || end > data_bytes || end - begin != static_cast<uint64_t>(*count) * 4) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] do not hold ", *count,
                              " float32 values within the ", data_bytes, " data bytes"));
    }
    std::vector<float> v(*count);
    if (*count > 0) std::memcpy(v.data(), bytes.data() + 8 + n + begin, *count * 4);
    return v;
  };
  std::vector<int64_t> ws, bs;
  auto w = tensor("W", &ws);
  if (!w.ok()) return w.status();
  auto b = tensor("b", &bs);
  if (!b.ok()) return b.status();
  LinearModel m;
  m.num_features = ws[0];
  m.num_classes = ws.size() == 2 && ws[1] > 1 ? ws[1] : 2;
  m.weights = std::move(*w);
  m.bias = std::move(*b);
  const auto meta = header.find("__metadata__");
  if (meta != header.end() && meta->is_object() && meta->contains("class_names")) {
    const auto& names = (*meta)["class_names"];
    if (!names.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": metadata class_names is not a string"));
    }
    ASSIGN_OR_RETURN(m.class_names, ParseClassNamesJson(names.get<std::string>(), path));
  }
  absl::Status st = ValidateModel(m, path);
  if (!st.ok()) return st;
  return m;
}

// ONNX: input "input" float [N, d]; Gemm with the W and b initializers; Softmax (K > 2) or
// Sigmoid with [1 - s, s] (binary) gives "probabilities" [N, K]; ArgMax gives "label" int64 [N].
// The classes come from libonnx_proto (the library LibTorch loads too), not a second copy.
absl::Status SaveOnnx(const LinearModel& m, const std::string& path, const std::string& summary) {
  const int64_t d = m.num_features, c = m.OutputColumns(), k = m.num_classes;
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("logit");
  model.set_producer_version("0.1.0");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  auto meta = [&](const std::string& key, const std::string& value) {
    auto* p = model.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
  };
  meta("classes", std::to_string(k));
  meta("n_features", std::to_string(d));
  if (!m.class_names.empty()) meta("class_names", ClassNamesJson(m.class_names));
  if (!summary.empty()) meta("summary_json", summary);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("logistic_regression");
  auto tensor = [&](const std::string& name, const std::vector<int64_t>& dims,
                    const std::vector<float>& values) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t dim : dims) t->add_dims(dim);
    t->set_raw_data(
        std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  };
  tensor("W", {d, c}, m.weights);
  tensor("b", {c}, m.bias);
  auto value_info = [](onnx::ValueInfoProto* v, const std::string& name, int elem,
                       const std::vector<std::string>& dims) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    for (const std::string& dim : dims) {
      auto* dd = tt->mutable_shape()->add_dim();
      if (!dim.empty() && std::isdigit(static_cast<unsigned char>(dim[0]))) {
        dd->set_dim_value(std::stoll(dim));
      } else {
        dd->set_dim_param(dim);
      }
    }
  };
  value_info(g->add_input(), "input", onnx::TensorProto::FLOAT, {"N", std::to_string(d)});
  value_info(g->add_output(), "probabilities", onnx::TensorProto::FLOAT, {"N", std::to_string(k)});
  value_info(g->add_output(), "label", onnx::TensorProto::INT64, {"N"});
  auto node = [&](const std::string& op, const std::vector<std::string>& in,
                  const std::vector<std::string>& out) {
    auto* n = g->add_node();
    n->set_op_type(op);
    n->set_name(op + "_" + out[0]);
    for (const auto& i : in) n->add_input(i);
    for (const auto& o : out) n->add_output(o);
    return n;
  };
  auto int_attr = [](onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  };
  node("Gemm", {"input", "W", "b"}, {"logits"});
  if (m.IsBinary()) {
    tensor("one", {1}, {1.0f});
    node("Sigmoid", {"logits"}, {"p1"});
    node("Sub", {"one", "p1"}, {"p0"});
    int_attr(node("Concat", {"p0", "p1"}, {"probabilities"}), "axis", 1);
  } else {
    int_attr(node("Softmax", {"logits"}, {"probabilities"}), "axis", 1);
  }
  auto* argmax = node("ArgMax", {"probabilities"}, {"label"});
  int_attr(argmax, "axis", 1);
  int_attr(argmax, "keepdims", 0);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out || !model.SerializeToOstream(&out)) {
    return absl::InternalError(absl::StrCat("save_model: cannot write ", path));
  }
  return absl::OkStatus();
}

// What ParseOnnx recovers from a file SaveOnnx wrote.
struct OnnxContents {
  LinearModel model;
  std::string summary;  // metadata_props "summary_json"; empty when absent
};

// Reads back exactly the graph SaveOnnx writes, whatever the tensors and the node names are
// called: Gemm(X, W, b) without transposes or scaling, then Softmax over the columns, or, for
// binary models, Concat(Sub(1, Sigmoid(z)), Sigmoid(z)); ArgMax of the probabilities. Any other
// graph is refused: its W and b would not mean what logit's do.
absl::StatusOr<OnnxContents> ParseOnnx(const std::string& bytes, const std::string& path) {
  auto not_logit = [&](absl::string_view expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a logit model: expected ", expected));
  };
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", bytes.size(), " bytes, more than an ONNX file can hold (2 GiB)"));
  }
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an ONNX model (no ModelProto)"));
  }
  if (!model.has_graph()) return not_logit("a graph");
  const onnx::GraphProto& g = model.graph();
  std::map<std::string, const onnx::TensorProto*> initializers;
  for (const onnx::TensorProto& t : g.initializer()) initializers[t.name()] = &t;
  // The node producing `name`, if exactly one node does.
  auto producer = [&](const std::string& name) -> const onnx::NodeProto* {
    const onnx::NodeProto* found = nullptr;
    for (const onnx::NodeProto& n : g.node()) {
      for (const std::string& out : n.output()) {
        if (out != name) continue;
        if (found != nullptr) return nullptr;
        found = &n;
      }
    }
    return found;
  };
  // The node of op `op` in the default domain, if it is the only one of that op.
  auto only = [&](const char* op) -> const onnx::NodeProto* {
    const onnx::NodeProto* found = nullptr;
    for (const onnx::NodeProto& n : g.node()) {
      if (n.op_type() != op) continue;
      if (found != nullptr || (!n.domain().empty() && n.domain() != "ai.onnx")) return nullptr;
      found = &n;
    }
    return found;
  };
  // Integer attribute `name` of `n`, `fallback` when absent; nullopt when of another type.
  auto int_attr = [](const onnx::NodeProto& n, const char* name,
                     int64_t fallback) -> std::optional<int64_t> {
    for (const onnx::AttributeProto& a : n.attribute()) {
      if (a.name() != name) continue;
      if (a.type() != onnx::AttributeProto::INT) return std::nullopt;
      return a.i();
    }
    return fallback;
  };
  auto attrs_within = [](const onnx::NodeProto& n, std::initializer_list<const char*> allowed) {
    for (const onnx::AttributeProto& a : n.attribute()) {
      if (std::none_of(allowed.begin(), allowed.end(),
                       [&](const char* name) { return a.name() == name; })) {
        return false;
      }
    }
    return true;
  };
  auto axis_is_columns = [&](const onnx::NodeProto& n, int64_t fallback) {
    const auto axis = int_attr(n, "axis", fallback);
    return axis && (*axis == 1 || *axis == -1);
  };
  // The float32 values of an initializer, its dimensions in *dims.
  auto floats = [&](const onnx::TensorProto& t,
                    std::vector<int64_t>* dims) -> absl::StatusOr<std::vector<float>> {
    const std::string what = absl::StrCat(path, ": initializer ", t.name());
    if (t.data_type() != onnx::TensorProto::FLOAT) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": not float32"));
    }
    if (t.data_location() == onnx::TensorProto::EXTERNAL) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": external data is not supported"));
    }
    dims->assign(t.dims().begin(), t.dims().end());
    auto count = CheckedProduct(*dims, kMaxParameters, what);
    if (!count.ok()) return count.status();
    std::vector<float> v;
    if (t.has_raw_data()) {
      if (t.raw_data().size() != static_cast<uint64_t>(*count) * 4) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": ", t.raw_data().size(), " bytes of data for ", *count, " float32 values"));
      }
      v.resize(*count);
      if (*count > 0) std::memcpy(v.data(), t.raw_data().data(), *count * 4);
    } else {
      if (t.float_data_size() != *count) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": ", t.float_data_size(), " values for ", *count));
      }
      v.assign(t.float_data().begin(), t.float_data().end());
    }
    return v;
  };

  const onnx::NodeProto* gemm = only("Gemm");
  if (gemm == nullptr || gemm->input_size() != 3 || gemm->output_size() != 1 ||
      initializers.count(gemm->input(1)) == 0 || initializers.count(gemm->input(2)) == 0) {
    return not_logit("a Gemm node with initializers W and b");
  }
  if (!attrs_within(*gemm, {"alpha", "beta", "transA", "transB"}) ||
      int_attr(*gemm, "transA", 0) != 0 || int_attr(*gemm, "transB", 0) != 0) {
    return not_logit("a Gemm node without transposes");
  }
  for (const onnx::AttributeProto& a : gemm->attribute()) {
    if ((a.name() == "alpha" || a.name() == "beta") &&
        (a.type() != onnx::AttributeProto::FLOAT || a.f() != 1.0f)) {
      return not_logit("a Gemm node with alpha and beta 1");
    }
  }
  // The rows come in through the one graph input that is not an initializer.
  const onnx::ValueInfoProto* input = nullptr;
  for (const onnx::ValueInfoProto& in : g.input()) {
    if (initializers.count(in.name()) != 0) continue;
    if (input != nullptr) return not_logit("one graph input, the rows");
    input = &in;
  }
  if (input == nullptr || input->name() != gemm->input(0)) {
    return not_logit("a graph input of rows feeding the Gemm node");
  }
  std::vector<int64_t> wdims, bdims;
  auto w = floats(*initializers[gemm->input(1)], &wdims);
  if (!w.ok()) return w.status();
  auto b = floats(*initializers[gemm->input(2)], &bdims);
  if (!b.ok()) return b.status();
  if (wdims.size() != 2 || bdims.size() != 1 || bdims[0] != wdims[1]) {
    return not_logit("W of shape [d, K] and b of shape [K]");
  }
  const auto& in_type = input->type().tensor_type();
  if (in_type.elem_type() != onnx::TensorProto::FLOAT ||
      (in_type.has_shape() &&
       (in_type.shape().dim_size() != 2 || (in_type.shape().dim(1).has_dim_value() &&
                                            in_type.shape().dim(1).dim_value() != wdims[0])))) {
    return not_logit(absl::StrCat("a float32 input of shape [N, ", wdims[0], "]"));
  }
  const std::string& logits = gemm->output(0);

  // The probabilities: Softmax(z), or Concat(1 - Sigmoid(z), Sigmoid(z)) for binary models.
  std::string probabilities;
  const bool binary = wdims[1] == 1;
  if (binary) {
    const onnx::NodeProto* sigmoid = only("Sigmoid");
    const onnx::NodeProto* sub = only("Sub");
    const onnx::NodeProto* concat = only("Concat");
    const bool wired = sigmoid != nullptr && sub != nullptr && concat != nullptr &&
                       sigmoid->input_size() == 1 && sigmoid->input(0) == logits &&
                       sigmoid->output_size() == 1 && sub->input_size() == 2 &&
                       sub->input(1) == sigmoid->output(0) && sub->output_size() == 1 &&
                       concat->input_size() == 2 && concat->input(0) == sub->output(0) &&
                       concat->input(1) == sigmoid->output(0) && concat->output_size() == 1 &&
                       attrs_within(*concat, {"axis"}) && axis_is_columns(*concat, 0) &&
                       initializers.count(sub->input(0)) != 0;
    if (!wired) {
      return not_logit("Sigmoid, Sub and Concat giving [1 - p, p] after the Gemm node");
    }
    std::vector<int64_t> one_dims;
    auto one = floats(*initializers[sub->input(0)], &one_dims);
    if (!one.ok() || one->size() != 1 || (*one)[0] != 1.0f) {
      return not_logit("the constant 1 in the Sub node");
    }
    probabilities = concat->output(0);
  } else {
    const onnx::NodeProto* softmax = only("Softmax");
    if (softmax == nullptr || softmax->input_size() != 1 || softmax->input(0) != logits ||
        softmax->output_size() != 1 || !attrs_within(*softmax, {"axis"}) ||
        !axis_is_columns(*softmax, -1)) {
      return not_logit(absl::StrCat("a Softmax node over the columns after the Gemm node (W has ",
                                    wdims[1], " columns)"));
    }
    if (wdims[1] == 2) {
      return not_logit("W of one column for two classes (logit writes binary models with Sigmoid)");
    }
    probabilities = softmax->output(0);
  }
  const onnx::NodeProto* argmax = only("ArgMax");
  if (argmax == nullptr || argmax->input_size() != 1 || argmax->input(0) != probabilities ||
      argmax->output_size() != 1 || !attrs_within(*argmax, {"axis", "keepdims"}) ||
      !axis_is_columns(*argmax, 0) || int_attr(*argmax, "keepdims", 1) != 0) {
    return not_logit("an ArgMax node over the probabilities");
  }
  const size_t nodes = binary ? 5 : 3;
  std::vector<std::string> outputs;
  for (const onnx::ValueInfoProto& out : g.output()) outputs.push_back(out.name());
  std::sort(outputs.begin(), outputs.end());
  std::vector<std::string> want = {probabilities, argmax->output(0)};
  std::sort(want.begin(), want.end());
  if (static_cast<size_t>(g.node_size()) != nodes || outputs != want ||
      producer(probabilities) == nullptr || producer(argmax->output(0)) != argmax) {
    return not_logit("the outputs probabilities and label and no other nodes");
  }

  OnnxContents c;
  c.model.num_features = wdims[0];
  c.model.num_classes = binary ? 2 : wdims[1];
  c.model.weights = std::move(*w);
  c.model.bias = std::move(*b);
  for (const onnx::StringStringEntryProto& p : model.metadata_props()) {
    if (p.key() == "class_names") {
      ASSIGN_OR_RETURN(c.model.class_names, ParseClassNamesJson(p.value(), path));
    }
  }
  absl::Status st = ValidateModel(c.model, path);
  if (!st.ok()) return st;
  // The metadata logit writes must agree with the graph.
  for (const onnx::StringStringEntryProto& p : model.metadata_props()) {
    const int64_t expected = p.key() == "classes"      ? c.model.num_classes
                             : p.key() == "n_features" ? c.model.num_features
                                                       : -1;
    if (expected >= 0 && p.value() != std::to_string(expected)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": metadata ", p.key(), " is '",
                                                     p.value(), "' but the graph has ", expected));
    }
    if (p.key() == "summary_json") c.summary = p.value();
  }
  return c;
}

absl::Status SaveNpz(const LinearModel& m, const std::string& path, const std::string& summary) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (z == nullptr) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    std::string msg = absl::StrCat(path, ": cannot create: ", zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return absl::InvalidArgumentError(msg);
  }
  // Buffers must stay alive until zip_close.
  std::list<std::string> blobs;
  const int64_t classes = m.num_classes, features = m.num_features;
  std::vector<int64_t> wshape = m.IsBinary() ? std::vector<int64_t>{features}
                                             : std::vector<int64_t>{features, m.OutputColumns()};
  blobs.push_back(EncodeNpy("<f4", wshape, m.weights.data(), m.weights.size() * 4));
  blobs.push_back(
      EncodeNpy("<f4", {static_cast<int64_t>(m.bias.size())}, m.bias.data(), m.bias.size() * 4));
  blobs.push_back(EncodeNpy("<i8", {}, &classes, 8));
  blobs.push_back(EncodeNpy("<i8", {}, &features, 8));
  std::vector<std::string> names = {"W.npy", "b.npy", "classes.npy", "n_features.npy"};
  if (!summary.empty()) {
    blobs.push_back(
        EncodeNpy("|u1", {static_cast<int64_t>(summary.size())}, summary.data(), summary.size()));
    names.push_back("summary_json.npy");
  }
  if (!m.class_names.empty()) {
    blobs.push_back(EncodeClassNamesNpy(m.class_names));
    names.push_back("class_names.npy");
  }
  size_t i = 0;
  for (const std::string& blob : blobs) {
    zip_source_t* src = zip_source_buffer(z, blob.data(), blob.size(), 0);
    if (src == nullptr || zip_file_add(z, names[i].c_str(), src, ZIP_FL_OVERWRITE) < 0) {
      if (src) zip_source_free(src);
      std::string msg = absl::StrCat(path, ": ", zip_strerror(z));
      zip_discard(z);
      return absl::InternalError(msg);
    }
    ++i;
  }
  if (zip_close(z) != 0) {
    std::string msg = absl::StrCat(path, ": cannot write: ", zip_strerror(z));
    zip_discard(z);
    return absl::InternalError(msg);
  }
  return absl::OkStatus();
}

// An .npz archive opened over bytes in memory; closes itself.
class NpzArchive {
 public:
  static absl::StatusOr<NpzArchive> Open(const std::string& bytes, const std::string& path) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
    zip_t* z = src == nullptr ? nullptr : zip_open_from_source(src, ZIP_RDONLY, &error);
    zip_error_fini(&error);
    if (z == nullptr) {
      if (src != nullptr) zip_source_free(src);
      return absl::InvalidArgumentError(absl::StrCat(path, ": not an .npz archive"));
    }
    return NpzArchive(z, path, static_cast<int64_t>(bytes.size()));
  }
  NpzArchive(NpzArchive&& o) noexcept : z_(o.z_), path_(o.path_), archive_bytes_(o.archive_bytes_) {
    o.z_ = nullptr;
  }
  NpzArchive& operator=(NpzArchive&&) = delete;
  ~NpzArchive() {
    if (z_ != nullptr) zip_discard(z_);
  }

  // Whether the archive holds member `name`.
  bool Has(const char* name) const { return zip_name_locate(z_, name, 0) >= 0; }

  // The bytes of member `name`. Its size comes from the archive, so it is checked against what
  // the archive can hold (deflate expands at most ~1032:1) and the largest model before reading.
  absl::StatusOr<std::string> Read(const char* name) const {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat(z_, name, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": no array '", name, "' in the archive"));
    }
    const int64_t limit = std::min<int64_t>(
        CheckedMul(archive_bytes_, kMaxGzipRatio).value_or(INT64_MAX), kMaxModelFileBytes);
    if (st.size > static_cast<uint64_t>(limit)) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": member ", name, " claims ", st.size,
                                                     " bytes, more than the limit ", limit));
    }
    zip_file_t* f = zip_fopen(z_, name, 0);
    if (f == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": cannot read ", name));
    }
    // Read in pieces: the size is the archive's claim, the bytes are what inflates.
    std::string data;
    constexpr uint64_t kPiece = 16 << 20;
    while (data.size() < st.size) {
      const size_t at = data.size();
      const uint64_t want = std::min<uint64_t>(kPiece, st.size - at);
      data.resize(at + want);
      const zip_int64_t got = zip_fread(f, data.data() + at, want);
      if (got != static_cast<zip_int64_t>(want)) {
        zip_fclose(f);
        return absl::InvalidArgumentError(absl::StrCat(path_, ": truncated member ", name));
      }
    }
    zip_fclose(f);
    return data;
  }

 private:
  NpzArchive(zip_t* z, std::string path, int64_t archive_bytes)
      : z_(z), path_(std::move(path)), archive_bytes_(archive_bytes) {}
  zip_t* z_;
  std::string path_;
  int64_t archive_bytes_;
};

absl::StatusOr<std::vector<float>> FloatArray(const std::string& bytes, const std::string& where,
                                              std::vector<int64_t>* shape) {
  auto h = ParseNpyHeader(bytes, where);  // checks that the data fits in `bytes`
  if (!h.ok()) return h.status();
  if (h->fortran_order && h->shape.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": Fortran-order arrays are not supported"));
  }
  const int64_t n = h->NumElements();
  if (n > kMaxParameters) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", n, " values, more than the limit ", kMaxParameters));
  }
  const char* p = bytes.data() + h->data_offset;
  std::vector<float> out;
  if (h->descr == "<f4") {
    out.resize(n);
    if (n > 0) std::memcpy(out.data(), p, n * 4);
  } else if (h->descr == "<f8") {
    out.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, p + 8 * i, 8);
      out[i] = static_cast<float>(v);
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": dtype '", h->descr, "' is not float32/float64"));
  }
  *shape = h->shape;
  return out;
}

absl::StatusOr<LinearModel> ParseNpz(const std::string& bytes, const std::string& path) {
  auto z = NpzArchive::Open(bytes, path);
  if (!z.ok()) return z.status();
  auto w_bytes = z->Read("W.npy");
  if (!w_bytes.ok()) return w_bytes.status();
  auto b_bytes = z->Read("b.npy");
  if (!b_bytes.ok()) return b_bytes.status();
  std::vector<int64_t> wshape, bshape;
  auto w = FloatArray(*w_bytes, path + ":W", &wshape);
  if (!w.ok()) return w.status();
  auto b = FloatArray(*b_bytes, path + ":b", &bshape);
  if (!b.ok()) return b.status();
  LinearModel m;
  if (wshape.size() == 1 || (wshape.size() == 2 && wshape[1] == 1)) {
    m.num_features = wshape[0];
    m.num_classes = 2;
  } else if (wshape.size() == 2 && wshape[1] >= 2) {
    m.num_features = wshape[0];
    m.num_classes = wshape[1];
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": W must be d or d x K"));
  }
  if (static_cast<int64_t>(b->size()) != m.OutputColumns()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": b has ", b->size(), " entries, expected ", m.OutputColumns()));
  }
  m.weights = std::move(*w);
  m.bias = std::move(*b);
  if (z->Has("class_names.npy")) {
    ASSIGN_OR_RETURN(const std::string names, z->Read("class_names.npy"));
    ASSIGN_OR_RETURN(m.class_names, DecodeClassNamesNpy(names, path + ":class_names"));
  }
  absl::Status st = ValidateModel(m, path);
  if (!st.ok()) return st;
  return m;
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read"));
  if (size > kMaxModelFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", size, " bytes, larger than any model logit accepts"));
  }
  in.seekg(0);
  std::string bytes(static_cast<size_t>(size), '\0');
  if (!in.read(bytes.data(), size)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read"));
  }
  return bytes;
}

}  // namespace

absl::Status SaveModel(const LinearModel& model, const std::string& path,
                       const std::string& summary_json) {
  if (absl::EndsWith(path, ".npz")) return SaveNpz(model, path, summary_json);
  if (absl::EndsWith(path, ".safetensors")) return SaveSafetensors(model, path, summary_json);
  if (absl::EndsWith(path, ".onnx")) return SaveOnnx(model, path, summary_json);
  return absl::InvalidArgumentError(
      absl::StrCat("save_model: unsupported model file extension in '", path,
                   "' (use .npz, .safetensors or .onnx)"));
}

absl::StatusOr<std::string> LoadModelSummary(const std::string& path) {
  auto bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  if (absl::EndsWith(path, ".onnx")) {
    auto onnx = ParseOnnx(*bytes, path);
    if (!onnx.ok()) return onnx.status();
    if (onnx->summary.empty()) return absl::NotFoundError(absl::StrCat(path, ": no summary_json"));
    return onnx->summary;
  }
  if (absl::EndsWith(path, ".safetensors")) {
    auto model = ParseSafetensors(*bytes, path);  // the header is known sound after this
    if (!model.ok()) return model.status();
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) {
      n |= static_cast<uint64_t>(static_cast<unsigned char>((*bytes)[i])) << (8 * i);
    }
    const auto header = nlohmann::json::parse(bytes->begin() + 8, bytes->begin() + 8 + n, nullptr,
                                              /*allow_exceptions=*/false);
    const auto meta = header.find("__metadata__");
    if (meta == header.end() || !meta->is_object() || !meta->contains("summary_json") ||
        !(*meta)["summary_json"].is_string()) {
      return absl::NotFoundError(absl::StrCat(path, ": no summary_json"));
    }
    return (*meta)["summary_json"].get<std::string>();
  }
  auto z = NpzArchive::Open(*bytes, path);
  if (!z.ok()) return z.status();
  auto member = z->Read("summary_json.npy");
  if (!member.ok()) return absl::NotFoundError(member.status().message());
  auto h = ParseNpyHeader(*member, path + ":summary_json");
  if (!h.ok()) return h.status();
  return member->substr(h->data_offset);
}

absl::Status ValidateModel(const LinearModel& m, const std::string& where) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a usable model: ", why));
  };
  if (m.num_features < 1 || m.num_features > kMaxFeatures) {
    return bad(absl::StrCat(m.num_features, " features (1 to ", kMaxFeatures, ")"));
  }
  if (m.num_classes < 2 || m.num_classes > kMaxClasses) {
    return bad(absl::StrCat(m.num_classes, " classes (2 to ", kMaxClasses, ")"));
  }
  const auto params = CheckedMul(m.num_features, m.OutputColumns());
  if (!params || *params > kMaxParameters) {
    return bad(absl::StrCat(m.num_features, " x ", m.OutputColumns(),
                            " parameters, more than the limit ", kMaxParameters));
  }
  if (static_cast<int64_t>(m.weights.size()) != *params) {
    return bad(absl::StrCat("W has ", m.weights.size(), " values, ", m.num_features, " x ",
                            m.OutputColumns(), " expected"));
  }
  if (static_cast<int64_t>(m.bias.size()) != m.OutputColumns()) {
    return bad(absl::StrCat("b has ", m.bias.size(), " values, ", m.OutputColumns(), " expected"));
  }
  if (!m.class_names.empty() && static_cast<int64_t>(m.class_names.size()) != m.num_classes) {
    return bad(absl::StrCat(m.class_names.size(), " class names for ", m.num_classes, " classes"));
  }
  for (const std::vector<float>* values : {&m.weights, &m.bias}) {
    for (float v : *values) {
      if (!std::isfinite(v)) return bad("W or b holds a non-finite value");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LinearModel> ParseModel(const std::string& bytes, const std::string& name) {
  if (absl::EndsWith(name, ".npz")) return ParseNpz(bytes, name);
  if (absl::EndsWith(name, ".safetensors")) return ParseSafetensors(bytes, name);
  if (absl::EndsWith(name, ".onnx")) {
    auto onnx = ParseOnnx(bytes, name);
    if (!onnx.ok()) return onnx.status();
    return std::move(onnx->model);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("model_file: unsupported model file extension in '", name,
                   "' (use .npz, .safetensors or .onnx)"));
}

absl::StatusOr<LinearModel> LoadModel(const std::string& path) {
  if (!absl::EndsWith(path, ".npz") && !absl::EndsWith(path, ".safetensors") &&
      !absl::EndsWith(path, ".onnx")) {
    return ParseModel("", path);  // the extension error
  }
  auto bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  return ParseModel(*bytes, path);
}

}  // namespace logit
