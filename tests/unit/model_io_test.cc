#include "worker/model_io.h"

#include <cstdlib>

#include "tests/unit/test_util.h"

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

TEST(ModelIo, ErrorsNameTheFile) {
  TempDir dir;
  EXPECT_THAT(LoadModel(dir.Path("missing.npz")),
              StatusIs(absl::StatusCode::kNotFound, "missing.npz"));
  EXPECT_THAT(LoadModel(dir.Write("junk.npz", "not a zip")),
              StatusIs(absl::StatusCode::kInvalidArgument, "junk.npz"));
  EXPECT_THAT(SaveModel(Multinomial(), dir.Path("m.pkl")),
              StatusIs(absl::StatusCode::kInvalidArgument, "save_model"));
}

}  // namespace
}  // namespace logit
