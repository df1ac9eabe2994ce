// Checkpoint files: what is written is read back bit for bit, and a truncated, corrupted or
// foreign file is refused with InvalidArgument naming the file and the fault, never a crash.
#include "worker/checkpoint.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using ::logit::testing::TempDir;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TrainingCheckpoint Sample() {
  TrainingCheckpoint c;
  c.state.optimizer = "adam";
  c.state.reals["params"] = {0.1, -0.0, 1e-310, -3.5e300, kNaN, -kInf, 1.0 / 3};
  c.state.reals["m1"] = {};
  c.state.reals["m2"] = {2.5};
  c.state.integers["counters"] = {12, 340, 2, 0};
  c.state.integers["batches"] = {std::numeric_limits<int64_t>::min(),
                                 std::numeric_limits<int64_t>::max()};
  for (int64_t e = 1; e <= 3; ++e) {
    EpochRecord r;
    r.epoch = e;
    r.train_loss = 1.0 / (3 * e);
    r.objective = r.train_loss + 1e-17;
    r.val_loss = e == 2 ? kNaN : 0.1 * e;
    r.val_accuracy = e == 3 ? kInf : 0.9;
    r.seconds = 0.0123456789012345678;
    r.samples = 150;
    c.history.push_back(r);
  }
  c.epoch = 3;
  return c;
}

bool SameBits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void ExpectSame(const TrainingCheckpoint& a, const TrainingCheckpoint& b) {
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.state.optimizer, b.state.optimizer);
  EXPECT_EQ(a.state.integers, b.state.integers);
  ASSERT_EQ(a.state.reals.size(), b.state.reals.size());
  for (const auto& [name, values] : a.state.reals) {
    ASSERT_EQ(b.state.reals.count(name), 1u) << name;
    EXPECT_TRUE(SameBits(values, b.state.reals.at(name))) << name;
  }
  ASSERT_EQ(a.history.size(), b.history.size());
  for (size_t i = 0; i < a.history.size(); ++i) {
    const EpochRecord &x = a.history[i], &y = b.history[i];
    EXPECT_EQ(x.epoch, y.epoch);
    EXPECT_EQ(x.samples, y.samples);
    for (auto [u, v] : {std::pair{x.train_loss, y.train_loss},
                        {x.objective, y.objective},
                        {x.val_loss, y.val_loss},
                        {x.val_accuracy, y.val_accuracy},
                        {x.seconds, y.seconds}}) {
      EXPECT_TRUE(SameBits(u, v) || (std::isnan(u) && std::isnan(v))) << u << " vs " << v;
    }
  }
}

std::string Bytes(const TrainingCheckpoint& c) {
  std::ostringstream out;
  EXPECT_TRUE(WriteCheckpoint(c, out).ok());
  return out.str();
}

absl::StatusOr<TrainingCheckpoint> Parse(const std::string& bytes) {
  std::istringstream in(bytes);
  return ReadCheckpoint(in, bytes.size(), "bad.ckpt");
}

// A file of the given header (JSON text) and data bytes.
std::string File(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
  return out + header + data;
}

// `meta` with `key` set to `value`.
nlohmann::json With(nlohmann::json meta, const std::string& key, const std::string& value) {
  meta[key] = value;
  return meta;
}

nlohmann::json GoodMetadata() {
  return {{"format", "logit-checkpoint"},
          {"version", "1"},
          {"optimizer", "sgd"},
          {"epoch", "0"},
          {"history", "[]"}};
}

TEST(CheckpointFile, RoundTripIsBitForBit) {
  TempDir dir;
  const std::string path = dir.Path("run.ckpt");
  const TrainingCheckpoint c = Sample();
  ASSERT_TRUE(WriteCheckpointFile(c, path).ok());
  auto back = ReadCheckpointFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(c, *back);
  // Written again, the same bytes.
  EXPECT_EQ(Bytes(*back), Bytes(c));
}

TEST(CheckpointFile, IsASafetensorsFileWithTypedTensorsAndMetadata) {
  const std::string bytes = Bytes(Sample());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  ASSERT_EQ(n % 8, 0u);
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["real/params"]["dtype"], "F64");
  EXPECT_EQ(header["real/params"]["shape"], nlohmann::json::array({7}));
  EXPECT_EQ(header["int/counters"]["dtype"], "I64");
  EXPECT_EQ(header["__metadata__"]["format"], "logit-checkpoint");
  EXPECT_EQ(header["__metadata__"]["optimizer"], "adam");
  EXPECT_EQ(header["__metadata__"]["epoch"], "3");
  const auto history = nlohmann::json::parse(header["__metadata__"]["history"].get<std::string>());
  ASSERT_EQ(history.size(), 3u);
  EXPECT_TRUE(history[1]["val_loss"].is_null());
  EXPECT_EQ(bytes.size(), 8 + n + 8 * (7 + 0 + 1 + 4 + 2));
}

TEST(CheckpointFile, MissingFileIsNotFound) {
  TempDir dir;
  EXPECT_THAT(ReadCheckpointFile(dir.Path("none.ckpt")),
              StatusIs(absl::StatusCode::kNotFound, "none.ckpt"));
}

TEST(CheckpointFile, TruncatedFileIsRefusedNamingTheFile) {
  TempDir dir;
  const std::string bytes = Bytes(Sample());
  for (size_t len : {size_t{0}, size_t{5}, size_t{8}, size_t{40}, bytes.size() - 1}) {
    SCOPED_TRACE(len);
    const std::string path = dir.Write("cut.ckpt", bytes.substr(0, len));
    EXPECT_THAT(ReadCheckpointFile(path), StatusIs(absl::StatusCode::kInvalidArgument, path));
  }
  const std::string path = dir.Write("cut.ckpt", bytes.substr(0, bytes.size() - 8));
  EXPECT_THAT(ReadCheckpointFile(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "tensor 'real/params': data_offsets [56, 112] do not hold 7 8-byte values"));
}

TEST(CheckpointFile, ExtraBytesAfterTheDataAreRefused) {
  EXPECT_THAT(Parse(Bytes(Sample()) + "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "the file has"));
}

TEST(CheckpointFile, HeaderLengthBeyondTheFileIsRefused) {
  std::string bytes = Bytes(Sample());
  bytes[7] = '\x7f';
  EXPECT_THAT(Parse(bytes), StatusIs(absl::StatusCode::kInvalidArgument,
                                     "bad.ckpt: not a valid checkpoint: header length"));
}

TEST(CheckpointFile, ForeignOrCorruptHeadersAreRefusedNamingTheFault) {
  using nlohmann::json;
  const json meta = GoodMetadata();
  const std::string eight(8, '\0');
  struct Case {
    std::string file, message;
  };
  const std::vector<Case> cases = {
      {File("not json"), "the header is not a JSON object"},
      {File("[1, 2]"), "the header is not a JSON object"},
      {File(json::object().dump()), "no __metadata__"},
      // A model file (safetensors from model_io) is not a checkpoint.
      {File(json{{"W", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                 {"__metadata__", {{"format", "logit"}}}}
                .dump(),
            eight),
       "unexpected tensor 'W'"},
      {File(json{{"__metadata__", {{"format", "logit"}, {"version", "1"}}}}.dump()),
       "format is 'logit', not 'logit-checkpoint'"},
      {File(json{{"__metadata__", With(meta, "version", "7")}}.dump()),
       "version '7' is not supported"},
      {File(json{{"__metadata__", With(meta, "epoch", "-1")}}.dump()), "metadata 'epoch'"},
      {File(json{{"__metadata__", With(meta, "history", "{")}}.dump()),
       "'history' is not a JSON array"},
      {File(json{{"__metadata__", With(meta, "history", R"([{"epoch": 1}])")}}.dump()),
       "history record 0: 'samples'"},
      {File(json{{"__metadata__", meta},
                 {"real/x", {{"dtype", "I64"}, {"shape", {1}}, {"data_offsets", {0, 8}}}}}
                .dump(),
            eight),
       "tensor 'real/x': dtype is not F64"},
      {File(json{{"__metadata__", meta},
                 {"int/x", {{"dtype", "I64"}, {"shape", {1, 1}}, {"data_offsets", {0, 8}}}}}
                .dump(),
            eight),
       "shape must be [count]"},
      {File(json{{"__metadata__", meta},
                 {"int/x", {{"dtype", "I64"}, {"shape", {-1}}, {"data_offsets", {0, 8}}}}}
                .dump(),
            eight),
       "shape must be [count]"},
      {File(json{{"__metadata__", meta},
                 {"int/x",
                  {{"dtype", "I64"},
                   {"shape", {uint64_t{1} << 61}},
                   {"data_offsets", {0, uint64_t{1} << 63}}}}}
                .dump(),
            eight),
       "do not hold"},
      {File(json{{"__metadata__", meta},
                 {"int/x", {{"dtype", "I64"}, {"shape", {1}}, {"data_offsets", {8, 0}}}}}
                .dump(),
            eight),
       "do not hold"},
      {File(json{{"__metadata__", meta},
                 {"int/x", {{"dtype", "I64"}, {"shape", {1}}, {"data_offsets", {0, 8}}}},
                 {"int/y", {{"dtype", "I64"}, {"shape", {1}}, {"data_offsets", {0, 8}}}}}
                .dump(),
            eight + eight),
       "inside the previous tensor"},
      {File(json{{"__metadata__", meta},
                 {"int/", {{"dtype", "I64"}, {"shape", {1}}, {"data_offsets", {0, 8}}}}}
                .dump(),
            eight),
       "is empty or longer"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    EXPECT_THAT(Parse(c.file), StatusIs(absl::StatusCode::kInvalidArgument, "bad.ckpt"));
    EXPECT_THAT(Parse(c.file), StatusIs(absl::StatusCode::kInvalidArgument, c.message));
  }
}

TEST(CheckpointFile, RandomlyCorruptedFilesNeverCrash) {
  const std::string good = Bytes(Sample());
  std::mt19937_64 rng(7);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    auto c = Parse(bytes);
    if (!c.ok()) {
      ++refused;
      EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
    }
  }
  EXPECT_GT(refused, 1000);
}

}  // namespace
}  // namespace logit
