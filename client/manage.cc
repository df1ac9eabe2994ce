#include "client/manage.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <ostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli.h"
#include "client/output.h"
#include "google/protobuf/util/time_util.h"
#include "logit/v1/training.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace logit {

namespace {

using google::protobuf::util::TimeUtil;

// Time since `t`, as "AGE" columns show it; "-" when unset.
std::string Age(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  const int64_t now = absl::ToUnixNanos(absl::Now());
  return HumanDuration(static_cast<double>(now - TimeUtil::TimestampToNanoseconds(t)) / 1e9);
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// Deletes each id with `remove` (which returns the call's status), printing one line per id
// (or, with -o json|yaml, one object {KIND_id, deleted, error} per id). Returns the worst exit
// code.
template <typename Remove>
int RemoveEach(const RemoteOptions& o, const std::string& what, const std::string& kind,
               const std::vector<std::string>& ids, Remove remove, std::ostream& out,
               std::ostream& err) {
  int worst = kExitOk;
  for (const std::string& id : ids) {
    const grpc::Status st = remove(id);
    nlohmann::json r = {{kind + "_id", id}, {"deleted", st.ok()}};
    if (st.ok()) {
      if (!o.structured()) out << kind << " " << id << " deleted\n";
    } else {
      worst = std::max(worst, RpcError(o, what, st, err));
      r["error"] = st.error_message();
    }
    if (o.structured()) PrintStructured(r, o.output, out);
  }
  return worst;
}

}  // namespace

std::string HumanDuration(double seconds_d) {
  // kubectl's rule (k8s.io/apimachinery duration.HumanDuration): fewer units as it grows; but
  // from one hour on in hours and minutes ("2h5m" where kubectl prints "125m").
  const int64_t seconds = static_cast<int64_t>(seconds_d);
  if (seconds < 0) return "0s";
  if (seconds < 60 * 2) return absl::StrCat(seconds, "s");
  const int64_t minutes = seconds / 60;
  if (minutes < 10) {
    return seconds % 60 == 0 ? absl::StrCat(minutes, "m")
                             : absl::StrCat(minutes, "m", seconds % 60, "s");
  }
  if (minutes < 60) return absl::StrCat(minutes, "m");
  const int64_t hours = minutes / 60;
  if (hours < 8) {
    return minutes % 60 == 0 ? absl::StrCat(hours, "h")
                             : absl::StrCat(hours, "h", minutes % 60, "m");
  }
  if (hours < 48) return absl::StrCat(hours, "h");
  const int64_t days = hours / 24;
  if (hours < 24 * 8) {
    return hours % 24 == 0 ? absl::StrCat(days, "d") : absl::StrCat(days, "d", hours % 24, "h");
  }
  if (days < 365 * 2) return absl::StrCat(days, "d");
  if (days < 365 * 8) {
    return days % 365 == 0 ? absl::StrCat(days / 365, "y")
                           : absl::StrCat(days / 365, "y", days % 365, "d");
  }
  return absl::StrCat(days / 365, "y");
}

std::string HumanBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, "B");
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%s", v, kUnits[unit]);
  return buf;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows, std::ostream& out) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (row.size() > width.size()) width.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 3, ' ');
    }
    out << line << "\n";
  }
}

int RunModels(const RemoteOptions& o, std::ostream& out, std::ostream& err) {
  if (!NeedServer(o, "models", err)) return kExitUsage;
  v1::ListModelsResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status st = Connect(o)->ListModels(&ctx, v1::ListModelsRequest(), &resp);
  if (!st.ok()) return RpcError(o, "models", st, err);
  if (o.structured()) {  // {"models": [...]}, as `jobs` prints {"jobs": [...]}
    PrintStructured(MessageJson(resp), o.output, out);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"MODEL", "JOB", "NAME", "FEATURES", "CLASSES", "SIZE", "AGE"}};
  for (const v1::ModelInfo& m : resp.models()) {
    rows.push_back({m.model_id(), m.job_id(), OrDash(m.job_name()), absl::StrCat(m.num_features()),
                    absl::StrCat(m.num_classes()), HumanBytes(m.size_bytes()), Age(m.created())});
  }
  PrintTable(rows, out);
  return kExitOk;
}

int RunModelRm(const RemoteOptions& o, const std::vector<std::string>& model_ids, std::ostream& out,
               std::ostream& err) {
  if (!NeedServer(o, "model rm", err)) return kExitUsage;
  auto stub = Connect(o);
  return RemoveEach(
      o, "model rm", "model", model_ids,
      [&](const std::string& id) {
        v1::DeleteModelRequest req;
        req.set_model_id(id);
        v1::DeleteModelResponse resp;
        grpc::ClientContext ctx;
        return stub->DeleteModel(&ctx, req, &resp);
      },
      out, err);
}

int RunDatasets(const RemoteOptions& o, const std::string& sha256, std::ostream& out,
                std::ostream& err) {
  if (!NeedServer(o, "datasets", err)) return kExitUsage;
  v1::ListDatasetsRequest req;
  req.set_sha256(sha256);
  v1::ListDatasetsResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status st = Connect(o)->ListDatasets(&ctx, req, &resp);
  if (!st.ok()) return RpcError(o, "datasets", st, err);
  if (o.structured()) {
    PrintStructured(MessageJson(resp), o.output, out);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"DATASET", "NAME", "SIZE", "SHA256", "AGE"}};
  for (const v1::Dataset& d : resp.datasets()) {
    rows.push_back({d.id(), d.name(), HumanBytes(d.size_bytes()), OrDash(d.sha256().substr(0, 12)),
                    Age(d.created())});
  }
  PrintTable(rows, out);
  return kExitOk;
}

int RunDatasetRm(const RemoteOptions& o, const std::vector<std::string>& dataset_ids,
                 std::ostream& out, std::ostream& err) {
  if (!NeedServer(o, "dataset rm", err)) return kExitUsage;
  std::vector<std::string> ids;
  for (const std::string& id : dataset_ids) {
    ids.push_back(absl::StartsWith(id, "dataset:") ? id.substr(8) : id);  // as upload prints it
  }
  auto stub = Connect(o);
  return RemoveEach(
      o, "dataset rm", "dataset", ids,
      [&](const std::string& id) {
        v1::DeleteDatasetRequest req;
        req.set_dataset_id(id);
        v1::DeleteDatasetResponse resp;
        grpc::ClientContext ctx;
        return stub->DeleteDataset(&ctx, req, &resp);
      },
      out, err);
}

}  // namespace logit
