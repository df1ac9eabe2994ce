#include "worker/dist/process_group.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/exception.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
// LibTorch 2.x splits ProcessGroup into a front and per-device Backends (Gloo, NCCL); 1.13
// (Debian 12) has ProcessGroupGloo derive from ProcessGroup. Either way one object holds the
// allreduce.
#include <torch/version.h>  // in torch/csrc/api/include
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
namespace logit {
using PgBackend = c10d::Backend;
}
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
namespace logit {
using PgBackend = c10d::ProcessGroup;
}
#endif
// A pip LibTorch ships without Gloo's headers: such a build has NCCL only.
#if __has_include(<gloo/algorithm.h>)
#define LOGIT_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "worker/common/status.h"
#include "worker/dist/kv_store.h"
#include "worker/kernel/collective.h"

namespace logit {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kHeartbeatPeriod{200};
// A rank whose heartbeat counter does not move for this long is reported as lost.
constexpr milliseconds kLostAfter{1200};
// How a wait on a KeyValueStore polls: first after kFirstPoll, then twice as long each time, at
// most kMaxPoll apart (a join of a few ranks costs a few ms; a long wait 20 calls a second).
constexpr milliseconds kFirstPoll{1};
constexpr milliseconds kMaxPoll{50};

// The first line of an exception's message, without LibTorch's C++ backtrace.
std::string ErrorText(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10_error ? c10_error->what_without_backtrace() : e.what();
  const size_t nl = text.find('\n');
  if (nl != std::string::npos) text.resize(nl);
  return text;
}

std::vector<uint8_t> Bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}
std::string String(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

// Unused in NCCL-only builds (a pip LibTorch has no Gloo headers).
[[maybe_unused]] bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// A c10d::Store over a KeyValueStore (RendezvousOptions::kv), so that Gloo, NCCL and the
// PrefixStore rendezvous through it. c10d reports failures by exceptions: a failed operation
// throws c10::Error with the store's status, a wait that runs out of time c10d::TimeoutError.
// Waits never outlast the store's timeout (the collective timeout): a longer or unlimited one
// (c10d's kNoTimeout, Gloo's 300 s default) is cut to it. Thread-safe when the KeyValueStore is.
class KeyValueStoreAdapter final : public c10d::Store {
 public:
  KeyValueStoreAdapter(std::shared_ptr<KeyValueStore> kv, milliseconds timeout)
      : c10d::Store(timeout), kv_(std::move(kv)) {}

  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    OrThrow(kv_->Set(key, String(value)));
  }

  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>& expected,
                                  const std::vector<uint8_t>& desired) override {
    return Bytes(OrThrow(kv_->CompareSet(key, String(expected), String(desired))));
  }

  // Waits for the key (as TCPStore's get does), then reads it.
  std::vector<uint8_t> get(const std::string& key) override {
    wait({key}, timeout_);
    std::optional<std::string> value = OrThrow(kv_->Get(key));
    if (!value) {
      throw c10::Error(absl::StrCat("rendezvous store: key '", key, "' was deleted while read"),
                       "");
    }
    return Bytes(*value);
  }

  int64_t add(const std::string& key, int64_t value) override {
    return OrThrow(kv_->Add(key, value));
  }

  bool deleteKey(const std::string& key) override { return OrThrow(kv_->Delete(key)); }

  bool check(const std::vector<std::string>& keys) override { return OrThrow(kv_->Check(keys)); }

  int64_t getNumKeys() override { return OrThrow(kv_->NumKeys()); }

  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys, const milliseconds& timeout) override {
    const milliseconds limit = timeout == kNoTimeout ? timeout_ : std::min(timeout, timeout_);
    const auto deadline = Clock::now() + limit;
    milliseconds pause = kFirstPoll;
    while (!OrThrow(kv_->Check(keys))) {
      const auto now = Clock::now();
      if (now >= deadline) {
        throw c10d::TimeoutError(absl::StrCat("rendezvous store: waited ", limit.count(),
                                              " ms for ", absl::StrJoin(keys, ", ")));
      }
      std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
      pause = std::min(pause * 2, kMaxPoll);
    }
  }

 private:
  [[noreturn]] static void Throw(const absl::Status& st) {
    throw c10::Error(absl::StrCat(st.message(), " [", absl::StatusCodeToString(st.code()), "]"),
                     "");
  }
  static void OrThrow(const absl::Status& st) {
    if (!st.ok()) Throw(st);
  }
  template <typename T>
  static T OrThrow(absl::StatusOr<T> v) {
    if (!v.ok()) Throw(v.status());
    return *std::move(v);
  }

  const std::shared_ptr<KeyValueStore> kv_;
};

c10::intrusive_ptr<c10d::TCPStore> StoreClient(const std::string& host, int port,
                                               milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(port);
  o.isServer = false;
  o.waitWorkers = false;
  o.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(host, o);
}

class ProcessGroupCollective : public Collective {
 public:
  ProcessGroupCollective(RendezvousOptions options, c10::intrusive_ptr<c10d::Store> store,
                         c10::intrusive_ptr<PgBackend> pg, at::Device device)
      : options_(std::move(options)),
        store_(std::move(store)),
        pg_(std::move(pg)),
        device_(device) {
    heartbeat_ = std::thread([this] { Heartbeat(); });
  }

  ~ProcessGroupCollective() override {
    stop_ = true;
    if (heartbeat_.joinable()) heartbeat_.join();
#ifdef USE_C10D_NCCL
    // NCCL communicators are released explicitly (a broken one is aborted: a lost peer never
    // answers a finalize).
    if (auto* nccl = dynamic_cast<c10d::ProcessGroupNCCL*>(pg_.get())) {
      try {
        if (broken_.ok()) {
          nccl->shutdown();
        } else {
          nccl->abort();
        }
      } catch (const std::exception&) {
      }
    }
#endif
  }

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }

  absl::Status AllReduceSum(at::Tensor& t) override { return AllReduce(t, c10d::ReduceOp::SUM); }
  absl::Status AllReduceMax(at::Tensor& t) override { return AllReduce(t, c10d::ReduceOp::MAX); }

  absl::Status Agree(const absl::Status& local) override {
    const int64_t seq = ++agree_seq_;
    const std::string key_base = absl::StrCat("agree/", seq, "/");
    // A reason that cannot be stored still takes part in the vote: the peers learn of the
    // failure now instead of waiting out the collective timeout.
    absl::Status store_error;
    if (!local.ok()) {
      try {
        store_->set(key_base + std::to_string(rank()),
                    Bytes(absl::StrCat(static_cast<int>(local.code()), "\n", local.message())));
      } catch (const std::exception& e) {
        store_error = absl::UnavailableError(
            absl::StrCat("rendezvous store: ", ErrorText(e), "; local error: ", local.message()));
      }
    }
    at::Tensor failed = at::zeros({world_size()}, at::kInt);
    failed[rank()] = local.ok() ? 0 : 1;
    absl::Status st = AllReduceSum(failed);
    if (!st.ok()) return st;
    if (!store_error.ok()) return Broken(store_error);
    const int* f = failed.data_ptr<int>();
    for (int r = 0; r < world_size(); ++r) {
      if (f[r] == 0) continue;
      if (r == rank())
        return absl::Status(local.code(), absl::StrCat("rank ", r, ": ", local.message()));
      try {
        const std::string text = String(store_->get(key_base + std::to_string(r)));
        const size_t nl = text.find('\n');
        int code = static_cast<int>(absl::StatusCode::kUnknown);
        if (!absl::SimpleAtoi(text.substr(0, nl), &code)) code = 2;
        return absl::Status(static_cast<absl::StatusCode>(code),
                            absl::StrCat("rank ", r, ": ", text.substr(nl + 1)));
      } catch (const std::exception& e) {
        return absl::UnavailableError(
            absl::StrCat("rank ", r, " failed; its reason is unreadable: ", ErrorText(e)));
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status AllReduce(at::Tensor& t, c10d::ReduceOp op) {
    if (!broken_.ok()) return broken_;
    const auto start = Clock::now();
    try {
      // NCCL reduces device tensors only; small host tensors (facts, counts) travel through it.
      const bool staged = t.device() != device_;
      std::vector<at::Tensor> v{staged ? t.to(device_) : t};
      c10d::AllreduceOptions o;
      o.reduceOp = op;
      pg_->allreduce(v, o)->wait();
      if (staged) t.copy_(v[0]);
    } catch (const std::exception& e) {
      const std::string what = ErrorText(e);
      MarkFailed(what);
      const std::string lost = DiagnoseLostRanks();
      // A collective that failed only after (about) its whole timeout timed out; one that
      // failed sooner lost a peer. Decided by the clock, not by c10d's message text.
      const bool timed_out = Clock::now() - start >= options_.timeout * 9 / 10;
      const std::string msg = absl::StrCat(
          "allreduce of ", t.numel(), " values failed on rank ", rank(), " of ", world_size(), ": ",
          lost.empty() ? std::string("no rank is known to be lost") : lost, "; c10d: ", what);
      return Broken(timed_out ? absl::DeadlineExceededError(msg) : absl::UnavailableError(msg));
    }
    if (options_.on_allreduce) {
      options_.on_allreduce(std::chrono::duration<double>(Clock::now() - start).count(),
                            t.numel() * static_cast<int64_t>(t.element_size()));
    }
    return absl::OkStatus();
  }

  // After a failure the process group is unusable: every later call fails the same way.
  absl::Status Broken(absl::Status st) {
    broken_ = st;
    return st;
  }

  std::string HeartbeatKey(int r) const { return absl::StrCat("heartbeat/", r); }
  std::string FailedKey(int r) const { return absl::StrCat("failed/", r); }

  // Tells the peers that this rank is alive but failed, so that they do not report it lost.
  void MarkFailed(const std::string& what) {
    try {
      store_->set(FailedKey(rank()), Bytes(what));
    } catch (const std::exception&) {
      // The store is gone too; DiagnoseLostRanks says so.
    }
  }

  // Bumps this rank's counter in the store; peers use it to tell who is gone.
  void Heartbeat() {
    if (options_.kv) {
      // The shared store stays usable after a failed call (the coordinator was briefly
      // unreachable): skip that beat and try the next.
      while (!stop_) {
        try {
          store_->add(HeartbeatKey(rank()), 1);
        } catch (const std::exception&) {
        }
        for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(kHeartbeatPeriod / 10);
      }
      return;
    }
    try {
      auto client = StoreClient(options_.store_host, options_.store_port, milliseconds(5000));
      c10d::PrefixStore store(options_.prefix, client);
      while (!stop_) {
        store.add(HeartbeatKey(rank()), 1);
        for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(kHeartbeatPeriod / 10);
      }
    } catch (const std::exception&) {
      // The store went away (its host stopped); failures surface in the collectives.
    }
  }

  // Names the ranks whose heartbeat stopped, or says that the store itself is gone.
  std::string DiagnoseLostRanks() {
    try {
      c10::intrusive_ptr<c10d::Store> store = store_;
      if (!options_.kv) {
        store = c10::make_intrusive<c10d::PrefixStore>(
            options_.prefix,
            StoreClient(options_.store_host, options_.store_port, milliseconds(2000)));
      }
      std::vector<int64_t> before(world_size());
      for (int r = 0; r < world_size(); ++r) before[r] = store->add(HeartbeatKey(r), 0);
      std::this_thread::sleep_for(kLostAfter);
      std::vector<int> lost;
      for (int r = 0; r < world_size(); ++r) {
        if (r != rank() && store->add(HeartbeatKey(r), 0) == before[r] &&
            !store->check({FailedKey(r)})) {
          lost.push_back(r);
        }
      }
      if (lost.empty()) return "";
      return absl::StrCat(lost.size() == 1 ? "lost rank " : "lost ranks ",
                          absl::StrJoin(lost, ", "), " (no heartbeat for ",
                          kLostAfter.count() / 1000.0, " s)");
    } catch (const std::exception& e) {
      if (options_.kv) {
        return absl::StrCat(
            "the coordinator's rendezvous store failed, so the coordinator is gone or has ended "
            "this attempt: ",
            ErrorText(e));
      }
      return absl::StrCat("the rendezvous store at ", options_.store_host, ":", options_.store_port,
                          " is unreachable, so its host (",
                          options_.host_store ? "this rank" : "rank 0 or the coordinator",
                          ") is gone: ", ErrorText(e));
    }
  }

  const RendezvousOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<PgBackend> pg_;
  const at::Device device_;
  std::thread heartbeat_;
  std::atomic<bool> stop_{false};
  absl::Status broken_;
  int64_t agree_seq_ = 0;
};

absl::Status ValidateRendezvous(const RendezvousOptions& o) {
  if (o.world_size < 1) {
    return FieldError("world_size", absl::StrCat("must be >= 1, got ", o.world_size));
  }
  if (o.rank < 0 || o.rank >= o.world_size) {
    return FieldError("rank",
                      absl::StrCat(o.rank, " is not in [0, world_size=", o.world_size, ")"));
  }
  if (!o.kv && (o.store_port < 1 || o.store_port > 65535)) {
    return FieldError("store", absl::StrCat("port ", o.store_port, " is not in [1, 65535]"));
  }
  if (!o.kv && o.store_host.empty()) return FieldError("store", "no host given");
  if (o.timeout.count() <= 0) return FieldError("timeout", "must be positive");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ProcessGroupConnection> ConnectProcessGroup(const RendezvousOptions& options) {
  absl::Status st = ValidateRendezvous(options);
  if (!st.ok()) return st;
  const auto start = Clock::now();
  // The device decides the backend.
  at::Device device(at::kCPU);
  try {
    if (options.device == "auto") {
      if (at::hasCUDA()) device = at::Device(at::kCUDA);  // the index comes after the join
    } else if (options.device != "cpu") {
      device = at::Device(options.device);
    }
  } catch (const std::exception& e) {
    return FieldError("device", absl::StrCat("'", options.device, "': ", ErrorText(e)));
  }
  if (device.is_cuda() && !at::hasCUDA()) {
    return FieldError("device",
                      absl::StrCat("'", options.device,
                                   "' requested but this LibTorch build has no CUDA device"));
  }
  if (device.is_cuda() && device.has_index() &&
      static_cast<size_t>(device.index()) >= torch::cuda::device_count()) {
    return FieldError("device", absl::StrCat("'", options.device, "': this machine has ",
                                             torch::cuda::device_count(), " CUDA device(s)"));
  }

  ProcessGroupConnection conn;
  c10::intrusive_ptr<c10d::Store> store;
  const std::string store_name = options.kv
                                     ? std::string("the coordinator's rendezvous store")
                                     : absl::StrCat(options.store_host, ":", options.store_port);
  if (options.kv) {
    store = c10::make_intrusive<c10d::PrefixStore>(
        options.prefix, c10::make_intrusive<KeyValueStoreAdapter>(options.kv, options.timeout));
  } else {
    try {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(options.store_port);
      so.isServer = options.host_store;
      so.waitWorkers = false;
      so.timeout = options.timeout;
      auto base = c10::make_intrusive<c10d::TCPStore>(options.store_host, so);
      store = c10::make_intrusive<c10d::PrefixStore>(options.prefix, base);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("store: cannot reach the rendezvous store at ",
                                                 store_name, ": ", ErrorText(e)));
    }
  }

  // Our own join step first, so that a rank that never comes is named.
  const std::string host = LocalHostName();
  try {
    store->set(absl::StrCat("joined/", options.rank), Bytes(host));
    std::vector<std::string> keys;
    for (int r = 0; r < options.world_size; ++r) keys.push_back(absl::StrCat("joined/", r));
    try {
      store->wait(keys, options.timeout);
    } catch (const std::exception& e) {
      // A KeyValueStore that failed (rather than a wait that ran out) is not a missing rank.
      if (options.kv && dynamic_cast<const c10d::TimeoutError*>(&e) == nullptr) {
        return absl::UnavailableError(absl::StrCat("rendezvous: ", ErrorText(e)));
      }
      std::vector<int> missing;
      for (int r = 0; r < options.world_size; ++r) {
        if (!store->check({keys[r]})) missing.push_back(r);
      }
      return absl::DeadlineExceededError(
          absl::StrCat("rendezvous: rank(s) ", absl::StrJoin(missing, ", "), " of ",
                       options.world_size, " did not join prefix '", options.prefix, "' at ",
                       store_name, " within ", options.timeout.count() / 1000.0, " s"));
    }
    conn.local_ranks = 0;
    int local_index = 0;  // this rank's place among the ranks on its host
    for (int r = 0; r < options.world_size; ++r) {
      const bool here = String(store->get(keys[r])) == host;
      conn.local_ranks += here;
      local_index += here && r < options.rank;
    }
    // "cuda" / "auto" without an index: the ranks on a host take its GPUs in turn (NCCL needs
    // one GPU per rank).
    if (device.is_cuda() && !device.has_index()) {
      const size_t gpus = std::max<size_t>(1, torch::cuda::device_count());
      device = at::Device(at::kCUDA, static_cast<at::DeviceIndex>(local_index % gpus));
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rendezvous: ", ErrorText(e)));
  }

  c10::intrusive_ptr<PgBackend> pg;
  try {
#ifdef USE_C10D_NCCL
    if (device.is_cuda()) {
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, options.rank, options.world_size,
                                                       nccl_options);
      conn.backend = "nccl";
    }
#endif
#ifdef LOGIT_HAVE_GLOO
    if (!pg) {
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
      if (!options.interface.empty()) {
        gloo_options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(options.interface));
      } else if (IsLoopback(options.store_host)) {
        gloo_options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      gloo_options->threads = 1;
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, options.rank, options.world_size,
                                                       gloo_options);
      conn.backend = "gloo";
    }
#else
    if (!pg) {
      return absl::UnimplementedError(
          "rendezvous: this LibTorch build has no Gloo (CPU) process group; use a CUDA device");
    }
#endif
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rendezvous: connecting the ",
                                               device.is_cuda() ? "NCCL" : "Gloo",
                                               " process group failed: ", ErrorText(e)));
  }
  conn.device = device.str();
  conn.collective = std::make_unique<ProcessGroupCollective>(options, store, pg, device);
  conn.connect_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return conn;
}

std::string LocalHostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

int ThreadsPerRank(int ranks_on_host) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, ranks_on_host));
}

struct StoreServer::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

StoreServer::StoreServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StoreServer::~StoreServer() = default;
int StoreServer::port() const { return impl_->store->getPort(); }

absl::StatusOr<std::unique_ptr<StoreServer>> StoreServer::Start(const std::string& host, int port) {
  if (port < 0 || port > 65535) {
    return FieldError("store", absl::StrCat("port ", port, " is not in [0, 65535]"));
  }
  auto impl = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(port);
    so.isServer = true;
    so.waitWorkers = false;
    so.multiTenant = true;
    impl->store = c10::make_intrusive<c10d::TCPStore>(host, so);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("store: cannot listen on ", host, ":", port, ": ", ErrorText(e)));
  }
  return std::unique_ptr<StoreServer>(new StoreServer(std::move(impl)));
}

}  // namespace logit
