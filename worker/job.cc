#include "worker/job.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/common/status.h"
#include "worker/kernel/collective.h"

namespace logit {

absl::StatusOr<JobOutcome> RunTrainingJob(const DataConfig& data, const TrainOptions& spec_options,
                                          Collective* collective, const JobHooks& hooks) {
  TrainOptions options = spec_options;  // string labels set the class count
  ReadOptions ro = data.train;
  ro.map_rows = true;  // .npy rows stay in the page cache: data larger than memory trains
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
    o.class_names = all->class_names;  // names map as in the training file
    if (all->storage != FeatureStorage::kSparseCsr) o.num_features = all->num_features;
    // An extra file whose name tells nothing is read in the training file's format.
    if (o.format == DataFormat::kAuto && !InferDataFormat(path).ok()) {
      auto train_format = InferDataFormat(ro.path);
      if (train_format.ok()) o.format = *train_format;
    }
    auto d = ReadDataset(o);
    if (!d.ok()) return d.status();
    if (o.class_names.empty() && !d->class_names.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": labels are names ('", d->class_names.front(), "', ...) but ",
                       ro.path, "'s labels are numbers"));
    }
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
  // String labels: the sorted names are the classes (every rank read the same names).
  const std::vector<std::string> class_names = all->class_names;
  if (!class_names.empty()) {
    if (class_names.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat(ro.path, ": every label is '",
                                                     class_names.front(),
                                                     "': a classifier needs two classes or more"));
    }
    options.classes = static_cast<int64_t>(class_names.size());
  }

  Dataset train, val, test;
  bool has_val = val_file->has_value(), has_test = test_file->has_value();
  if (data.val_split > 0 || data.test_split > 0) {
    SplitIndices split;
    if (data.stratify) {
      // Classes over all ranks, then each class's cut-offs over all ranks.
      int64_t classes = options.classes;
      if (classes <= 0) {
        at::Tensor max_label = at::full({1}, static_cast<double>(all->MaxLabel()), at::kDouble);
        if (collective != nullptr) RETURN_IF_ERROR(collective->AllReduceMax(max_label));
        classes = std::max<int64_t>(2, static_cast<int64_t>(max_label.item<double>()) + 1);
      }
      SumOverRanks sum;
      if (collective != nullptr) {
        sum = [collective](std::vector<double>* counts) {
          at::Tensor t = at::from_blob(counts->data(), {static_cast<int64_t>(counts->size())},
                                       at::kDouble)
                             .clone();
          RETURN_IF_ERROR(collective->AllReduceSum(t));
          std::copy(t.data_ptr<double>(), t.data_ptr<double>() + counts->size(), counts->begin());
          return absl::OkStatus();
        };
      }
      ASSIGN_OR_RETURN(split, StratifiedSplitRows(*all, classes, data.val_split, data.test_split,
                                                  options.seed, sum));
    } else {
      split = SplitRows(*all, data.val_split, data.test_split, options.seed);
    }
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
  in.stop = hooks.stop;
  in.on_step = hooks.on_step;
  in.resume = hooks.resume;
  in.checkpoint_every = hooks.checkpoint_every;
  in.on_checkpoint = hooks.on_checkpoint;
  auto result = Train(options, in, hooks.on_epoch, collective);
  if (!result.ok()) return result.status();
  JobOutcome out;
  out.result = std::move(*result);
  out.result.model.class_names = class_names;
  // A class the model knows (declared by --classes, or below the largest label) that no
  // training row has: its weights are only the penalty's.
  if (out.result.train_metrics) {
    const auto& support = out.result.train_metrics->support;
    std::vector<std::string> empty;
    for (size_t k = 0; k < support.size(); ++k) {
      if (support[k] == 0) empty.push_back(class_names.empty() ? absl::StrCat(k) : class_names[k]);
    }
    if (!empty.empty()) {
      out.warnings.push_back(absl::StrCat("no training rows of class",
                                          empty.size() > 1 ? "es " : " ", absl::StrJoin(empty, ", "),
                                          " of ", support.size(), " (is the class count right?)"));
    }
  }
  // Row counts over all ranks (the metrics are global).
  const auto& r = out.result;
  out.train_rows = r.train_metrics ? r.train_metrics->rows : train.num_rows;
  out.val_rows = r.val_metrics ? r.val_metrics->rows : has_val ? val.num_rows : 0;
  out.test_rows = r.test_metrics ? r.test_metrics->rows : has_test ? test.num_rows : 0;
  out.classes = out.result.model.num_classes;
  return out;
}

}  // namespace logit
