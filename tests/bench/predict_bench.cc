// Predict latency against a running logit-server:
//   predict_bench HOST:PORT MODEL_ID FEATURES [REQUESTS]
// Sends REQUESTS one-row Predict calls, then 100 batches of 1,000 rows, and the same one-row
// request through the Open Inference Protocol's ModelInfer. Prints one JSON object: server time
// (from PredictResponse.server_nanos) and round-trip time percentiles.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <random>
#include <vector>

#include "inference/grpc_predict_v2.grpc.pb.h"
#include "logit/v1/training.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace {

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * (v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: predict_bench HOST:PORT MODEL_ID FEATURES [REQUESTS]\n";
    return 2;
  }
  const std::string address = argv[1], model = argv[2];
  const int d = std::atoi(argv[3]);
  const int n = argc > 4 ? std::atoi(argv[4]) : 2000;
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = logit::v1::TrainingService::NewStub(channel);
  auto oip = inference::GRPCInferenceService::NewStub(channel);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  auto run = [&](int rows, int count, std::vector<double>* server, std::vector<double>* rtt) {
    logit::v1::PredictRequest req;
    req.set_model_id(model);
    for (int i = 0; i < rows * d; ++i) req.add_features(u(rng));
    for (int i = 0; i < count; ++i) {
      logit::v1::PredictResponse resp;
      grpc::ClientContext ctx;
      const auto s = std::chrono::steady_clock::now();
      grpc::Status st = stub->Predict(&ctx, req, &resp);
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
      if (!st.ok()) {
        std::cerr << st.error_message() << "\n";
        std::exit(1);
      }
      server->push_back(resp.server_nanos() * 1e-9);
      rtt->push_back(t);
    }
  };
  std::vector<double> s1, r1, sb, rb, ro;
  run(1, 50, &s1, &r1);  // warm-up (loads and caches the model)
  s1.clear();
  r1.clear();
  run(1, n, &s1, &r1);
  run(1000, 100, &sb, &rb);
  inference::ModelInferRequest ir;
  ir.set_model_name(model);
  auto* in = ir.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(d);
  for (int i = 0; i < d; ++i) in->mutable_contents()->add_fp32_contents(u(rng));
  for (int i = 0; i < n; ++i) {
    inference::ModelInferResponse out;
    grpc::ClientContext ctx;
    const auto s = std::chrono::steady_clock::now();
    if (!oip->ModelInfer(&ctx, ir, &out).ok()) return 1;
    ro.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
  }
  nlohmann::json j = {
      {"features", d},
      {"one_row",
       {{"server_p50_us", 1e6 * Percentile(s1, 0.5)},
        {"server_p99_us", 1e6 * Percentile(s1, 0.99)},
        {"rtt_p50_us", 1e6 * Percentile(r1, 0.5)},
        {"rtt_p99_us", 1e6 * Percentile(r1, 0.99)}}},
      {"batch_1000_rows",
       {{"server_p50_us", 1e6 * Percentile(sb, 0.5)}, {"rtt_p50_us", 1e6 * Percentile(rb, 0.5)}}},
      {"model_infer_one_row",
       {{"rtt_p50_us", 1e6 * Percentile(ro, 0.5)}, {"rtt_p99_us", 1e6 * Percentile(ro, 0.99)}}}};
  std::cout << j.dump() << "\n";
  return 0;
}
