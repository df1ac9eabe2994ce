// The CLI's management subcommands, kubectl-style: list and delete the server's models and
// datasets (`logit models`, `logit model rm`, `logit datasets`, `logit dataset rm`), and the
// table helpers they share with `logit jobs`.
//
// Each Run* function prints its result to `out` (a table, or with -o json|yaml the API's list
// response, e.g. {"models": [...]}, see client/output.h) and its diagnostics to `err`, and returns the
// CLI exit code: 0 ok, 1 refused or failed, 2 usage, 3 server unreachable or credentials
// refused, 4 not found. Given several ids, each is attempted and the worst (highest) code is
// returned.
#ifndef LOGIT_CLIENT_MANAGE_H_
#define LOGIT_CLIENT_MANAGE_H_

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "client/remote.h"
#include "grpcpp/support/status.h"

namespace logit {

// `logit models`: the server's models, newest first.
int RunModels(const RemoteOptions& options, std::ostream& out, std::ostream& err);
// `logit model rm MODEL...`.
int RunModelRm(const RemoteOptions& options, const std::vector<std::string>& model_ids,
               std::ostream& out, std::ostream& err);
// `logit datasets [--sha256 HEX]`: the server's datasets, newest first.
int RunDatasets(const RemoteOptions& options, const std::string& sha256, std::ostream& out,
                std::ostream& err);
// `logit dataset rm DATASET...` (ids as `dataset-N` or `dataset:dataset-N`). The server refuses
// a dataset that an unfinished job needs (exit 1, naming the jobs).
int RunDatasetRm(const RemoteOptions& options, const std::vector<std::string>& dataset_ids,
                 std::ostream& out, std::ostream& err);

// A duration as kubectl prints ages: "45s", "3m12s", "25m", "2h5m", "30h", "3d4h", "40d"
// (precision falls as it grows; negative durations print as "0s"). Unlike kubectl, 1-3 hours
// show as hours and minutes ("2h5m", not "125m").
std::string HumanDuration(double seconds);
// A size in bytes: "812B", "4.5KiB", "1.2MiB", "3.0GiB".
std::string HumanBytes(int64_t bytes);
// Prints `rows` (the first one the header) as columns separated by three spaces, each as wide
// as its widest cell; the last column is not padded.
void PrintTable(const std::vector<std::vector<std::string>>& rows, std::ostream& out);

}  // namespace logit

#endif  // LOGIT_CLIENT_MANAGE_H_
