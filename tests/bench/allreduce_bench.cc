// Allreduce timing through logit's c10d process group (the same Collective the trainer uses).
//   allreduce_bench RANK WORLD PORT [SIZE...]   (rank 0 hosts the store on PORT)
// Rank 0 prints one JSON object: for each size (float32 values), the mean and best seconds per
// allreduce, and the bus bandwidth 2 (W-1)/W * bytes / seconds (the ring allreduce's traffic).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/dist/process_group.h"
#include "worker/kernel/collective.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: allreduce_bench RANK WORLD PORT [SIZE...]\n";
    return 2;
  }
  logit::RendezvousOptions ro;
  ro.rank = std::atoi(argv[1]);
  ro.world_size = std::atoi(argv[2]);
  ro.store_port = std::atoi(argv[3]);
  ro.host_store = ro.rank == 0;
  ro.prefix = "allreduce-bench";
  std::vector<int64_t> sizes;
  for (int i = 4; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
  if (sizes.empty()) sizes = {7850, 1000000, 10000000};
  at::set_num_threads(1);
  auto conn = logit::ConnectProcessGroup(ro);
  if (!conn.ok()) {
    std::cerr << conn.status() << "\n";
    return 1;
  }
  nlohmann::json out = {{"world_size", ro.world_size},
                        {"backend", conn->backend},
                        {"connect_seconds", conn->connect_seconds}};
  for (int64_t n : sizes) {
    at::Tensor t = at::ones({n}, at::kFloat);
    // About 2 s per size, at least 5 calls, after 2 warm-up calls.
    for (int i = 0; i < 2; ++i) (void)conn->collective->AllReduceSum(t);
    std::vector<double> secs;
    double total = 0;
    while ((total < 2.0 || secs.size() < 5) && secs.size() < 2000) {
      const auto s = std::chrono::steady_clock::now();
      absl::Status st = conn->collective->AllReduceSum(t);
      if (!st.ok()) {
        std::cerr << st << "\n";
        return 1;
      }
      secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
      total += secs.back();
      // Every rank must run the same number of calls: rank 0's count decides.
      at::Tensor go = at::full({1}, (total < 2.0 || secs.size() < 5) && secs.size() < 2000 ? 1 : 0,
                               at::kInt);
      if (ro.rank != 0) go.zero_();
      (void)conn->collective->AllReduceSum(go);
      if (go.item<int>() == 0) break;
    }
    const double mean = total / secs.size();
    const double bytes = 4.0 * n;
    const double w = ro.world_size;
    out["sizes"].push_back({{"floats", n},
                            {"calls", secs.size()},
                            {"mean_seconds", mean},
                            {"best_seconds", *std::min_element(secs.begin(), secs.end())},
                            {"bus_gbytes_per_s", w > 1 ? 2 * (w - 1) / w * bytes / mean / 1e9 : 0}});
  }
  if (ro.rank == 0) std::cout << out.dump() << "\n";
  return 0;
}
