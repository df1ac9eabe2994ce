// The management commands' printing: kubectl's duration units, sizes, aligned tables, and the
// exit code of each failed call.
#include "client/manage.h"

#include <sstream>

#include "client/cli.h"
#include "gtest/gtest.h"

namespace logit {
namespace {

TEST(HumanDuration, UsesFewerUnitsAsDurationsGrowLikeKubectl) {
  EXPECT_EQ(HumanDuration(-5), "0s");
  EXPECT_EQ(HumanDuration(0.4), "0s");
  EXPECT_EQ(HumanDuration(45), "45s");
  EXPECT_EQ(HumanDuration(119), "119s");
  EXPECT_EQ(HumanDuration(120), "2m");
  EXPECT_EQ(HumanDuration(192), "3m12s");
  EXPECT_EQ(HumanDuration(25 * 60 + 7), "25m");
  EXPECT_EQ(HumanDuration(2 * 3600 + 5 * 60 + 30), "2h5m");
  EXPECT_EQ(HumanDuration(3600), "1h");
  EXPECT_EQ(HumanDuration(3 * 3600), "3h");
  EXPECT_EQ(HumanDuration(30 * 3600 + 59 * 60), "30h");
  EXPECT_EQ(HumanDuration(3 * 86400), "3d");
  EXPECT_EQ(HumanDuration(3 * 86400 + 4 * 3600), "3d4h");
  EXPECT_EQ(HumanDuration(40 * 86400 + 4 * 3600), "40d");
  EXPECT_EQ(HumanDuration(3 * 365 * 86400 + 10 * 86400), "3y10d");
}

TEST(HumanBytes, PicksTheLargestBinaryUnitBelowTheSize) {
  EXPECT_EQ(HumanBytes(812), "812B");
  EXPECT_EQ(HumanBytes(4608), "4.5KiB");
  EXPECT_EQ(HumanBytes(int64_t{3} << 30), "3.0GiB");
}

TEST(PrintTable, PadsEachColumnToItsWidestCellButTheLast) {
  std::ostringstream out;
  PrintTable({{"ID", "NAME", "AGE"}, {"model-10", "n", "5s"}}, out);
  EXPECT_EQ(out.str(), "ID         NAME   AGE\nmodel-10   n      5s\n");
}

TEST(ExitCodeOf, MapsEachFailureToItsExitCode) {
  EXPECT_EQ(ExitCodeOf(grpc::Status::OK), kExitOk);
  EXPECT_EQ(ExitCodeOf(grpc::Status(grpc::StatusCode::NOT_FOUND, "")), kExitNotFound);
  EXPECT_EQ(ExitCodeOf(grpc::Status(grpc::StatusCode::UNAVAILABLE, "")), kExitUnreachable);
  EXPECT_EQ(ExitCodeOf(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "")), kExitUnreachable);
  EXPECT_EQ(ExitCodeOf(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "")), kExitUsage);
  EXPECT_EQ(ExitCodeOf(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "")), kExitUsage);
  EXPECT_EQ(ExitCodeOf(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "")),
            kExitJobFailed);
}

}  // namespace
}  // namespace logit
