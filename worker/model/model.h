// A trained logistic-regression model on raw (unstandardised) features. LibTorch-free.
#ifndef LOGIT_WORKER_MODEL_MODEL_H_
#define LOGIT_WORKER_MODEL_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace logit {

struct LinearModel {
  int64_t num_features = 0;  // d
  int64_t num_classes = 0;   // K >= 2
  // Row-major d x OutputColumns(): one column (sigmoid) for K == 2, K columns (softmax) otherwise.
  std::vector<float> weights;
  std::vector<float> bias;  // OutputColumns() entries (zero when trained without bias)
  // Class k's name when the training labels were strings (num_classes entries, sorted as
  // scikit-learn's classes_); empty when the labels were the class indices themselves.
  std::vector<std::string> class_names;

  int64_t OutputColumns() const { return num_classes == 2 ? 1 : num_classes; }
  bool IsBinary() const { return num_classes == 2; }
};

}  // namespace logit

#endif  // LOGIT_WORKER_MODEL_MODEL_H_
