// The coordinator's per-attempt key-value stores (server/rendezvous_kv.h): the c10d Store
// operations, scopes kept apart and dropped, and the limits that keep a misbehaving rank from
// exhausting memory.
#include "server/rendezvous_kv.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/unit/test_util.h"
#include "worker/common/status.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using Request = v1::RendezvousRequest;

constexpr char kScope[] = "job-1/attempt-0";

Request Op(Request::Op op, const std::string& key = "", const std::string& value = "") {
  Request r;
  r.set_op(op);
  r.set_key(key);
  r.set_value(value);
  return r;
}

Request Add(const std::string& key, int64_t delta) {
  Request r = Op(Request::ADD, key);
  r.set_delta(delta);
  return r;
}

Request Check(const std::vector<std::string>& keys) {
  Request r = Op(Request::CHECK);
  for (const std::string& k : keys) r.add_keys(k);
  return r;
}

Request CompareSet(const std::string& key, const std::string& expected,
                   const std::string& desired) {
  Request r = Op(Request::COMPARE_SET, key, desired);
  r.set_expected(expected);
  return r;
}

// Applies `r` to kScope, failing the test on an error.
v1::RendezvousResponse Must(RendezvousKv& kv, const Request& r, const std::string& scope = kScope) {
  absl::StatusOr<v1::RendezvousResponse> out = kv.Apply(scope, r);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : v1::RendezvousResponse();
}

TEST(RendezvousKv, SetThenGetReturnsTheValueAndAbsentKeysAreNotFound) {
  RendezvousKv kv;
  Must(kv, Op(Request::SET, "joined/0", std::string("host\0a", 6)));
  v1::RendezvousResponse got = Must(kv, Op(Request::GET, "joined/0"));
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.value(), std::string("host\0a", 6));
  got = Must(kv, Op(Request::GET, "joined/1"));
  EXPECT_FALSE(got.found());
  EXPECT_EQ(got.value(), "");
}

TEST(RendezvousKv, AddSumsFromZeroAndStoresDecimalText) {
  RendezvousKv kv;
  EXPECT_EQ(Must(kv, Add("heartbeat/0", 0)).number(), 0);
  EXPECT_EQ(Must(kv, Add("heartbeat/0", 5)).number(), 5);
  EXPECT_EQ(Must(kv, Add("heartbeat/0", -7)).number(), -2);
  EXPECT_EQ(Must(kv, Op(Request::GET, "heartbeat/0")).value(), "-2");
}

TEST(RendezvousKv, AddOnTextIsInvalidArgumentAndOverflowIsOutOfRange) {
  RendezvousKv kv;
  Must(kv, Op(Request::SET, "k", "not a number"));
  EXPECT_THAT(kv.Apply(kScope, Add("k", 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, "not an integer"));
  Must(kv, Add("n", INT64_MAX));
  EXPECT_THAT(kv.Apply(kScope, Add("n", 1)),
              StatusIs(absl::StatusCode::kOutOfRange, "overflows int64"));
  EXPECT_EQ(Must(kv, Op(Request::GET, "n")).value(), std::to_string(INT64_MAX));
}

TEST(RendezvousKv, CheckIsTrueOnlyWhenEveryKeyIsPresent) {
  RendezvousKv kv;
  Must(kv, Op(Request::SET, "a", "1"));
  EXPECT_TRUE(Must(kv, Check({"a"})).found());
  EXPECT_FALSE(Must(kv, Check({"a", "b"})).found());
  Must(kv, Op(Request::SET, "b", ""));  // an empty value is still a key
  EXPECT_TRUE(Must(kv, Check({"a", "b"})).found());
}

TEST(RendezvousKv, DeleteSaysWhetherTheKeyExistedAndNumKeysCounts) {
  RendezvousKv kv;
  EXPECT_EQ(Must(kv, Op(Request::NUM_KEYS)).number(), 0);
  Must(kv, Op(Request::SET, "a", "1"));
  Must(kv, Add("b", 1));
  EXPECT_EQ(Must(kv, Op(Request::NUM_KEYS)).number(), 2);
  EXPECT_TRUE(Must(kv, Op(Request::DELETE, "a")).found());
  EXPECT_FALSE(Must(kv, Op(Request::DELETE, "a")).found());
  EXPECT_FALSE(Must(kv, Op(Request::GET, "a")).found());
  EXPECT_EQ(Must(kv, Op(Request::NUM_KEYS)).number(), 1);
}

TEST(RendezvousKv, CompareSetReplacesOnlyTheExpectedValue) {
  RendezvousKv kv;
  // Absent counts as "": an empty expected value creates the key.
  v1::RendezvousResponse r = Must(kv, CompareSet("k", "", "v1"));
  EXPECT_TRUE(r.found());
  EXPECT_EQ(r.value(), "v1");
  r = Must(kv, CompareSet("k", "other", "v2"));  // mismatch: unchanged
  EXPECT_EQ(r.value(), "v1");
  r = Must(kv, CompareSet("k", "v1", "v2"));
  EXPECT_EQ(r.value(), "v2");
  r = Must(kv, CompareSet("absent", "x", "y"));  // absent and a non-empty expected: still absent
  EXPECT_FALSE(r.found());
  EXPECT_EQ(r.value(), "");
  EXPECT_FALSE(Must(kv, Op(Request::GET, "absent")).found());
}

TEST(RendezvousKv, ScopesAreSeparateAndDropForgetsOne) {
  RendezvousKv kv;
  Must(kv, Op(Request::SET, "joined/0", "a"), "job-1/attempt-0");
  Must(kv, Op(Request::SET, "joined/0", "b"), "job-1/attempt-1");
  EXPECT_EQ(kv.scope_count(), 2);
  EXPECT_EQ(Must(kv, Op(Request::GET, "joined/0"), "job-1/attempt-1").value(), "b");
  kv.Drop("job-1/attempt-0");
  kv.Drop("job-9/attempt-0");  // unknown: nothing happens
  EXPECT_EQ(kv.scope_count(), 1);
  EXPECT_FALSE(Must(kv, Op(Request::GET, "joined/0"), "job-1/attempt-0").found());
  EXPECT_EQ(Must(kv, Op(Request::NUM_KEYS), "job-1/attempt-0").number(), 0);
  EXPECT_EQ(Must(kv, Op(Request::GET, "joined/0"), "job-1/attempt-1").value(), "b");
  // Reads do not create scopes.
  EXPECT_EQ(kv.scope_count(), 1);
}

TEST(RendezvousKv, UnknownOpIsInvalidArgumentNamingOp) {
  RendezvousKv kv;
  Request r;
  auto st = kv.Apply(kScope, r);
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kInvalidArgument, "op: unknown operation 0"));
  EXPECT_EQ(ErrorField(st.status()), "op");
  r.set_op(static_cast<Request::Op>(42));
  EXPECT_THAT(kv.Apply(kScope, r), StatusIs(absl::StatusCode::kInvalidArgument, "op:"));
}

TEST(RendezvousKv, EmptyKeyScopeOrKeysAreInvalidArgumentNamingTheField) {
  RendezvousKv kv;
  for (Request::Op op :
       {Request::SET, Request::GET, Request::ADD, Request::DELETE, Request::COMPARE_SET}) {
    SCOPED_TRACE(Request::Op_Name(op));
    auto st = kv.Apply(kScope, Op(op, ""));
    EXPECT_THAT(st, StatusIs(absl::StatusCode::kInvalidArgument, "key: must not be empty"));
    EXPECT_EQ(ErrorField(st.status()), "key");
  }
  EXPECT_THAT(kv.Apply(kScope, Check({})),
              StatusIs(absl::StatusCode::kInvalidArgument, "keys: CHECK needs at least one key"));
  EXPECT_THAT(kv.Apply(kScope, Check({"a", ""})),
              StatusIs(absl::StatusCode::kInvalidArgument, "keys: must not contain an empty"));
  EXPECT_THAT(kv.Apply("", Op(Request::GET, "a")),
              StatusIs(absl::StatusCode::kInvalidArgument, "scope: must not be empty"));
}

TEST(RendezvousKv, LongKeyOrValueIsResourceExhaustedNamingTheLimit) {
  RendezvousKvLimits limits;
  limits.max_key_bytes = 8;
  limits.max_value_bytes = 16;
  RendezvousKv kv(limits);
  EXPECT_THAT(kv.Apply(kScope, Op(Request::SET, "123456789", "v")),
              StatusIs(absl::StatusCode::kResourceExhausted, "max_key_bytes (8)"));
  EXPECT_THAT(kv.Apply(kScope, Op(Request::SET, "k", std::string(17, 'x'))),
              StatusIs(absl::StatusCode::kResourceExhausted, "max_value_bytes (16)"));
  EXPECT_THAT(kv.Apply(kScope, CompareSet("k", "", std::string(17, 'x'))),
              StatusIs(absl::StatusCode::kResourceExhausted, "max_value_bytes (16)"));
  Must(kv, Op(Request::SET, "k", std::string(16, 'x')));
  EXPECT_EQ(kv.scope_count(), 1);
}

TEST(RendezvousKv, TooManyKeysIsResourceExhaustedButOverwritesAndDeletesStillWork) {
  RendezvousKvLimits limits;
  limits.max_keys_per_scope = 3;
  RendezvousKv kv(limits);
  for (const char* k : {"a", "b", "c"}) Must(kv, Op(Request::SET, k, "1"));
  EXPECT_THAT(kv.Apply(kScope, Op(Request::SET, "d", "1")),
              StatusIs(absl::StatusCode::kResourceExhausted, "max_keys_per_scope (3)"));
  EXPECT_THAT(kv.Apply(kScope, Add("d", 1)),
              StatusIs(absl::StatusCode::kResourceExhausted, "max_keys_per_scope (3)"));
  EXPECT_FALSE(Must(kv, Op(Request::GET, "d")).found());  // a failed write changes nothing
  Must(kv, Op(Request::SET, "a", "2"));                   // an existing key may change
  EXPECT_TRUE(Must(kv, Op(Request::DELETE, "c")).found());
  Must(kv, Op(Request::SET, "d", "1"));
  // Another scope has its own count.
  Must(kv, Op(Request::SET, "d", "1"), "job-2/attempt-0");
}

TEST(RendezvousKv, ScopeAndTotalBytesAreResourceExhaustedUntilSpaceIsFreed) {
  RendezvousKvLimits limits;
  limits.max_scope_bytes = 100;
  limits.max_total_bytes = 150;
  RendezvousKv kv(limits);
  Must(kv, Op(Request::SET, "a", std::string(89, 'x')));  // 90 bytes with its key
  EXPECT_THAT(kv.Apply(kScope, Op(Request::SET, "b", std::string(10, 'x'))),
              StatusIs(absl::StatusCode::kResourceExhausted, "max_scope_bytes (100)"));
  Must(kv, Op(Request::SET, "b", std::string(9, 'x')));  // exactly 100
  // Growing a value counts only the growth; shrinking frees.
  Must(kv, Op(Request::SET, "a", std::string(80, 'x')));
  Must(kv, Op(Request::SET, "b", std::string(18, 'x')));
  Must(kv, Op(Request::SET, "a", std::string(39, 'x')), "job-2/attempt-0");  // total 140
  EXPECT_THAT(kv.Apply("job-2/attempt-0", Op(Request::SET, "c", std::string(10, 'x'))),
              StatusIs(absl::StatusCode::kResourceExhausted, "max_total_bytes (150)"));
  kv.Drop(kScope);
  Must(kv, Op(Request::SET, "c", std::string(10, 'x')), "job-2/attempt-0");
}

TEST(RendezvousKv, TooManyScopesIsResourceExhaustedUntilOneIsDropped) {
  RendezvousKvLimits limits;
  limits.max_scopes = 2;
  RendezvousKv kv(limits);
  Must(kv, Op(Request::SET, "k", "v"), "s1");
  Must(kv, Op(Request::SET, "k", "v"), "s2");
  EXPECT_THAT(kv.Apply("s3", Op(Request::SET, "k", "v")),
              StatusIs(absl::StatusCode::kResourceExhausted, "max_scopes (2)"));
  EXPECT_FALSE(Must(kv, Op(Request::GET, "k"), "s3").found());  // reads still answer
  kv.Drop("s1");
  Must(kv, Op(Request::SET, "k", "v"), "s3");
}

TEST(RendezvousKv, ConcurrentAddsFromManyThreadsAreAllCounted) {
  RendezvousKv kv;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&kv, t] {
      for (int i = 0; i < 500; ++i) {
        ASSERT_TRUE(kv.Apply(kScope, Add("n", 1)).ok());
        ASSERT_TRUE(kv.Apply(absl::StrCat("s", t), Add("n", 1)).ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(Must(kv, Add("n", 0)).number(), 4000);
  EXPECT_EQ(kv.scope_count(), 9);
}

}  // namespace
}  // namespace logit
