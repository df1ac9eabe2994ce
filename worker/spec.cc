#include "worker/spec.h"

namespace logit {

JobFlags JobFlagsFromSpec(const v1::JobSpec& s) {
  JobFlags f;
  f.data = s.data();
  f.labels = s.labels();
  f.format = s.format();
  f.label_column = s.label_column();
  f.classes = s.classes();
  f.features = s.features();
  f.bias = s.has_bias() ? s.bias() : true;
  if (!s.optimizer().empty()) f.optimizer = s.optimizer();
  if (s.has_lr()) f.lr = s.lr();
  f.momentum = s.momentum();
  f.nesterov = s.nesterov();
  if (s.batch_size() != 0) f.batch_size = s.batch_size();
  if (s.has_epochs()) f.epochs = s.epochs();
  if (s.has_tol()) f.tol = s.tol();
  f.l1 = s.l1();
  f.l2 = s.l2();
  f.class_weight = s.class_weight();
  f.val_split = s.val_split();
  f.test_split = s.test_split();
  f.val_data = s.val_data();
  f.val_labels = s.val_labels();
  f.test_data = s.test_data();
  f.test_labels = s.test_labels();
  f.standardize = s.standardize();
  f.workers = s.workers() == 0 ? 1 : s.workers();
  if (!s.device().empty()) f.device = s.device();
  f.seed = s.seed();
  f.checkpoint_every = s.checkpoint_every();
  f.patience = s.early_stopping_patience();
  if (!s.precision().empty()) f.precision = s.precision();
  f.no_pixel_scale = s.no_pixel_scale();
  f.lbfgs_history = s.lbfgs_history();
  f.deadline_seconds = s.deadline_seconds();
  return f;
}

v1::JobSpec SpecFromJobFlags(const JobFlags& f) {
  v1::JobSpec s;
  s.set_data(f.data);
  s.set_labels(f.labels);
  s.set_format(f.format);
  s.set_label_column(f.label_column);
  s.set_classes(f.classes);
  s.set_features(f.features);
  s.set_bias(f.bias);
  s.set_optimizer(f.optimizer);
  if (f.lr) s.set_lr(*f.lr);
  s.set_momentum(f.momentum);
  s.set_nesterov(f.nesterov);
  s.set_batch_size(f.batch_size);
  if (f.epochs) s.set_epochs(*f.epochs);
  s.set_tol(f.tol);
  s.set_l1(f.l1);
  s.set_l2(f.l2);
  s.set_class_weight(f.class_weight);
  s.set_val_split(f.val_split);
  s.set_test_split(f.test_split);
  s.set_val_data(f.val_data);
  s.set_val_labels(f.val_labels);
  s.set_test_data(f.test_data);
  s.set_test_labels(f.test_labels);
  s.set_standardize(f.standardize);
  s.set_workers(f.workers);
  s.set_device(f.device);
  s.set_seed(f.seed);
  s.set_checkpoint_every(f.checkpoint_every);
  s.set_early_stopping_patience(f.patience);
  s.set_precision(f.precision);
  s.set_no_pixel_scale(f.no_pixel_scale);
  s.set_lbfgs_history(f.lbfgs_history);
  s.set_deadline_seconds(f.deadline_seconds);
  return s;
}

}  // namespace logit
