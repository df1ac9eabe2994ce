#include "worker/data/readers.h"

#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"

#include "tests/unit/test_util.h"
#include "worker/data/limits.h"
#include "worker/data/npy.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;

absl::StatusOr<Dataset> Read(const std::string& path, const std::string& labels = "", int rank = 0,
                             int world = 1) {
  ReadOptions o;
  o.path = path;
  o.labels_path = labels;
  o.rank = rank;
  o.world = world;
  return ReadDataset(o);
}

TEST(CsvReader, DetectsHeaderAndUsesLastColumnAsLabel) {
  TempDir dir;
  auto d = Read(dir.Write("a.csv", "x1,x2,y\n1.5,2,0\n3,4e-1,1\n"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_rows, 2);
  EXPECT_EQ(d->num_features, 2);
  EXPECT_EQ(d->dense_f32, (std::vector<float>{1.5f, 2, 3, 0.4f}));
  EXPECT_EQ(d->labels, (std::vector<int64_t>{0, 1}));
}

TEST(CsvReader, HeaderlessFileIsAllData) {
  TempDir dir;
  auto d = Read(dir.Write("a.csv", "1,2,0\r\n3,4,1\r\n\n"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_rows, 2);
}

TEST(CsvReader, LabelColumnByNameAndByIndex) {
  TempDir dir;
  const std::string p = dir.Write("a.csv", "y,x1,x2\n2,1,2\n0,3,4\n");
  ReadOptions o;
  o.path = p;
  o.label_column = "y";
  auto by_name = ReadDataset(o);
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  EXPECT_EQ(by_name->labels, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(by_name->dense_f32, (std::vector<float>{1, 2, 3, 4}));
  o.label_column = "1";  // columns count from 1, as in messages
  auto by_index = ReadDataset(o);
  ASSERT_TRUE(by_index.ok());
  EXPECT_EQ(by_index->labels, by_name->labels);
  o.label_column = "-3";  // from the end: -1 is the last
  auto from_end = ReadDataset(o);
  ASSERT_TRUE(from_end.ok());
  EXPECT_EQ(from_end->labels, by_name->labels);
  o.label_column = "0";
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument, "count from 1"));
  o.label_column = "4";
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument, "out of range"));
  o.label_column = "nope";
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument, "label_column"));
}

TEST(CsvReader, RaggedRowNamesFileAndLine) {
  TempDir dir;
  const std::string p = dir.Write("bad.csv", "a,b,y\n1,2,0\n1,2\n");
  EXPECT_THAT(Read(p), StatusIs(absl::StatusCode::kInvalidArgument, p + ":3: expected 3 fields"));
}

TEST(CsvReader, NanAndGarbageNameLineAndColumn) {
  TempDir dir;
  const std::string nan = dir.Write("nan.csv", "1,2,0\n1,nan,1\n");
  EXPECT_THAT(Read(nan),
              StatusIs(absl::StatusCode::kInvalidArgument, nan + ":2: column 2: non-finite"));
  const std::string inf = dir.Write("inf.csv", "1,2,0\n1,2,0\ninf,2,1\n");
  EXPECT_THAT(Read(inf), StatusIs(absl::StatusCode::kInvalidArgument, inf + ":3: column 1"));
  const std::string junk = dir.Write("junk.csv", "1,2,0\n1,abc,1\n");
  EXPECT_THAT(Read(junk), StatusIs(absl::StatusCode::kInvalidArgument, "not a number: 'abc'"));
}

TEST(CsvReader, LabelOutOfRangeOrFractionalIsRejected) {
  TempDir dir;
  ReadOptions o;
  o.path = dir.Write("a.csv", "1,2,0\n1,2,5\n");
  o.classes = 3;
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                       ":2: label 5 is out of range for classes=3"));
  o.path = dir.Write("b.csv", "1,2,0.5\n");
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument, ":1: label 0.5"));
}

TEST(CsvReader, StringLabelsBecomeSortedClassNamesWhateverTheShard) {
  TempDir dir;
  const std::string p = dir.Write(
      "iris.csv", "sepal,petal,species\n1,2,virginica\n3,4,setosa\n5,6,\"versicolor\"\n7,8,setosa\n");
  auto whole = Read(p);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->class_names, (std::vector<std::string>{"setosa", "versicolor", "virginica"}));
  EXPECT_EQ(whole->labels, (std::vector<int64_t>{2, 0, 1, 0}));
  EXPECT_EQ(whole->dense_f32, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
  // The second shard holds no virginica row and still numbers the classes as the whole file.
  auto shard = Read(p, "", 1, 2);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->class_names, whole->class_names);
  EXPECT_EQ(shard->labels, (std::vector<int64_t>{1, 0}));
}

TEST(CsvReader, HeaderlessStringLabelsAreDataAndNumberedHeadersAreHeaders) {
  TempDir dir;
  auto headerless = Read(dir.Write("a.csv", "1,2,dog\n3,4,cat\n"));
  ASSERT_TRUE(headerless.ok()) << headerless.status();
  EXPECT_EQ(headerless->num_rows, 2);
  EXPECT_EQ(headerless->class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(headerless->labels, (std::vector<int64_t>{1, 0}));
  // Columns named by numbers: the label's name makes the first line a header.
  auto numbered = Read(dir.Write("b.csv", "0,1,label\n1,2,1\n3,4,0\n"));
  ASSERT_TRUE(numbered.ok()) << numbered.status();
  EXPECT_EQ(numbered->num_rows, 2);
  EXPECT_TRUE(numbered->class_names.empty());
  EXPECT_EQ(numbered->labels, (std::vector<int64_t>{1, 0}));
}

TEST(CsvReader, StringLabelsMapToGivenNamesAndUnknownNamesAreErrors) {
  TempDir dir;
  ReadOptions o;
  o.class_names = {"a", "b", "c"};
  o.path = dir.Write("a.csv", "1,2,c\n1,2,'a'\n");
  auto d = ReadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->labels, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(d->class_names, o.class_names);
  o.path = dir.Write("b.csv", "1,2,c\n1,2,d\n");
  EXPECT_THAT(ReadDataset(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       o.path + ":2: column 3: label 'd' is not one of the classes (a, b, c)"));
}

TEST(CsvReader, MixedLabelsCountsAndBadNamesAreErrorsNamingTheLine) {
  TempDir dir;
  const std::string mixed = dir.Write("mixed.csv", "1,2,0\n1,2,cat\n");
  EXPECT_THAT(Read(mixed), StatusIs(absl::StatusCode::kInvalidArgument,
                                    mixed + ":2: column 3: label 'cat' is not a number"));
  ReadOptions o;
  o.path = dir.Write("three.csv", "1,2,a\n1,2,b\n1,2,c\n");
  o.classes = 2;
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "3 distinct labels (a, b, c) but classes=2"));
  const std::string empty = dir.Write("empty.csv", "1,2,a\n1,2,\"\"\n");
  EXPECT_THAT(Read(empty),
              StatusIs(absl::StatusCode::kInvalidArgument, empty + ":2: column 3: empty label"));
  const std::string latin1 = dir.Write("latin1.csv", "1,2,a\n1,2,caf\xe9\n");
  EXPECT_THAT(Read(latin1), StatusIs(absl::StatusCode::kInvalidArgument,
                                     latin1 + ":2: column 3: the label is not valid UTF-8"));
}

TEST(CsvReader, MissingFileIsNotFound) {
  EXPECT_THAT(Read("/nonexistent/x.csv"),
              StatusIs(absl::StatusCode::kNotFound, "/nonexistent/x.csv"));
}

TEST(CsvReader, ShardsPartitionTheRowsWithoutOverlap) {
  auto whole = Read(TestData("iris.csv"));
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->num_rows, 150);
  std::vector<float> joined;
  std::vector<int64_t> labels;
  for (int r = 0; r < 4; ++r) {
    auto shard = Read(TestData("iris.csv"), "", r, 4);
    ASSERT_TRUE(shard.ok());
    EXPECT_EQ(shard->first_row, ShardBegin(150, r, 4));
    EXPECT_EQ(shard->total_rows, 150);
    joined.insert(joined.end(), shard->dense_f32.begin(), shard->dense_f32.end());
    labels.insert(labels.end(), shard->labels.begin(), shard->labels.end());
  }
  EXPECT_EQ(joined, whole->dense_f32);
  EXPECT_EQ(labels, whole->labels);
}

TEST(LibSvmReader, ReadsOneBasedSparseRowsAndMapsMinusOne) {
  TempDir dir;
  auto d = Read(dir.Write("a.libsvm", "+1 1:0.5 3:2 # comment\n-1 2:1\n\n"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->storage, FeatureStorage::kSparseCsr);
  EXPECT_EQ(d->num_rows, 2);
  EXPECT_EQ(d->num_features, 3);
  EXPECT_EQ(d->csr_indptr, (std::vector<int64_t>{0, 2, 3}));
  EXPECT_EQ(d->csr_indices, (std::vector<int32_t>{0, 2, 1}));
  EXPECT_EQ(d->labels, (std::vector<int64_t>{1, 0}));
}

TEST(LibSvmReader, KeepsNoValuesWhenEveryValueIsOneAndFillsThemInOnceOneIsNot) {
  TempDir dir;
  // Binary features (click logs, bags of words): no values array, every CsrValue is 1.
  auto ones = Read(dir.Write("ones.svm", "1 1:1 3:1\n0 2:1.0\n1 1:1 2:1 3:1\n"));
  ASSERT_TRUE(ones.ok()) << ones.status();
  EXPECT_TRUE(ones->csr_values.empty());
  EXPECT_EQ(ones->csr_indices.size(), 6u);
  for (int64_t p = 0; p < 6; ++p) EXPECT_EQ(ones->CsrValue(p), 1.0f);
  EXPECT_EQ(ones->CsrValuesOrNull(), nullptr);
  // A value other than 1 after some ones: the ones before it are filled in.
  auto mixed = Read(dir.Write("mixed.svm", "1 1:1 3:1\n0 2:1 3:0.25\n1 1:1\n"));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->csr_values, (std::vector<float>{1, 1, 1, 0.25f, 1}));
  // Rows taken from a file of ones keep implicit values.
  const Dataset some = TakeRows(*ones, {2, 0});
  EXPECT_TRUE(some.csr_values.empty());
  EXPECT_EQ(some.csr_indptr, (std::vector<int64_t>{0, 3, 5}));
}

TEST(LibSvmReader, DetectsZeroBasedIndices) {
  TempDir dir;
  auto d = Read(dir.Write("a.svm", "0 0:1 4:2\n1 1:1\n"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_features, 5);
  EXPECT_EQ(d->csr_indices, (std::vector<int32_t>{0, 4, 1}));
}

TEST(LibSvmReader, MalformedPairNamesLine) {
  TempDir dir;
  const std::string p = dir.Write("a.libsvm", "1 1:1\n0 2:x\n");
  EXPECT_THAT(Read(p),
              StatusIs(absl::StatusCode::kInvalidArgument, p + ":2: expected index:value"));
  const std::string q = dir.Write("b.libsvm", "1 3:1 2:1\n");
  EXPECT_THAT(Read(q), StatusIs(absl::StatusCode::kInvalidArgument,
                                q + ":1: feature indices must increase"));
}

std::string Npy(const std::string& descr, std::vector<int64_t> shape, const void* data,
                size_t bytes) {
  return EncodeNpy(descr, shape, data, bytes);
}

TEST(NpyReader, ReadsFloat64FeaturesAndIntLabels) {
  TempDir dir;
  const double x[] = {1, 2, 3, 4, 5, 6};
  const int64_t y[] = {0, 1, 2};
  const std::string xp = dir.Write("x.npy", Npy("<f8", {3, 2}, x, sizeof(x)));
  const std::string yp = dir.Write("y.npy", Npy("<i8", {3}, y, sizeof(y)));
  auto d = Read(xp, yp);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->dense_f32, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(d->labels, (std::vector<int64_t>{0, 1, 2}));
  auto shard = Read(xp, yp, 1, 2);
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ(shard->num_rows, 2);
  EXPECT_EQ(shard->dense_f32, (std::vector<float>{3, 4, 5, 6}));
}

// Prediction asks for no labels; a file without them says so (predict evaluates only rows that
// carry labels).
TEST(Readers, FilesWithoutLabelsSaySoWhenNoneAreRequired) {
  TempDir dir;
  ReadOptions o;
  o.require_labels = false;
  o.num_features = 2;
  o.path = dir.Write("rows.csv", "1,2\n3,4\n");
  auto rows = ReadDataset(o);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_FALSE(rows->has_labels);
  EXPECT_EQ(rows->labels, (std::vector<int64_t>{0, 0}));
  o.path = dir.Write("labelled.csv", "1,2,1\n3,4,0\n");
  auto labelled = ReadDataset(o);
  ASSERT_TRUE(labelled.ok()) << labelled.status();
  EXPECT_TRUE(labelled->has_labels);
  EXPECT_EQ(labelled->labels, (std::vector<int64_t>{1, 0}));
  const float x[] = {1, 2, 3, 4};
  const int64_t y[] = {1, 0};
  o.path = dir.Write("x.npy", Npy("<f4", {2, 2}, x, sizeof(x)));
  auto npy = ReadDataset(o);
  ASSERT_TRUE(npy.ok()) << npy.status();
  EXPECT_FALSE(npy->has_labels);
  o.labels_path = dir.Write("y.npy", Npy("<i8", {2}, y, sizeof(y)));
  auto npy_labelled = ReadDataset(o);
  ASSERT_TRUE(npy_labelled.ok()) << npy_labelled.status();
  EXPECT_TRUE(npy_labelled->has_labels);
  EXPECT_FALSE(TakeRows(*npy, {1}).has_labels);
}

TEST(NpyReader, KeepsUint8AsUint8WithPixelScale) {
  TempDir dir;
  const uint8_t x[] = {0, 255, 51, 102};
  const uint8_t y[] = {1, 0};
  auto d =
      Read(dir.Write("x.npy", Npy("|u1", {2, 2}, x, 4)), dir.Write("y.npy", Npy("|u1", {2}, y, 2)));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->storage, FeatureStorage::kDenseUint8);
  EXPECT_FLOAT_EQ(d->u8_scale, 1.0f / 255);
}

TEST(NpyReader, MapsUint8AndFloat32RowsInPlaceWithTheSameValues) {
  TempDir dir;
  const uint8_t x8[] = {0, 255, 51, 102, 7, 9};
  const float x32[] = {1.5f, -2, 3, 0.25f, 5, 6};
  const uint8_t y[] = {1, 0, 1};
  const std::string labels = dir.Write("y.npy", Npy("|u1", {3}, y, 3));
  for (const auto& [name, descr, bytes] :
       {std::make_tuple("u8.npy", "|u1", static_cast<const void*>(x8)),
        std::make_tuple("f32.npy", "<f4", static_cast<const void*>(x32))}) {
    SCOPED_TRACE(name);
    const std::string path = dir.Write(name, Npy(descr, {3, 2}, bytes, descr[1] == 'u' ? 6 : 24));
    ReadOptions copy;
    copy.path = path;
    copy.labels_path = labels;
    ReadOptions mapped = copy;
    mapped.map_rows = true;
    auto a = ReadDataset(copy);
    auto b = ReadDataset(mapped);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    EXPECT_EQ(b->mapping != nullptr, true);
    EXPECT_TRUE(b->dense_u8.empty() && b->dense_f32.empty());  // nothing copied
    ASSERT_EQ(a->storage, b->storage);
    if (a->storage == FeatureStorage::kDenseUint8) {
      EXPECT_EQ(std::vector<uint8_t>(b->U8Rows(), b->U8Rows() + 6), a->dense_u8);
    } else {
      EXPECT_EQ(std::vector<float>(b->F32Rows(), b->F32Rows() + 6), a->dense_f32);
    }
    EXPECT_EQ(a->labels, b->labels);
    // Rows taken from mapped rows are copies of them (and outlive nothing).
    const Dataset some = TakeRows(*b, {2, 0});
    if (some.storage == FeatureStorage::kDenseUint8) {
      EXPECT_EQ(some.dense_u8, (std::vector<uint8_t>{7, 9, 0, 255}));
    } else {
      EXPECT_EQ(some.dense_f32, (std::vector<float>{5, 6, 1.5f, -2}));
    }
  }
  // A non-finite float32 in a mapped file is refused like a copied one, naming row and column.
  const float bad[] = {1, 2, 3, std::numeric_limits<float>::infinity()};
  ReadOptions o;
  o.path = dir.Write("bad.npy", Npy("<f4", {2, 2}, bad, sizeof(bad)));
  o.labels_path = dir.Write("y2.npy", Npy("|u1", {2}, y, 2));
  o.map_rows = true;
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "non-finite value at row 1, column 1"));
}

TEST(NpyReader, RejectsWrongDtypeShapeAndCounts) {
  TempDir dir;
  const int16_t x16[] = {1, 2};
  EXPECT_THAT(Read(dir.Write("a.npy", Npy("<i2", {1, 2}, x16, 4)),
                   dir.Write("l.npy", Npy("<i2", {1}, x16, 2))),
              StatusIs(absl::StatusCode::kInvalidArgument, "unsupported feature dtype '<i2'"));
  const float x[] = {1, 2, 3};
  EXPECT_THAT(Read(dir.Write("b.npy", Npy("<f4", {3}, x, 12)),
                   dir.Write("l2.npy", Npy("<i2", {1}, x16, 2))),
              StatusIs(absl::StatusCode::kInvalidArgument, "must be a 2-D array"));
  const int64_t y[] = {0, 1};
  EXPECT_THAT(
      Read(dir.Write("c.npy", Npy("<f4", {3, 1}, x, 12)),
           dir.Write("y.npy", Npy("<i8", {2}, y, 16))),
      StatusIs(absl::StatusCode::kInvalidArgument, "has 2 labels but the features have 3 rows"));
  const float nan[] = {1, NAN};
  EXPECT_THAT(Read(dir.Write("d.npy", Npy("<f4", {1, 2}, nan, 8)),
                   dir.Write("y1.npy", Npy("<i8", {1}, y, 8))),
              StatusIs(absl::StatusCode::kInvalidArgument, "non-finite value at row 0, column 1"));
  EXPECT_THAT(Read(dir.Write("e.npy", "not numpy"), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, "labels"));
  EXPECT_THAT(Read(dir.Write("f.npy", "garbage!!!!!"), dir.Path("y.npy")),
              StatusIs(absl::StatusCode::kInvalidArgument, "magic"));
  const std::string trunc = Npy("<f4", {3, 1}, x, 12).substr(0, 70);
  EXPECT_THAT(Read(dir.Write("g.npy", trunc), dir.Path("y.npy")),
              StatusIs(absl::StatusCode::kInvalidArgument, "truncated"));
}

TEST(IdxReader, ReadsFashionMnistGzipShard) {
  const std::string dir = logit::testing::FashionDir();
  auto d = Read(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz", 1, 3);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_features, 784);
  EXPECT_EQ(d->total_rows, 10000);
  EXPECT_EQ(d->first_row, 3333);
  EXPECT_EQ(d->num_rows, 3333);
  EXPECT_EQ(d->storage, FeatureStorage::kDenseUint8);
  EXPECT_EQ(d->MaxLabel(), 9);
}

TEST(IdxReader, BadMagicAndMismatchedLabelsAreErrors) {
  TempDir dir;
  const std::string bad = dir.Write("x-ubyte", std::string("\x01\x02\x03\x04", 4));
  EXPECT_THAT(Read(bad, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, "bad magic at offset 0"));
  std::string img("\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x02", 16);
  img += std::string("\x01\x02\x03\x04", 4);
  std::string lab("\x00\x00\x08\x01\x00\x00\x00\x03\x00\x01\x02", 11);
  EXPECT_THAT(Read(dir.Write("i-ubyte", img), dir.Write("l-ubyte", lab)),
              StatusIs(absl::StatusCode::kInvalidArgument, "has 3 labels but"));
  std::string short_img = img.substr(0, 18);
  std::string lab2("\x00\x00\x08\x01\x00\x00\x00\x02\x00\x01", 10);
  EXPECT_THAT(Read(dir.Write("s-ubyte", short_img), dir.Write("l2-ubyte", lab2)),
              StatusIs(absl::StatusCode::kInvalidArgument, "more than the file can hold"));
}

// `bytes` with every byte outside `ranges` overwritten: what a worker's cache holds when it
// fetched only those ranges (here garbage instead of holes, so that a stray read shows).
std::string OnlyRanges(const std::string& bytes, const std::vector<ByteRange>& ranges) {
  std::string out(bytes.size(), '\xa5');
  for (const ByteRange& r : ranges) {
    EXPECT_GE(r.offset, 0);
    EXPECT_LE(r.offset + r.length, static_cast<int64_t>(bytes.size()));
    std::memcpy(out.data() + r.offset, bytes.data() + r.offset, r.length);
  }
  return out;
}

void ExpectSameShard(const Dataset& a, const Dataset& b) {
  EXPECT_EQ(a.num_rows, b.num_rows);
  EXPECT_EQ(a.first_row, b.first_row);
  EXPECT_EQ(a.total_rows, b.total_rows);
  EXPECT_EQ(a.dense_f32, b.dense_f32);
  EXPECT_EQ(a.dense_u8, b.dense_u8);
  EXPECT_EQ(a.labels, b.labels);
}

TEST(ShardByteRanges, NpyAndIdxShardsReadOnlyTheirRanges) {
  TempDir dir;
  constexpr int64_t kRows = 1001, kCols = 7;
  std::vector<float> x(kRows * kCols);
  std::vector<uint8_t> pixels(kRows * kCols);
  std::vector<int64_t> y(kRows);
  for (int64_t i = 0; i < kRows * kCols; ++i) {
    x[i] = 0.25f * static_cast<float>(i % 97);
    pixels[i] = static_cast<uint8_t>(i * 31);
  }
  for (int64_t i = 0; i < kRows; ++i) y[i] = i % 3;
  const std::string xs = Npy("<f4", {kRows, kCols}, x.data(), x.size() * 4);
  const std::string ys = Npy("<i8", {kRows}, y.data(), y.size() * 8);
  std::string idx("\x00\x00\x08\x02", 4);
  for (int64_t dim : {kRows, kCols}) {
    for (int s = 24; s >= 0; s -= 8) idx.push_back(static_cast<char>((dim >> s) & 0xff));
  }
  idx.append(reinterpret_cast<const char*>(pixels.data()), pixels.size());
  std::string idx_labels("\x00\x00\x08\x01", 4);
  for (int s = 24; s >= 0; s -= 8) idx_labels.push_back(static_cast<char>((kRows >> s) & 0xff));
  for (int64_t i = 0; i < kRows; ++i) idx_labels.push_back(static_cast<char>(y[i]));
  const std::string files[][2] = {{xs, ys}, {idx, idx_labels}};
  for (int format = 0; format < 2; ++format) {
    const std::string& features = files[format][0];
    const std::string& labels = files[format][1];
    const std::string ext = format == 0 ? ".npy" : "-ubyte";
    const std::string xp = dir.Write("x" + ext, features), yp = dir.Write("y" + ext, labels);
    for (int world : {1, 2, 3}) {
      for (int rank = 0; rank < world; ++rank) {
        SCOPED_TRACE(absl::StrCat(ext, " rank ", rank, " of ", world));
        auto fr = ShardByteRanges(features.substr(0, 256), features.size(), false, rank, world);
        auto lr = ShardByteRanges(labels.substr(0, 256), labels.size(), true, rank, world);
        ASSERT_TRUE(fr.has_value() && lr.has_value());
        int64_t fetched = 0;
        for (const ByteRange& r : *fr) fetched += r.length;
        // The header plus this shard's rows, nothing else.
        EXPECT_LT(fetched, static_cast<int64_t>(features.size()) / world + 128 + 28);
        const std::string px = dir.Write("px" + ext, OnlyRanges(features, *fr));
        const std::string py = dir.Write("py" + ext, OnlyRanges(labels, *lr));
        auto want = Read(xp, yp, rank, world);
        auto got = Read(px, py, rank, world);
        ASSERT_TRUE(want.ok()) << want.status();
        ASSERT_TRUE(got.ok()) << got.status();
        ExpectSameShard(*want, *got);
      }
    }
  }
}

TEST(ShardByteRanges, WholeFileWhenTheFormatNeedsIt) {
  const float x[] = {1, 2, 3, 4};
  const std::string npy = Npy("<f4", {2, 2}, x, sizeof(x));
  // Text and gzip are read from the start; a header cut short cannot be judged.
  EXPECT_FALSE(ShardByteRanges("a,b,label\n1,2,0\n", 16, false, 0, 2).has_value());
  EXPECT_FALSE(ShardByteRanges(std::string("\x1f\x8b\x08\x00", 4), 4000, false, 0, 2).has_value());
  EXPECT_FALSE(ShardByteRanges(npy.substr(0, 20), npy.size(), false, 0, 2).has_value());
  // A header promising more rows than the file holds: the reader reports it from the whole file.
  EXPECT_FALSE(ShardByteRanges(npy, npy.size() - 4, false, 0, 2).has_value());
  std::string huge("\x00\x00\x08\x02\x7f\xff\xff\xff\x7f\xff\xff\xff", 12);
  EXPECT_FALSE(ShardByteRanges(huge, 100, false, 0, 2).has_value());
  // Features must be 2-D; a rank outside the world is no shard.
  EXPECT_FALSE(ShardByteRanges(Npy("<f4", {4}, x, sizeof(x)), 96, false, 0, 1).has_value());
  EXPECT_FALSE(ShardByteRanges(npy, npy.size(), false, 2, 2).has_value());
  // An empty array: only its header.
  auto empty = ShardByteRanges(Npy("<f4", {0, 3}, x, 0), Npy("<f4", {0, 3}, x, 0).size(), false,
                               0, 1);
  ASSERT_TRUE(empty.has_value());
  ASSERT_EQ(empty->size(), 1u);
}

TEST(SplitRows, AssignmentDoesNotDependOnSharding) {
  auto whole = Read(TestData("digits.csv"));
  ASSERT_TRUE(whole.ok());
  const SplitIndices s = SplitRows(*whole, 0.2, 0.1, 7);
  EXPECT_NEAR(static_cast<double>(s.val.size()) / whole->num_rows, 0.2, 0.03);
  EXPECT_NEAR(static_cast<double>(s.test.size()) / whole->num_rows, 0.1, 0.03);
  std::vector<int64_t> val_global;
  for (int r = 0; r < 3; ++r) {
    auto shard = Read(TestData("digits.csv"), "", r, 3);
    ASSERT_TRUE(shard.ok());
    for (int64_t i : SplitRows(*shard, 0.2, 0.1, 7).val) val_global.push_back(shard->GlobalRow(i));
  }
  EXPECT_EQ(val_global, s.val);
  EXPECT_NE(SplitRows(*whole, 0.2, 0.1, 8).val, s.val);
}

// Sums counts across `world` threads standing in for ranks: each call blocks until every rank
// has added its counts, then all get the total (an allreduce).
class ThreadSum {
 public:
  explicit ThreadSum(int world) : world_(world) {}
  absl::Status Sum(std::vector<double>* counts) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t generation = generation_;
    if (total_.size() < counts->size()) total_.resize(counts->size(), 0.0);
    for (size_t i = 0; i < counts->size(); ++i) total_[i] += (*counts)[i];
    if (++arrived_ == world_) {
      result_ = total_;
      total_.clear();
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
    std::copy(result_.begin(), result_.begin() + counts->size(), counts->begin());
    return absl::OkStatus();
  }

 private:
  const int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<double> total_, result_;
  int arrived_ = 0;
  int64_t generation_ = 0;
};

TEST(StratifiedSplitRows, EveryClassInProportionWhateverTheSharding) {
  auto whole = Read(TestData("digits.csv"));
  ASSERT_TRUE(whole.ok());
  const int64_t classes = whole->MaxLabel() + 1;
  auto s = StratifiedSplitRows(*whole, classes, 0.2, 0.1, 7, nullptr);
  ASSERT_TRUE(s.ok()) << s.status();
  // Exactly round(fraction * n_k) rows of each class, as train_test_split(stratify=y).
  std::vector<int64_t> n(classes), val(classes), test(classes);
  for (int64_t y : whole->labels) ++n[y];
  for (int64_t i : s->val) ++val[whole->labels[i]];
  for (int64_t i : s->test) ++test[whole->labels[i]];
  for (int64_t k = 0; k < classes; ++k) {
    EXPECT_EQ(val[k], std::llround(0.2 * n[k])) << "class " << k;
    EXPECT_EQ(test[k], std::llround(0.1 * n[k])) << "class " << k;
  }
  EXPECT_EQ(s->train.size() + s->val.size() + s->test.size(), static_cast<size_t>(whole->num_rows));
  // 3 shards, each on its own thread as a rank: the same rows in each split.
  for (int world : {2, 3}) {
    ThreadSum sum(world);
    std::vector<std::vector<int64_t>> val_rows(world), test_rows(world);
    std::vector<std::thread> ranks;
    for (int r = 0; r < world; ++r) {
      ranks.emplace_back([&, r] {
        auto shard = Read(TestData("digits.csv"), "", r, world);
        ASSERT_TRUE(shard.ok());
        auto part = StratifiedSplitRows(*shard, classes, 0.2, 0.1, 7,
                                        [&](std::vector<double>* c) { return sum.Sum(c); });
        ASSERT_TRUE(part.ok());
        for (int64_t i : part->val) val_rows[r].push_back(shard->GlobalRow(i));
        for (int64_t i : part->test) test_rows[r].push_back(shard->GlobalRow(i));
      });
    }
    for (std::thread& t : ranks) t.join();
    std::vector<int64_t> all_val, all_test;
    for (int r = 0; r < world; ++r) {
      all_val.insert(all_val.end(), val_rows[r].begin(), val_rows[r].end());
      all_test.insert(all_test.end(), test_rows[r].begin(), test_rows[r].end());
    }
    EXPECT_EQ(all_val, s->val) << world << " ranks";
    EXPECT_EQ(all_test, s->test) << world << " ranks";
  }
  // Another seed, other rows; fractions of 0 leave a split empty.
  EXPECT_NE(StratifiedSplitRows(*whole, classes, 0.2, 0.1, 8, nullptr)->val, s->val);
  EXPECT_TRUE(StratifiedSplitRows(*whole, classes, 0.0, 0.1, 7, nullptr)->val.empty());
}

}  // namespace
}  // namespace logit

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using ::logit::testing::TempDir;

std::string BigEndian(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

// Regressions from tests/fuzz (libFuzzer + ASan/UBSan): each once crashed or hit undefined
// behaviour; now each is a clear error.
TEST(HostileFiles, NpyHeaderWithAnEmptyDescrIsInvalid) {
  const std::string dict = "{'descr':, 'fortran_order': False, 'shape': (1,), }";
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(dict.size()));
  bytes.push_back(0);
  bytes += dict;
  EXPECT_THAT(ParseNpyHeader(bytes, "x.npy"),
              StatusIs(absl::StatusCode::kInvalidArgument, "'descr' is not a quoted dtype"));
}

TEST(HostileFiles, NpyFloat64PastFloat32RangeIsInvalid) {
  TempDir dir;
  const double values[2] = {1.0, 1e300};
  const int64_t labels[1] = {0};
  ReadOptions o;
  o.path = dir.Write("x.npy", EncodeNpy("<f8", {1, 2}, values, sizeof(values)));
  o.labels_path = dir.Write("y.npy", EncodeNpy("<i8", {1}, labels, sizeof(labels)));
  EXPECT_THAT(ReadDataset(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "value 1e+300 at row 0, column 1 is outside float32's range"));
}

TEST(HostileFiles, NpyHeaderWhoseShapeOverflowsIsInvalid) {
  TempDir dir;
  ReadOptions o;
  o.path = dir.Write("x.npy", EncodeNpy("<f4", {int64_t{1} << 62, 4}, "\0\0\0\0", 4));
  o.labels_path = o.path;
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument, "truncated data"));
}

TEST(HostileFiles, NpyLabelsOfANonsenseDtypeAreInvalid) {
  TempDir dir;
  const float x[2] = {1, 2};
  ReadOptions o;
  o.path = dir.Write("x.npy", EncodeNpy("<f4", {1, 2}, x, sizeof(x)));
  o.labels_path = dir.Write("y.npy", EncodeNpy("<i40", {1}, std::string(40, '\0').data(), 40));
  EXPECT_THAT(ReadDataset(o),
              StatusIs(absl::StatusCode::kInvalidArgument, "labels must be integers"));
}

TEST(HostileFiles, IdxWithNoRowsAndAnOverflowingRowShapeIsInvalid) {
  TempDir dir;
  std::string img("\0\0\x08\x04", 4);
  img += BigEndian(0) + BigEndian(0xffffffffu) + BigEndian(0xffffffffu) + BigEndian(0xffffffffu);
  std::string lab("\0\0\x08\x01", 4);
  lab += BigEndian(0);
  ReadOptions o;
  o.path = dir.Write("x-ubyte", img);
  o.labels_path = dir.Write("y-ubyte", lab);
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument, "IDX row shape"));
}

TEST(HostileFiles, CsvWithAWideFirstRowIsRefusedBeforeAllocating) {
  TempDir dir;
  std::string csv;
  for (int c = 0; c < 5000; ++c) csv += c == 0 ? "1" : ",1";
  csv += "\n";
  for (int r = 0; r < 5000; ++r) csv += "1,0\n";
  ReadOptions o;
  o.path = dir.Write("wide.csv", csv);
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "wide.csv:2: expected 5000 fields, found 2 (ragged row)"));
}

TEST(HostileFiles, LibSvmIndicesAndLabelsPastTheLimitsAreInvalid) {
  TempDir dir;
  ReadOptions o;
  o.path = dir.Write("a.svm", "0 1:1 4000000000:1\n");
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "a.svm:1: feature index 4000000000 is past"));
  o.path = dir.Write("b.svm", "0 -9223372036854775808:1\n");
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument, "is below 1"));
  o.path = dir.Write("c.svm", "1e30 1:1\n");
  EXPECT_THAT(ReadDataset(o),
              StatusIs(absl::StatusCode::kInvalidArgument, "past the largest supported class"));  // An index past int64 is refused, never read as 0 (a 0-based file would take it as feature 0).
  o.path = dir.Write("d.svm", "1 0:1\n1 99999999999999999999:2\n");
  EXPECT_THAT(ReadDataset(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "d.svm:2: expected index:value, got '99999999999999999999:2'"));
}

TEST(CheckedArithmetic, ProductsOverflowIntoAnErrorNeverAWrap) {
  EXPECT_EQ(*CheckedProduct({3, 4}, 100, "x"), 12);
  EXPECT_EQ(*CheckedProduct({int64_t{1} << 62, 0}, 10, "x"), 0);
  EXPECT_THAT(
      CheckedProduct({int64_t{1} << 62, 4}, INT64_MAX, "shape"),
      StatusIs(absl::StatusCode::kInvalidArgument, "shape: shape [4611686018427387904, 4]"));
  EXPECT_THAT(CheckedProduct({2, -3}, 100, "s"),
              StatusIs(absl::StatusCode::kInvalidArgument, "negative"));
  EXPECT_FALSE(CheckedMul(INT64_MAX, 2).has_value());
  EXPECT_FALSE(CheckedAdd(INT64_MAX, 1).has_value());
}

}  // namespace
}  // namespace logit
