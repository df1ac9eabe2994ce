#include "worker/job.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "worker/kernel/collective.h"

namespace logit {

absl::Status ValidateDataConfig(const DataConfig& c) {
  auto frac_ok = [](double f) { return std::isfinite(f) && f >= 0 && f < 1; };
  if (!frac_ok(c.val_split)) {
    return absl::InvalidArgumentError(
        absl::StrCat("val_split: must be in [0, 1), got ", c.val_split));
  }
  if (!frac_ok(c.test_split)) {
    return absl::InvalidArgumentError(
        absl::StrCat("test_split: must be in [0, 1), got ", c.test_split));
  }
  if (c.val_split + c.test_split >= 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "val_split: val_split + test_split must be < 1, got ", c.val_split + c.test_split));
  }
  if (!c.val_path.empty() && c.val_split > 0) {
    return absl::InvalidArgumentError("val_split: give either val_data or val_split, not both");
  }
  if (!c.test_path.empty() && c.test_split > 0) {
    return absl::InvalidArgumentError("test_split: give either test_data or test_split, not both");
  }
  if (c.train.path.empty()) return absl::InvalidArgumentError("data: no training data file given");
  return absl::OkStatus();
}

absl::StatusOr<JobOutcome> RunTrainingJob(const DataConfig& data, const TrainOptions& options,
                                          const EpochCallback& on_epoch, Collective* collective,
                                          const std::atomic<bool>* stop,
                                          const StepCallback& on_step) {
  absl::Status st = ValidateTrainOptions(options);
  if (!st.ok()) return st;
  st = ValidateDataConfig(data);
  if (!st.ok()) return st;
  ReadOptions ro = data.train;
  if (options.classes > 0) ro.classes = options.classes;
  if (collective != nullptr) {  // each rank reads only its shard of every file
    ro.rank = collective->rank();
    ro.world = collective->world_size();
  }
  auto all = ReadDataset(ro);

  auto read_extra = [&](const std::string& path,
                        const std::string& labels) -> absl::StatusOr<std::optional<Dataset>> {
    if (path.empty()) return std::optional<Dataset>();
    ReadOptions o = ro;
    o.path = path;
    o.labels_path = labels;
    if (all->storage != FeatureStorage::kSparseCsr) o.num_features = all->num_features;
    // An extra file whose name tells nothing is read in the training file's format.
    if (o.format == DataFormat::kAuto && !InferDataFormat(path).ok()) {
      auto train_format = InferDataFormat(ro.path);
      if (train_format.ok()) o.format = *train_format;
    }
    auto d = ReadDataset(o);
    if (!d.ok()) return d.status();
    return std::optional<Dataset>(std::move(*d));
  };
  absl::StatusOr<std::optional<Dataset>> val_file = std::optional<Dataset>();
  absl::StatusOr<std::optional<Dataset>> test_file = std::optional<Dataset>();
  if (all.ok()) val_file = read_extra(data.val_path, data.val_labels);
  if (all.ok() && val_file.ok()) test_file = read_extra(data.test_path, data.test_labels);
  // A bad line in one shard stops every rank with that rank's reason.
  absl::Status read_status = !all.ok()        ? all.status()
                             : !val_file.ok() ? val_file.status()
                                              : test_file.status();
  if (collective != nullptr) read_status = collective->Agree(read_status);
  if (!read_status.ok()) return read_status;

  Dataset train, val, test;
  bool has_val = val_file->has_value(), has_test = test_file->has_value();
  if (data.val_split > 0 || data.test_split > 0) {
    const SplitIndices split = SplitRows(*all, data.val_split, data.test_split, options.seed);
    train = TakeRows(*all, split.train);
    if (data.val_split > 0) {
      val = TakeRows(*all, split.val);
      has_val = true;
    }
    if (data.test_split > 0) {
      test = TakeRows(*all, split.test);
      has_test = true;
    }
    *all = Dataset();  // release the unsplit copy
  } else {
    train = std::move(*all);
  }
  if (val_file->has_value()) val = std::move(**val_file);
  if (test_file->has_value()) test = std::move(**test_file);

  TrainInputs in;
  in.train = &train;
  in.val = has_val ? &val : nullptr;
  in.test = has_test ? &test : nullptr;
  in.stop = stop;
  in.on_step = on_step;
  auto result = Train(options, in, on_epoch, collective);
  if (!result.ok()) return result.status();
  JobOutcome out;
  out.result = std::move(*result);
  // Row counts over all ranks (the metrics are global).
  const auto& r = out.result;
  out.train_rows = r.train_metrics ? r.train_metrics->rows : train.num_rows;
  out.val_rows = r.val_metrics ? r.val_metrics->rows : has_val ? val.num_rows : 0;
  out.test_rows = r.test_metrics ? r.test_metrics->rows : has_test ? test.num_rows : 0;
  out.classes = out.result.model.num_classes;
  return out;
}

nlohmann::json SummaryJson(const JobOutcome& o, const TrainOptions& opt) {
  const TrainResult& r = o.result;
  nlohmann::json history = nlohmann::json::array();
  for (const EpochRecord& e : r.history) {
    nlohmann::json h = {{"epoch", e.epoch},
                        {"train_loss", e.train_loss},
                        {"objective", e.objective},
                        {"seconds", e.seconds}};
    if (!std::isnan(e.val_loss)) h["val_loss"] = e.val_loss;
    if (!std::isnan(e.val_accuracy)) h["val_accuracy"] = e.val_accuracy;
    history.push_back(h);
  }
  nlohmann::json j = {
      {"epochs_run", r.epochs_run},
      {"stop_reason", StopReasonName(r.stop_reason)},
      {"function_evaluations", r.function_evaluations},
      {"train_loss", r.train_loss},
      {"objective", r.objective},
      {"wall_seconds", r.wall_seconds},
      {"device", r.device},
      {"classes", o.classes},
      {"features", r.model.num_features},
      {"rows", {{"train", o.train_rows}, {"val", o.val_rows}, {"test", o.test_rows}}},
      {"options",
       {{"optimizer", OptimizerName(opt.optimizer)},
        {"lr", EffectiveLearningRate(opt)},
        {"batch_size", opt.batch_size},
        {"epochs", EffectiveEpochs(opt)},
        {"tol", opt.tol},
        {"l1", opt.l1},
        {"l2", opt.l2},
        {"class_weight", opt.class_weight},
        {"standardize", opt.standardize},
        {"bias", opt.fit_bias},
        {"seed", opt.seed}}},
      {"history", history}};
  j["val_accuracy"] = r.val_metrics ? nlohmann::json(r.val_metrics->accuracy) : nlohmann::json();
  j["test_accuracy"] = r.test_metrics ? nlohmann::json(r.test_metrics->accuracy) : nlohmann::json();
  j["train_accuracy"] =
      r.train_metrics ? nlohmann::json(r.train_metrics->accuracy) : nlohmann::json();
  nlohmann::json metrics;
  if (r.train_metrics) metrics["train"] = *r.train_metrics;
  if (r.val_metrics) metrics["val"] = *r.val_metrics;
  if (r.test_metrics) metrics["test"] = *r.test_metrics;
  j["metrics"] = metrics;
  return j;
}

}  // namespace logit
