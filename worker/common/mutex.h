// absl::Mutex and absl::CondVar as the coordinator and the worker agent use them, made visible to ThreadSanitizer.
// Debian's Abseil is not built with TSan, so its lock operations are invisible to it and every
// access guarded by a bare absl::Mutex would be reported as a race. These wrappers tell TSan
// about each acquire and release (its mutex annotation API) and compile to the plain absl calls
// otherwise. Thread-safety analysis (clang -Wthread-safety) sees them as ordinary capabilities:
// use ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED with them as with absl::Mutex.
#ifndef LOGIT_WORKER_COMMON_MUTEX_H_
#define LOGIT_WORKER_COMMON_MUTEX_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#if defined(__SANITIZE_THREAD__)
#define LOGIT_TSAN_MUTEX 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LOGIT_TSAN_MUTEX 1
#endif
#endif
#ifdef LOGIT_TSAN_MUTEX
#include <sanitizer/tsan_interface.h>
#endif

namespace logit {

class CondVar;

// An absl::Mutex (exclusive only). Not copyable or movable.
class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  ~Mutex() {
#ifdef LOGIT_TSAN_MUTEX
    __tsan_mutex_destroy(this, 0);
#endif
  }

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_.Lock();
    AnnotateLocked();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    AnnotateUnlocking();
    mu_.Unlock();
  }

 private:
  friend class CondVar;
  void AnnotateLocked() {
#ifdef LOGIT_TSAN_MUTEX
    __tsan_mutex_pre_lock(this, 0);
    __tsan_mutex_post_lock(this, 0, 0);
#endif
  }
  void AnnotateUnlocking() {
#ifdef LOGIT_TSAN_MUTEX
    __tsan_mutex_pre_unlock(this, 0);
    __tsan_mutex_post_unlock(this, 0);
#endif
  }

  absl::Mutex mu_;
};

// Holds `mu` for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }

 private:
  Mutex* const mu_;
};

// An absl::CondVar over a logit::Mutex.
class CondVar {
 public:
  // Releases `mu`, waits for a Signal/SignalAll or `timeout`, reacquires `mu`. Returns true on
  // timeout. Spurious wake-ups happen: callers re-check their condition.
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    mu->AnnotateUnlocking();
    const bool timed_out = cv_.WaitWithTimeout(&mu->mu_, timeout);
    mu->AnnotateLocked();
    return timed_out;
  }
  void SignalAll() { cv_.SignalAll(); }

 private:
  absl::CondVar cv_;
};

}  // namespace logit

#endif  // LOGIT_WORKER_COMMON_MUTEX_H_
