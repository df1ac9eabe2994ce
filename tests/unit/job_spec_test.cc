// PlanJob is the one conversion from a JobSpec to the job the kernel runs: every JobSpec field
// must change the plan (or be listed in JobSpecFieldsNotPlanned), every field has its flag, and
// every bad value is refused naming its field.
#include "worker/job_spec.h"

#include <map>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_replace.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "logit/v1/training.pb.h"
#include "tests/unit/test_util.h"
#include "worker/common/status.h"
#include "worker/job_cli.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

// Every member of a plan, printed: two plans that print alike are alike. A member added to
// JobPlan, DataConfig, ReadOptions or TrainOptions must be added here too, or the descriptor
// test below cannot see the field that feeds it.
std::string Describe(const JobPlan& p) {
  std::ostringstream s;
  const ReadOptions& r = p.data.train;
  s << "data " << r.path << "|" << r.labels_path << "|" << static_cast<int>(r.format) << "|"
    << r.label_column << "|" << r.classes << "|" << r.num_features << "|" << r.pixel_scale << "|"
    << r.rank << "|" << r.world << "|" << r.require_labels << "\n";
  s << "extra " << p.data.val_path << "|" << p.data.val_labels << "|" << p.data.test_path << "|"
    << p.data.test_labels << "|" << p.data.val_split << "|" << p.data.test_split << "|"
    << p.data.stratify << "\n";
  const TrainOptions& o = p.train;
  s << "train " << o.classes << "|" << o.fit_bias << "|" << static_cast<int>(o.optimizer) << "|"
    << (o.lr ? *o.lr : -1) << "|" << o.momentum << "|" << o.nesterov << "|" << o.beta1 << "|"
    << o.beta2 << "|" << o.adam_eps << "|" << o.batch_size << "|" << (o.epochs ? *o.epochs : -1)
    << "|" << o.tol << "|" << o.l1 << "|" << o.l2 << "|" << o.C << "|" << o.class_weight << "|"
    << o.standardize
    << "|" << o.early_stopping_patience << "|" << o.seed << "|" << o.lbfgs_history << "|"
    << static_cast<int>(o.precision) << "|" << o.threads << "|" << o.device << "\n";
  s << "service " << p.workers << "|" << p.deadline_seconds << "|"
    << (p.checkpoint_every ? *p.checkpoint_every : -1) << "|" << p.max_retries << "|"
    << p.min_workers << "|" << p.name << "\n";
  s << "labels";
  for (const auto& [key, value] : p.labels) s << " " << key << "=" << value;
  s << "\n";
  return s.str();
}

// A valid value different from the default for every JobSpec field, as text-format. A new
// field fails the test until it gets a value here (and is used by PlanJob).
const std::map<std::string, std::string>& ValidValues() {
  static const auto* const values = new std::map<std::string, std::string>{
      {"data", "data: 'other.csv'"},
      {"labels", "labels: 'y.npy'"},
      {"format", "format: 'libsvm'"},
      {"label_column", "label_column: 'target'"},
      {"classes", "classes: 3"},
      {"features", "features: 7"},
      {"bias", "bias: false"},
      {"optimizer", "optimizer: SGD"},
      {"lr", "lr: 0.5"},
      {"momentum", "momentum: 0.5"},
      {"nesterov", "nesterov: true"},
      {"batch_size", "batch_size: 32"},
      {"epochs", "epochs: 5"},
      {"tol", "tol: 0.001"},
      {"l1", "l1: 0.1"},
      {"l2", "l2: 0.1"},
      {"c", "c: 0.5"},
      {"stratify", "stratify: false"},
      {"penalty", "penalty: 'none'"},
      {"class_weight", "class_weight: 'balanced'"},
      {"val_split", "val_split: 0.1"},
      {"test_split", "test_split: 0.1"},
      {"val_data", "val_data: 'v.csv'"},
      {"val_labels", "val_labels: 'vy.npy'"},
      {"test_data", "test_data: 't.csv'"},
      {"test_labels", "test_labels: 'ty.npy'"},
      {"standardize", "standardize: true"},
      {"workers", "workers: 3"},
      {"device", "device: 'auto'"},
      {"seed", "seed: 9"},
      {"checkpoint_every", "checkpoint_every: 2"},
      {"early_stopping_patience", "early_stopping_patience: 3"},
      {"precision", "precision: FLOAT32"},
      {"no_pixel_scale", "no_pixel_scale: true"},
      {"lbfgs_history", "lbfgs_history: 7"},
      {"name", "name: 'nightly'"},
      {"deadline_seconds", "deadline_seconds: 60"},
      {"max_retries", "max_retries: 0"},
      {"min_workers", "min_workers: 2"},
      {"job_labels", "job_labels { key: 'team' value: 'search' }"},
  };
  return *values;
}

v1::JobSpec BaseSpec() {
  v1::JobSpec spec;
  spec.set_data("x.csv");
  return spec;
}

// What a field needs set beside it to be valid (both in the reference and the changed spec).
v1::JobSpec BaseSpecFor(const std::string& field) {
  v1::JobSpec spec = BaseSpec();
  if (field == "nesterov") spec.set_momentum(0.5);
  if (field == "min_workers") spec.set_workers(3);
  return spec;
}

TEST(PlanJob, EveryJobSpecFieldChangesThePlanOrIsListedAsNotPlanned) {
  const google::protobuf::Descriptor* d = v1::JobSpec::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const std::string name = d->field(i)->name();
    SCOPED_TRACE(name);
    if (JobSpecFieldsNotPlanned().count(name) > 0) continue;
    const auto value = ValidValues().find(name);
    ASSERT_NE(value, ValidValues().end())
        << "JobSpec." << name << " is new: read it in PlanJob (worker/job_spec.cc), give it a "
        << "flag (worker/job_cli.cc), and a value in this test's ValidValues()";
    auto base = PlanJob(BaseSpecFor(name));
    ASSERT_TRUE(base.ok()) << base.status();
    v1::JobSpec spec = BaseSpecFor(name);
    ASSERT_TRUE(google::protobuf::TextFormat::MergeFromString(value->second, &spec));
    auto plan = PlanJob(spec);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_NE(Describe(*plan), Describe(*base)) << "PlanJob ignores JobSpec." << name;
  }
}

TEST(PlanJob, EveryJobSpecFieldHasItsFlag) {
  CLI::App app;
  v1::JobSpec spec;
  AddJobFlags(&app, &spec);
  const google::protobuf::Descriptor* d = v1::JobSpec::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const std::string name = d->field(i)->name();
    std::string flag = "--" + absl::StrReplaceAll(name, {{"_", "-"}});
    if (name == "deadline_seconds") flag = "--deadline";
    if (name == "job_labels") flag = "--label";
    if (name == "c") flag = "--C";
    EXPECT_NE(app.get_option_no_throw(flag), nullptr) << "JobSpec." << name << " has no " << flag;
  }
}

TEST(PlanJob, FlagsWriteTheirFieldsOverALoadedSpec) {
  CLI::App app;
  v1::JobSpec spec;
  spec.set_data("from-file.csv");
  spec.set_l2(0.5);
  AddJobFlags(&app, &spec);
  app.parse(std::vector<std::string>{"--no-bias", "sgd", "--optimizer", "0.25", "--l1"});
  EXPECT_EQ(spec.data(), "from-file.csv");
  EXPECT_EQ(spec.l2(), 0.5);
  EXPECT_EQ(spec.l1(), 0.25);
  EXPECT_EQ(spec.optimizer(), v1::SGD);
  ASSERT_TRUE(spec.has_bias());
  EXPECT_FALSE(spec.bias());
}

TEST(PlanJob, RegularisationDefaultsToScikitLearnsCOfOne) {
  v1::JobSpec spec = BaseSpec();
  auto plan = PlanJob(spec);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->train.C, 1.0);  // LogisticRegression()'s C
  spec.set_l2(0.01);  // an explicit penalty replaces it
  EXPECT_EQ(PlanJob(spec)->train.C, 0.0);
  spec.clear_l2();
  spec.set_l1(0.01);
  EXPECT_EQ(PlanJob(spec)->train.C, 0.0);
  spec.clear_l1();
  spec.set_penalty("none");
  EXPECT_EQ(PlanJob(spec)->train.C, 0.0);
  EXPECT_EQ(PlanJob(spec)->train.l2, 0.0);
  spec.set_c(10);
  EXPECT_THAT(PlanJob(spec).status(), StatusIs(absl::StatusCode::kInvalidArgument, "penalty:"));
  spec.clear_penalty();
  EXPECT_EQ(PlanJob(spec)->train.C, 10.0);
  spec.set_l2(0.1);
  EXPECT_THAT(PlanJob(spec).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "c: give C or l2, not both"));
}

TEST(PlanJob, DefaultsAreResolvedOnce) {
  auto plan = PlanJob(BaseSpec());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->workers, 1);
  EXPECT_TRUE(plan->train.fit_bias);
  EXPECT_EQ(plan->train.optimizer, OptimizerKind::kLbfgs);
  EXPECT_EQ(plan->train.batch_size, 256);
  EXPECT_EQ(plan->train.tol, 1e-6);
  EXPECT_EQ(plan->train.device, "cpu");
  EXPECT_TRUE(plan->data.train.pixel_scale);
  EXPECT_EQ(plan->train.precision, Precision::kAuto);
}

TEST(PlanJob, EachBadValueIsRefusedNamingItsField) {
  const std::map<std::string, std::string> bad = {
      {"data", "data: ''"},
      {"format", "format: 'parquet'"},
      {"classes", "classes: 1"},
      {"lr", "lr: -1"},
      {"momentum", "momentum: 1"},
      {"nesterov", "nesterov: true"},
      {"batch_size", "batch_size: -5"},
      {"epochs", "epochs: 0"},
      {"tol", "tol: 0"},
      {"l1", "l1: -1"},
      {"l2", "l2: nan"},
      {"c", "c: 0"},
      {"penalty", "penalty: 'l3'"},
      {"class_weight", "class_weight: 'heavy'"},
      {"val_split", "val_split: 0.6 test_split: 0.5"},
      {"test_split", "test_split: 1"},
      {"workers", "workers: -2"},
      {"device", "device: 'tpu'"},
      {"checkpoint_every", "checkpoint_every: -1"},
      {"early_stopping_patience", "early_stopping_patience: -1"},
      {"lbfgs_history", "lbfgs_history: -1"},
      {"deadline_seconds", "deadline_seconds: inf"},
      {"max_retries", "max_retries: -1"},
      {"min_workers", "min_workers: 2"},
      {"optimizer", "optimizer: 42"},
      {"precision", "precision: 42"},
      {"job_labels", "job_labels { key: 'has space' value: 'x' }"},
  };
  for (const auto& [field, text] : bad) {
    SCOPED_TRACE(text);
    v1::JobSpec spec = BaseSpec();
    ASSERT_TRUE(google::protobuf::TextFormat::MergeFromString(text, &spec));
    auto plan = PlanJob(spec);
    EXPECT_THAT(plan.status(), StatusIs(kInvalid, field + ":"));
    EXPECT_EQ(ErrorField(plan.status()).value_or("(none)"), field);
  }
}

TEST(PlanJob, ValAndTestSplitsSummingToOneOrMoreAreRefused) {
  v1::JobSpec spec = BaseSpec();
  spec.set_val_split(0.6);
  spec.set_test_split(0.4);
  EXPECT_THAT(PlanJob(spec).status(),
              StatusIs(kInvalid, "val_split: val_split + test_split must be < 1"));
  spec.set_val_split(0);
  spec.set_test_split(0.2);
  spec.set_test_data("t.csv");
  EXPECT_THAT(PlanJob(spec).status(), StatusIs(kInvalid, "test_split: give either test_data"));
}

TEST(PlanJob, JobLabelsFollowKubernetesRules) {
  v1::JobSpec spec = BaseSpec();
  (*spec.mutable_job_labels())["app.example.com/team-1_x"] = std::string(63, 'v');
  auto plan = PlanJob(spec);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->labels.at("app.example.com/team-1_x"), std::string(63, 'v'));
  (*spec.mutable_job_labels())["app.example.com/team-1_x"] = std::string(64, 'v');
  EXPECT_THAT(PlanJob(spec).status(), StatusIs(kInvalid, "job_labels: the value of"));
  spec.clear_job_labels();
  (*spec.mutable_job_labels())[std::string(64, 'k')] = "v";
  EXPECT_THAT(PlanJob(spec).status(), StatusIs(kInvalid, "job_labels: key"));
  spec.clear_job_labels();
  (*spec.mutable_job_labels())[""] = "v";
  EXPECT_THAT(PlanJob(spec).status(), StatusIs(kInvalid, "job_labels: key ''"));
}

TEST(PlanJob, LabelFlagsAddToTheLabelsOfALoadedSpec) {
  CLI::App app;
  v1::JobSpec spec;
  (*spec.mutable_job_labels())["team"] = "from-file";
  (*spec.mutable_job_labels())["keep"] = "1";
  AddJobFlags(&app, &spec);
  app.parse(std::vector<std::string>{"env=prod,tier=2", "--label", "team=search", "--label"});
  EXPECT_EQ(spec.job_labels().size(), 4u);
  EXPECT_EQ(spec.job_labels().at("team"), "search");
  EXPECT_EQ(spec.job_labels().at("keep"), "1");
  EXPECT_EQ(spec.job_labels().at("env"), "prod");
  EXPECT_EQ(spec.job_labels().at("tier"), "2");
  CLI::App bad;
  v1::JobSpec other;
  AddJobFlags(&bad, &other);
  try {
    bad.parse(std::vector<std::string>{"novalue", "--label"});
    ADD_FAILURE() << "--label novalue was accepted";
  } catch (const CLI::ParseError& e) {
    EXPECT_NE(std::string(e.what()).find("--label"), std::string::npos) << e.what();
  }
}

TEST(FlagMessage, SpellsTheFieldAsItsFlag) {
  EXPECT_EQ(FlagMessage(FieldError("batch_size", "must be >= 1")), "--batch-size: must be >= 1");
  EXPECT_EQ(FlagMessage(FieldError("deadline_seconds", "bad")), "--deadline: bad");
  EXPECT_EQ(FlagMessage(FieldError("job_labels", "bad")), "--label: bad");
  // No field payload: the message as it is, even when it looks like "name: ...".
  EXPECT_EQ(FlagMessage(absl::InvalidArgumentError("iris.csv: line 3: bad")),
            "iris.csv: line 3: bad");
}

}  // namespace
}  // namespace logit
