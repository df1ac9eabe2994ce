#include "worker/model/model_io.h"

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>

#include "nlohmann/json.hpp"
#include "onnx/onnx_pb.h"
#include "tests/unit/test_util.h"
#include "worker/data/npy.h"
#include "worker/kernel/trainer.h"
#include "worker/model/predict.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using ::logit::testing::TempDir;

LinearModel Multinomial() {
  LinearModel m;
  m.num_features = 2;
  m.num_classes = 3;
  m.weights = {1, 2, 3, 4, 5, 6};
  m.bias = {0.5f, -0.5f, 0.25f};
  return m;
}

TEST(ModelIo, NpzRoundTripKeepsShapesAndValues) {
  TempDir dir;
  const std::string p = dir.Path("m.npz");
  ASSERT_TRUE(SaveModel(Multinomial(), p, "{\"a\":1}").ok());
  auto m = LoadModel(p);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->num_features, 2);
  EXPECT_EQ(m->num_classes, 3);
  EXPECT_EQ(m->weights, Multinomial().weights);
  EXPECT_EQ(m->bias, Multinomial().bias);
}

TEST(ModelIo, BinaryModelHasVectorW) {
  TempDir dir;
  LinearModel b;
  b.num_features = 3;
  b.num_classes = 2;
  b.weights = {1, 2, 3};
  b.bias = {0.1f};
  ASSERT_TRUE(SaveModel(b, dir.Path("b.npz")).ok());
  auto m = LoadModel(dir.Path("b.npz"));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->num_classes, 2);
  EXPECT_EQ(m->weights, b.weights);
}

TEST(ModelIo, NumpyLoadsTheArchive) {
  if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
    GTEST_SKIP() << "python3-numpy is not installed";
  }
  TempDir dir;
  const std::string p = dir.Path("m.npz");
  ASSERT_TRUE(SaveModel(Multinomial(), p, "{\"a\":1}").ok());
  const std::string cmd =
      "/usr/bin/python3 -c \"import numpy as np, json; z = np.load('" + p +
      "'); assert z['W'].shape == (2, 3) and z['W'].dtype == np.float32; "
      "assert z['b'].tolist() == [0.5, -0.5, 0.25]; assert int(z['classes']) == 3; "
      "assert json.loads(bytes(z['summary_json']))['a'] == 1\"";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

TEST(ModelIo, ClassNamesRoundTripInEveryFormatAndNumpyReadsThemAsStrings) {
  TempDir dir;
  LinearModel named = Multinomial();
  named.class_names = {"Iris-setosa", "versicolor, \"v\"", "\xce\xbb-virginica"};  // λ: 2 bytes
  for (const char* name : {"m.npz", "m.safetensors", "m.onnx"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(SaveModel(named, dir.Path(name), "{}").ok());
    auto m = LoadModel(dir.Path(name));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->class_names, named.class_names);
    EXPECT_EQ(m->weights, named.weights);
  }
  LinearModel wrong = named;
  wrong.class_names.pop_back();
  EXPECT_THAT(ValidateModel(wrong, "w"),
              StatusIs(absl::StatusCode::kInvalidArgument, "2 class names for 3 classes"));
  if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
    GTEST_SKIP() << "python3-numpy is not installed";
  }
  const std::string cmd =
      "/usr/bin/python3 -c \"import numpy as np; z = np.load('" + dir.Path("m.npz") +
      "'); assert z['class_names'].tolist() == ['Iris-setosa', 'versicolor, \\\"v\\\"', "
      "'\\u03bb-virginica'], z['class_names']\"";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

TEST(ModelIo, ErrorsNameTheFile) {
  TempDir dir;
  EXPECT_THAT(LoadModel(dir.Path("missing.npz")),
              StatusIs(absl::StatusCode::kNotFound, "missing.npz"));
  EXPECT_THAT(LoadModel(dir.Write("junk.npz", "not a zip")),
              StatusIs(absl::StatusCode::kInvalidArgument, "junk.npz"));
  EXPECT_THAT(SaveModel(Multinomial(), dir.Path("m.pkl")),
              StatusIs(absl::StatusCode::kInvalidArgument, "save_model"));
}

TEST(ModelIo, SafetensorsRoundTripsWithThePublicLayout) {
  TempDir dir;
  for (int64_t classes : {2, 3}) {
    LinearModel m;
    m.num_features = 4;
    m.num_classes = classes;
    const int64_t c = m.OutputColumns();
    for (int64_t i = 0; i < 4 * c; ++i) m.weights.push_back(0.5f * static_cast<float>(i) - 1);
    for (int64_t i = 0; i < c; ++i) m.bias.push_back(0.25f * static_cast<float>(i));
    const std::string path = dir.Path("m" + std::to_string(classes) + ".safetensors");
    ASSERT_TRUE(SaveModel(m, path, "{\"epochs_run\":3}").ok());
    auto back = LoadModel(path);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->num_features, 4);
    EXPECT_EQ(back->num_classes, classes);
    EXPECT_EQ(back->weights, m.weights);
    EXPECT_EQ(back->bias, m.bias);
    // 8-byte little-endian header length, JSON header, 8-aligned data with W then b.
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<unsigned char>(bytes[i])) << (8 * i);
    EXPECT_EQ((8 + n) % 8, 0u);
    const auto header = nlohmann::json::parse(bytes.substr(8, n));
    EXPECT_EQ(header["W"]["dtype"], "F32");
    EXPECT_EQ(header["W"]["shape"].size(), classes == 2 ? 1u : 2u);
    EXPECT_EQ(header["b"]["data_offsets"][1].get<uint64_t>(), 4 * (4 * c + c));
    EXPECT_EQ(header["__metadata__"]["summary_json"], "{\"epochs_run\":3}");
    EXPECT_EQ(bytes.size(), 8 + n + 4 * (4 * c + c));
  }
  const std::string bad =
      dir.Write("bad.safetensors", std::string("\xff\xff\xff\xff\0\0\0\0{}", 10));
  EXPECT_FALSE(LoadModel(bad).ok());
}

TEST(ModelIo, OnnxPassesTheCheckerAndReproducesTheProbabilities) {
  TempDir dir;
  for (int64_t classes : {2, 4}) {
    SCOPED_TRACE(classes);
    LinearModel m;
    m.num_features = 5;
    m.num_classes = classes;
    const int64_t c = m.OutputColumns();
    for (int64_t i = 0; i < 5 * c; ++i)
      m.weights.push_back(0.3f * static_cast<float>(i % 7) - 0.9f);
    for (int64_t i = 0; i < c; ++i) m.bias.push_back(0.1f * static_cast<float>(i) - 0.2f);
    const std::string path = dir.Path("m" + std::to_string(classes) + ".onnx");
    ASSERT_TRUE(SaveModel(m, path, "{}").ok());
    Dataset x;
    x.source = "rows";
    x.storage = FeatureStorage::kDenseFloat32;
    x.num_rows = 6;
    x.total_rows = 6;
    x.num_features = 5;
    for (int i = 0; i < 30; ++i) x.dense_f32.push_back(static_cast<float>((i * 7) % 11) / 5 - 1);
    auto proba = PredictProba(m, x);
    ASSERT_TRUE(proba.ok());
    const std::string in = dir.Write("x.npy", EncodeNpy("<f4", {6, 5}, x.dense_f32.data(), 120));
    const std::string expected =
        dir.Write("p.npy", EncodeNpy("<f4", {6, classes}, proba->data(), proba->size() * 4));
    const std::string cmd = "/usr/bin/python3 " + ::logit::testing::TestData("check_onnx.py") +
                            " " + path + " " + in + " " + expected + " > " + dir.Path("onnx.out") +
                            " 2>&1";
    const int st = std::system(cmd.c_str());
    const int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (code == 77) GTEST_SKIP() << "python3-onnx is not installed";
    std::ifstream log(dir.Path("onnx.out"));
    std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    EXPECT_EQ(code, 0) << text;
  }
}

// What `logit predict --model-file` reads: every format `logit train --save-model` and `logit
// model get` write. The server streams .npz, the CLI converts it, so npz -> onnx is the path.
TEST(ModelIo, OnnxRoundTripFromNpzEqualsTheOriginal) {
  TempDir dir;
  const std::string summary = "{\"epochs_run\":7,\"classes\":3}";
  for (int64_t classes : {2, 3, 5}) {
    SCOPED_TRACE(classes);
    LinearModel m;
    m.num_features = 4;
    m.num_classes = classes;
    const int64_t c = m.OutputColumns();
    for (int64_t i = 0; i < 4 * c; ++i) m.weights.push_back(0.37f * static_cast<float>(i) - 1.1f);
    for (int64_t i = 0; i < c; ++i) m.bias.push_back(-0.25f * static_cast<float>(i) + 0.125f);
    const std::string npz = dir.Path("m" + std::to_string(classes) + ".npz");
    const std::string onnx = dir.Path("m" + std::to_string(classes) + ".onnx");
    ASSERT_TRUE(SaveModel(m, npz, summary).ok());
    auto from_npz = LoadModel(npz);
    ASSERT_TRUE(from_npz.ok()) << from_npz.status();
    auto npz_summary = LoadModelSummary(npz);
    ASSERT_TRUE(npz_summary.ok()) << npz_summary.status();
    ASSERT_TRUE(SaveModel(*from_npz, onnx, *npz_summary).ok());
    auto back = LoadModel(onnx);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->num_features, 4);
    EXPECT_EQ(back->num_classes, classes);
    EXPECT_EQ(back->weights, m.weights);
    EXPECT_EQ(back->bias, m.bias);
    auto onnx_summary = LoadModelSummary(onnx);
    ASSERT_TRUE(onnx_summary.ok()) << onnx_summary.status();
    EXPECT_EQ(*onnx_summary, summary);
  }
  // The summary of every format; a model saved without one has none.
  LinearModel m = Multinomial();
  for (const char* name : {"s.npz", "s.safetensors", "s.onnx"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(SaveModel(m, dir.Path(name), summary).ok());
    auto got = LoadModelSummary(dir.Path(name));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, summary);
    ASSERT_TRUE(SaveModel(m, dir.Path(std::string("bare-") + name)).ok());
    EXPECT_THAT(LoadModelSummary(dir.Path(std::string("bare-") + name)),
                StatusIs(absl::StatusCode::kNotFound, "bare-"));
  }
}

}  // namespace
}  // namespace logit

namespace logit {
namespace {

using ::logit::testing::StatusIs;

// The graph logit writes for `m`, as a message to edit.
onnx::ModelProto LogitGraph(const LinearModel& m, const ::logit::testing::TempDir& dir) {
  const std::string path = dir.Path("base.onnx");
  EXPECT_TRUE(SaveModel(m, path, "{}").ok());
  std::ifstream in(path, std::ios::binary);
  onnx::ModelProto proto;
  EXPECT_TRUE(proto.ParseFromIstream(&in));
  return proto;
}

std::string Write(const ::logit::testing::TempDir& dir, const std::string& name,
                  const onnx::ModelProto& proto) {
  const std::string path = dir.Path(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  EXPECT_TRUE(proto.SerializeToOstream(&out));
  return path;
}

onnx::NodeProto* NodeOf(onnx::ModelProto* proto, const std::string& op) {
  for (onnx::NodeProto& n : *proto->mutable_graph()->mutable_node()) {
    if (n.op_type() == op) return &n;
  }
  ADD_FAILURE() << "no " << op << " node";
  return nullptr;
}

TEST(HostileModels, OnnxGarbageAndForeignGraphsAreRefusedNamingTheFile) {
  ::logit::testing::TempDir dir;
  // Bytes that are no protobuf message at all.
  EXPECT_THAT(LoadModel(dir.Write("junk.onnx", "this is not onnx")),
              StatusIs(absl::StatusCode::kInvalidArgument, "junk.onnx: not an ONNX model"));
  EXPECT_THAT(ParseModel(std::string("\x0a\xff\xff\xff\xff\x0f", 6), "len.onnx"),
              StatusIs(absl::StatusCode::kInvalidArgument, "len.onnx: not an ONNX model"));
  // An empty file is a valid, empty ModelProto.
  EXPECT_THAT(LoadModel(dir.Write("empty.onnx", "")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "empty.onnx: not a logit model: expected a graph"));
  EXPECT_THAT(LoadModelSummary(dir.Write("junk2.onnx", "this is not onnx")),
              StatusIs(absl::StatusCode::kInvalidArgument, "junk2.onnx"));

  // Valid ONNX that is not logistic regression: y = Relu(x).
  onnx::ModelProto relu;
  relu.set_ir_version(8);
  relu.add_opset_import()->set_version(13);
  auto* g = relu.mutable_graph();
  g->set_name("relu");
  g->add_input()->set_name("x");
  g->add_output()->set_name("y");
  auto* n = g->add_node();
  n->set_op_type("Relu");
  n->add_input("x");
  n->add_output("y");
  EXPECT_THAT(LoadModel(Write(dir, "relu.onnx", relu)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "relu.onnx: not a logit model: expected a Gemm node with initializers W "
                       "and b"));

  // logit's own graphs, each changed in one way that would change what W and b mean.
  const LinearModel multi = Multinomial();
  LinearModel binary;
  binary.num_features = 3;
  binary.num_classes = 2;
  binary.weights = {1, -2, 3};
  binary.bias = {0.5f};
  struct Edit {
    const char* name;
    bool binary;
    std::function<void(onnx::ModelProto*)> edit;
    const char* error;
  };
  const std::vector<Edit> edits = {
      {"transposed", false,
       [](onnx::ModelProto* p) {
         auto* a = NodeOf(p, "Gemm")->add_attribute();
         a->set_name("transB");
         a->set_type(onnx::AttributeProto::INT);
         a->set_i(1);
       },
       "expected a Gemm node without transposes"},
      {"scaled", false,
       [](onnx::ModelProto* p) {
         auto* a = NodeOf(p, "Gemm")->add_attribute();
         a->set_name("alpha");
         a->set_type(onnx::AttributeProto::FLOAT);
         a->set_f(2);
       },
       "alpha and beta 1"},
      {"relu", false, [](onnx::ModelProto* p) { NodeOf(p, "Softmax")->set_op_type("Relu"); },
       "expected a Softmax node"},
      {"rows-axis", false,
       [](onnx::ModelProto* p) { NodeOf(p, "Softmax")->mutable_attribute(0)->set_i(0); },
       "expected a Softmax node"},
      {"double", false,
       [](onnx::ModelProto* p) {
         p->mutable_graph()->mutable_initializer(0)->set_data_type(onnx::TensorProto::DOUBLE);
       },
       "initializer W: not float32"},
      {"short", false,
       [](onnx::ModelProto* p) {
         auto* raw = p->mutable_graph()->mutable_initializer(0)->mutable_raw_data();
         raw->resize(raw->size() - 4);
       },
       "initializer W: 20 bytes of data for 6 float32 values"},
      {"huge", false,
       [](onnx::ModelProto* p) {
         p->mutable_graph()->mutable_initializer(0)->set_dims(0, int64_t{1} << 40);
       },
       "initializer W"},
      {"extra-node", false,
       [](onnx::ModelProto* p) {
         auto* extra = p->mutable_graph()->add_node();
         extra->set_op_type("Identity");
         extra->add_input("label");
         extra->add_output("label2");
       },
       "no other nodes"},
      {"lying-metadata", false,
       [](onnx::ModelProto* p) { p->mutable_metadata_props(0)->set_value("7"); },
       "metadata classes is '7' but the graph has 3"},
      {"swapped", true,
       [](onnx::ModelProto* p) {
         auto* concat = NodeOf(p, "Concat");
         std::string first = concat->input(0);
         concat->set_input(0, concat->input(1));
         concat->set_input(1, first);
       },
       "Sigmoid, Sub and Concat giving [1 - p, p]"},
      {"two", true,
       [](onnx::ModelProto* p) {
         for (auto& t : *p->mutable_graph()->mutable_initializer()) {
           if (t.name() == "one") t.set_raw_data(std::string("\0\0\0\x40", 4));  // 2.0f
         }
       },
       "the constant 1 in the Sub node"},
  };
  for (const Edit& e : edits) {
    SCOPED_TRACE(e.name);
    onnx::ModelProto proto = LogitGraph(e.binary ? binary : multi, dir);
    e.edit(&proto);
    const std::string name = std::string(e.name) + ".onnx";
    EXPECT_THAT(LoadModel(Write(dir, name, proto)),
                StatusIs(absl::StatusCode::kInvalidArgument, name + ": "));
    EXPECT_THAT(LoadModel(dir.Path(name)), StatusIs(absl::StatusCode::kInvalidArgument, e.error));
  }
  // Unchanged, both read back.
  EXPECT_TRUE(LoadModel(Write(dir, "multi.onnx", LogitGraph(multi, dir))).ok());
  EXPECT_TRUE(LoadModel(Write(dir, "binary.onnx", LogitGraph(binary, dir))).ok());
}

// Regressions from tests/fuzz: degenerate models are refused (once a zero-feature .npz made
// Predict divide by zero, and zero-size arrays reached memcpy with a null pointer).
TEST(HostileModels, DegenerateModelsAreRefusedInEveryFormat) {
  ::logit::testing::TempDir dir;
  LinearModel none;
  none.num_features = 0;
  none.num_classes = 2;
  none.bias = {0.5f};
  for (const char* name : {"zero.npz", "zero.safetensors"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(SaveModel(none, dir.Path(name)).ok());
    EXPECT_THAT(LoadModel(dir.Path(name)),
                StatusIs(absl::StatusCode::kInvalidArgument, "not a usable model: 0 features"));
  }
  LinearModel mismatched;
  mismatched.num_features = 3;
  mismatched.num_classes = 4;
  mismatched.weights.assign(12, 0.0f);
  mismatched.bias.assign(4, 0.0f);
  EXPECT_TRUE(ValidateModel(mismatched, "m").ok());
  mismatched.weights.resize(11);
  EXPECT_THAT(ValidateModel(mismatched, "m"),
              StatusIs(absl::StatusCode::kInvalidArgument, "W has 11 values"));
  mismatched.weights.assign(12, 0.0f);
  mismatched.weights[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(ValidateModel(mismatched, "m"),
              StatusIs(absl::StatusCode::kInvalidArgument, "non-finite"));
  mismatched.num_classes = 1;
  EXPECT_THAT(ValidateModel(mismatched, "m"),
              StatusIs(absl::StatusCode::kInvalidArgument, "1 classes"));
}

TEST(HostileModels, SafetensorsHeadersThatLieAreRefused) {
  auto file = [](const std::string& header, const std::string& data) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(header.size() >> (8 * i));
    return out + header + data;
  };
  const std::string data(16, '\0');
  EXPECT_THAT(
      ParseModel(file("{\"W\": {\"dtype\": \"F32\", \"shape\": \"x\"}}", data), "a.safetensors"),
      StatusIs(absl::StatusCode::kInvalidArgument, "shape must be"));
  EXPECT_THAT(ParseModel(file("{\"W\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4], "
                              "\"data_offsets\": [0, 16]}}",
                              data),
                         "b.safetensors"),
              StatusIs(absl::StatusCode::kInvalidArgument, "shape is too large"));
  EXPECT_THAT(ParseModel(file("{\"W\": {\"dtype\": \"F32\", \"shape\": [4], "
                              "\"data_offsets\": [0, 18446744073709551615]}}",
                              data),
                         "c.safetensors"),
              StatusIs(absl::StatusCode::kInvalidArgument, "data_offsets"));
  EXPECT_THAT(ParseModel(std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8), "d.safetensors"),
              StatusIs(absl::StatusCode::kInvalidArgument, "header length"));
  EXPECT_THAT(ParseModel("PK\x03\x04junk", "e.npz"),
              StatusIs(absl::StatusCode::kInvalidArgument, "e.npz: not an .npz archive"));
}

}  // namespace
}  // namespace logit
