#include "server/store.h"

#include <sqlite3.h>

#include <chrono>
#include <functional>

#include "absl/strings/str_cat.h"

namespace logit {

namespace {

// Reports a write transaction's duration to the store's observer when it goes out of scope.
class WriteTimer {
 public:
  explicit WriteTimer(const std::function<void(double)>& observer)
      : observer_(observer), start_(std::chrono::steady_clock::now()) {}
  ~WriteTimer() {
    if (observer_) {
      observer_(std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
  }

 private:
  const std::function<void(double)>& observer_;
  const std::chrono::steady_clock::time_point start_;
};

absl::Status SqlError(sqlite3* db, const std::string& what) {
  return absl::InternalError(absl::StrCat("store: ", what, ": ", sqlite3_errmsg(db)));
}

// A prepared statement that finalises itself.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK) stmt_ = nullptr;
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return stmt_ != nullptr; }
  sqlite3_stmt* get() const { return stmt_; }
  void Bind(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void BindText(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  std::string Column(int i) const {
    const void* p = sqlite3_column_blob(stmt_, i);
    return std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt_, i));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

template <typename T>
absl::StatusOr<T> Parse(const std::string& bytes, const std::string& what) {
  T msg;
  if (!msg.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat("store: a stored ", what, " does not parse"));
  }
  return msg;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    const std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("store: cannot open ", path, ": ", msg));
  }
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(db));
  sqlite3_busy_timeout(db, 5000);
  MutexLock lock(&store->mu_);
  for (const char* sql : {
           "PRAGMA journal_mode=WAL",
           "PRAGMA synchronous=FULL",
           "CREATE TABLE IF NOT EXISTS counters (kind TEXT PRIMARY KEY, value INTEGER NOT NULL)",
           "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, body BLOB NOT NULL, "
           "extra TEXT, seq INTEGER)",
           "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, body BLOB NOT NULL, "
           "extra TEXT, seq INTEGER)",
           "CREATE TABLE IF NOT EXISTS datasets (id TEXT PRIMARY KEY, body BLOB NOT NULL, "
           "extra TEXT, seq INTEGER)",
           "CREATE TABLE IF NOT EXISTS models (id TEXT PRIMARY KEY, body BLOB NOT NULL, "
           "extra TEXT, seq INTEGER)",
           "CREATE TABLE IF NOT EXISTS checkpoints (id TEXT PRIMARY KEY, body BLOB NOT NULL, "
           "extra TEXT, seq INTEGER)",
       }) {
    absl::Status st = store->ExecLocked(sql);
    if (!st.ok()) return st;
  }
  return store;
}

SqliteJobStore::~SqliteJobStore() { sqlite3_close(db_); }

absl::Status SqliteJobStore::ExecLocked(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status st = absl::InternalError(absl::StrCat("store: ", sql, ": ", err ? err : "?"));
    sqlite3_free(err);
    return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteJobStore::NextId(const std::string& kind) {
  MutexLock lock(&mu_);
  const WriteTimer timer(write_observer_);
  Statement up(db_,
               "INSERT INTO counters (kind, value) VALUES (?1, 1) "
               "ON CONFLICT(kind) DO UPDATE SET value = value + 1 RETURNING value");
  if (!up.ok()) return SqlError(db_, "prepare counter");
  up.BindText(1, kind);
  if (sqlite3_step(up.get()) != SQLITE_ROW) return SqlError(db_, "next id");
  const int64_t v = sqlite3_column_int64(up.get(), 0);
  if (sqlite3_step(up.get()) != SQLITE_DONE) return SqlError(db_, "next id");
  return v;
}

absl::Status SqliteJobStore::Put(const std::string& table, const std::string& key,
                                 const google::protobuf::Message& value, const std::string& extra) {
  MutexLock lock(&mu_);
  const WriteTimer timer(write_observer_);
  return PutLocked(table, key, value, extra);
}

absl::Status SqliteJobStore::PutLocked(const std::string& table, const std::string& key,
                                       const google::protobuf::Message& value,
                                       const std::string& extra) {
  // seq keeps the first insertion order across replacements.
  Statement st(db_, absl::StrCat("INSERT INTO ", table,
                                 " (id, body, extra, seq) VALUES (?1, ?2, ?3, "
                                 "(SELECT COALESCE(MAX(seq), 0) + 1 FROM ",
                                 table,
                                 ")) ON CONFLICT(id) DO UPDATE SET body = excluded.body, "
                                 "extra = excluded.extra"));
  if (!st.ok()) return SqlError(db_, absl::StrCat("prepare ", table));
  st.BindText(1, key);
  st.Bind(2, value.SerializeAsString());
  st.BindText(3, extra);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return SqlError(db_, absl::StrCat("write ", table));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> SqliteJobStore::LoadAll(
    const std::string& table, const std::string& order_by) {
  MutexLock lock(&mu_);
  Statement st(db_, absl::StrCat("SELECT body, extra FROM ", table, " ORDER BY ", order_by));
  if (!st.ok()) return SqlError(db_, absl::StrCat("prepare ", table));
  std::vector<std::pair<std::string, std::string>> rows;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    const unsigned char* extra = sqlite3_column_text(st.get(), 1);
    rows.emplace_back(st.Column(0), extra ? reinterpret_cast<const char*>(extra) : "");
  }
  if (rc != SQLITE_DONE) return SqlError(db_, absl::StrCat("read ", table));
  return rows;
}

absl::Status SqliteJobStore::PutJob(const v1::Job& job) { return Put("jobs", job.id(), job, ""); }

absl::StatusOr<std::vector<v1::Job>> SqliteJobStore::LoadJobs() {
  auto rows = LoadAll("jobs", "seq");
  if (!rows.ok()) return rows.status();
  std::vector<v1::Job> out;
  for (const auto& [body, extra] : *rows) {
    auto job = Parse<v1::Job>(body, "job");
    if (!job.ok()) return job.status();
    out.push_back(std::move(*job));
  }
  return out;
}

absl::Status SqliteJobStore::PutJobWithEvent(const v1::Job& job, const v1::JobEvent& event) {
  MutexLock lock(&mu_);
  const WriteTimer timer(write_observer_);
  absl::Status st = ExecLocked("BEGIN IMMEDIATE");
  if (!st.ok()) return st;
  st = PutLocked("events", absl::StrCat(event.job_id(), "/", event.sequence()), event, "");
  if (st.ok()) st = PutLocked("jobs", job.id(), job, "");
  if (st.ok()) st = ExecLocked("COMMIT");
  if (!st.ok()) (void)ExecLocked("ROLLBACK");  // the write's own error is the one to report
  return st;
}

absl::Status SqliteJobStore::AppendEvent(const v1::JobEvent& event) {
  return Put("events", absl::StrCat(event.job_id(), "/", event.sequence()), event, "");
}

absl::StatusOr<std::vector<v1::JobEvent>> SqliteJobStore::LoadEvents() {
  auto rows = LoadAll("events", "seq");
  if (!rows.ok()) return rows.status();
  std::vector<v1::JobEvent> out;
  for (const auto& [body, extra] : *rows) {
    auto ev = Parse<v1::JobEvent>(body, "event");
    if (!ev.ok()) return ev.status();
    out.push_back(std::move(*ev));
  }
  return out;
}

absl::Status SqliteJobStore::PutDataset(const DatasetRecord& d) {
  return Put("datasets", d.info.id(), d.info, d.path);
}

absl::Status SqliteJobStore::DeleteDataset(const std::string& dataset_id) {
  return Delete("datasets", dataset_id);
}

absl::StatusOr<std::vector<DatasetRecord>> SqliteJobStore::LoadDatasets() {
  auto rows = LoadAll("datasets", "seq");
  if (!rows.ok()) return rows.status();
  std::vector<DatasetRecord> out;
  for (const auto& [body, extra] : *rows) {
    auto info = Parse<v1::Dataset>(body, "dataset");
    if (!info.ok()) return info.status();
    out.push_back(DatasetRecord{std::move(*info), extra});
  }
  return out;
}

absl::Status SqliteJobStore::PutModel(const ModelRecord& m) {
  return Put("models", m.info.model_id(), m.info, m.path);
}

absl::Status SqliteJobStore::Delete(const std::string& table, const std::string& key) {
  MutexLock lock(&mu_);
  const WriteTimer timer(write_observer_);
  Statement st(db_, absl::StrCat("DELETE FROM ", table, " WHERE id = ?1"));
  if (!st.ok()) return SqlError(db_, absl::StrCat("prepare delete from ", table));
  st.BindText(1, key);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return SqlError(db_, absl::StrCat("delete from ", table));
  }
  return absl::OkStatus();
}

absl::Status SqliteJobStore::DeleteModel(const std::string& model_id) {
  return Delete("models", model_id);
}

absl::StatusOr<std::vector<ModelRecord>> SqliteJobStore::LoadModels() {
  auto rows = LoadAll("models", "seq");
  if (!rows.ok()) return rows.status();
  std::vector<ModelRecord> out;
  for (const auto& [body, extra] : *rows) {
    auto info = Parse<v1::ModelInfo>(body, "model");
    if (!info.ok()) return info.status();
    out.push_back(ModelRecord{std::move(*info), extra});
  }
  return out;
}

// A checkpoint row: id "JOB/NUMBER", body the CheckpointInfo, extra "JOB\nPATH".
absl::Status SqliteJobStore::PutJobWithCheckpoint(const v1::Job& job, const v1::JobEvent& event,
                                                  const CheckpointRecord& checkpoint) {
  MutexLock lock(&mu_);
  const WriteTimer timer(write_observer_);
  absl::Status st = ExecLocked("BEGIN IMMEDIATE");
  if (!st.ok()) return st;
  st = PutLocked("events", absl::StrCat(event.job_id(), "/", event.sequence()), event, "");
  if (st.ok()) st = PutLocked("jobs", job.id(), job, "");
  if (st.ok()) {
    st = PutLocked("checkpoints", absl::StrCat(checkpoint.job_id, "/", checkpoint.info.number()),
                   checkpoint.info, absl::StrCat(checkpoint.job_id, "\n", checkpoint.path));
  }
  if (st.ok()) st = ExecLocked("COMMIT");
  if (!st.ok()) (void)ExecLocked("ROLLBACK");
  return st;
}

absl::Status SqliteJobStore::DeleteCheckpoints(const std::string& job_id,
                                               const std::vector<int64_t>& numbers) {
  MutexLock lock(&mu_);
  const WriteTimer timer(write_observer_);
  absl::Status st = ExecLocked("BEGIN IMMEDIATE");
  if (!st.ok()) return st;
  for (const int64_t n : numbers) {
    Statement del(db_, "DELETE FROM checkpoints WHERE id = ?1");
    if (!del.ok()) {
      st = SqlError(db_, "prepare delete checkpoint");
      break;
    }
    del.BindText(1, absl::StrCat(job_id, "/", n));
    if (sqlite3_step(del.get()) != SQLITE_DONE) {
      st = SqlError(db_, "delete checkpoint");
      break;
    }
  }
  if (st.ok()) st = ExecLocked("COMMIT");
  if (!st.ok()) (void)ExecLocked("ROLLBACK");
  return st;
}

absl::StatusOr<std::vector<CheckpointRecord>> SqliteJobStore::LoadCheckpoints() {
  auto rows = LoadAll("checkpoints", "seq");
  if (!rows.ok()) return rows.status();
  std::vector<CheckpointRecord> out;
  for (const auto& [body, extra] : *rows) {
    auto info = Parse<v1::CheckpointInfo>(body, "checkpoint");
    if (!info.ok()) return info.status();
    const size_t nl = extra.find('\n');
    if (nl == std::string::npos) {
      return absl::DataLossError("store: a stored checkpoint record has no job and path");
    }
    out.push_back(CheckpointRecord{extra.substr(0, nl), std::move(*info), extra.substr(nl + 1)});
  }
  return out;
}

}  // namespace logit
