#include "worker/common/metrics_endpoint.h"

#include <dirent.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace logit {

namespace {

prometheus::MetricFamily Single(const std::string& name, const std::string& help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily family{name, help, type, {}};
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

// The boot time (seconds since the epoch) from /proc/stat's btime line; 0 if unreadable.
double BootTime() {
  std::ifstream in("/proc/stat");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("btime ", 0) == 0) {
      double t = 0;
      return absl::SimpleAtod(line.substr(6), &t) ? t : 0;
    }
  }
  return 0;
}

int OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // the directory stream's own descriptor
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start at the last ')'.
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
    // f[0] is field 3 (state): field N is f[N - 3].
    auto field = [&](int n) {
      double v = 0;
      return n - 3 < static_cast<int>(f.size()) && absl::SimpleAtod(f[n - 3], &v) ? v : 0.0;
    };
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    out.push_back(Single("process_cpu_seconds_total",
                         "Total user and system CPU time spent in seconds.", MetricType::Counter,
                         (field(14) + field(15)) / ticks));
    out.push_back(Single("process_start_time_seconds",
                         "Start time of the process since unix epoch in seconds.",
                         MetricType::Gauge, BootTime() + field(22) / ticks));
    out.push_back(Single("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                         MetricType::Gauge, field(23)));
    out.push_back(Single("process_resident_memory_bytes", "Resident memory size in bytes.",
                         MetricType::Gauge, field(24) * page));
    out.push_back(Single("process_threads", "Number of OS threads in the process.",
                         MetricType::Gauge, field(20)));
  }
  out.push_back(
      Single("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, OpenFds()));
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    out.push_back(Single("process_max_fds", "Maximum number of open file descriptors.",
                         MetricType::Gauge, static_cast<double>(limit.rlim_cur)));
  }
  return out;
}

namespace {

// libmicrohttpd's request callback: GET /metrics renders, anything else is refused.
MHD_Result HandleRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                         const char* /*version*/, const char* /*upload*/, size_t* /*upload_size*/,
                         void** /*state*/) {
  const auto* endpoint = static_cast<const MetricsEndpoint*>(cls);
  unsigned int code = MHD_HTTP_OK;
  std::string body;
  const char* type = "text/plain; version=0.0.4; charset=utf-8";
  if (std::strcmp(method, "GET") != 0 && std::strcmp(method, "HEAD") != 0) {
    code = MHD_HTTP_METHOD_NOT_ALLOWED;
    body = "only GET /metrics\n";
    type = "text/plain; charset=utf-8";
  } else if (std::strcmp(url, "/metrics") != 0) {
    code = MHD_HTTP_NOT_FOUND;
    body = "not found: metrics are on /metrics\n";
    type = "text/plain; charset=utf-8";
  } else {
    body = endpoint->Render();
  }
  MHD_Response* response =
      MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  const MHD_Result queued = MHD_queue_response(connection, code, response);
  MHD_destroy_response(response);
  return queued;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen: '", listen, "' is not HOST:PORT (port 0: any free port)"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_ADDRCONFIG;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen: cannot resolve host '", host, "' of ", listen));
  }
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  // Every address the host resolves to is tried in turn ("localhost" may be ::1 first, on a
  // machine whose loopback has no IPv6). The IPv6 wildcard also takes IPv4 (dual stack).
  for (const addrinfo* a = found; a != nullptr && endpoint->daemon_ == nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    sockaddr_storage addr{};
    std::memcpy(&addr, a->ai_addr, a->ai_addrlen);
    const bool v6 = a->ai_family == AF_INET6;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (v6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
      in6->sin6_port = htons(static_cast<uint16_t>(port));
      flags |= IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
    } else {
      reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(static_cast<uint16_t>(port));
    }
    // One polling thread: a scrape every few seconds needs no more. Slow or idle clients are
    // dropped after 10 s, and at most 32 connections are served at once.
    endpoint->daemon_ = MHD_start_daemon(
        flags, static_cast<uint16_t>(port), nullptr, nullptr, &HandleRequest, endpoint.get(),
        MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&addr), MHD_OPTION_CONNECTION_TIMEOUT,
        10u, MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_END);
  }
  freeaddrinfo(found);
  if (endpoint->daemon_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen: cannot listen on ", listen,
                     " (the port is in use, or the address is not one of this machine's)"));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(endpoint->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  endpoint->port_ = info != nullptr ? info->port : port;
  return endpoint;
}

MetricsEndpoint::MetricsEndpoint() : process_(std::make_shared<ProcessCollector>()) {
  collectables_.push_back(process_);
}

MetricsEndpoint::~MetricsEndpoint() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

void MetricsEndpoint::Register(const std::weak_ptr<prometheus::Collectable>& collectable) {
  MutexLock lock(&mu_);
  collectables_.push_back(collectable);
}

std::string MetricsEndpoint::Render() const {
  std::vector<std::shared_ptr<prometheus::Collectable>> live;
  {
    MutexLock lock(&mu_);
    for (const auto& weak : collectables_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  std::vector<prometheus::MetricFamily> families;
  for (const auto& c : live) {
    std::vector<prometheus::MetricFamily> more = c->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace logit
