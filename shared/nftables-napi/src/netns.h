// Entering a network namespace for the duration of a scope, on the calling thread only.
//
// Network namespaces are per thread on Linux: a guard opens the target path and the thread's
// current namespace, setns()es into the target, and returns on destruction. A thread that cannot
// return would silently run unrelated work (DNS, other contexts, the event loop) in a foreign
// namespace, so the process aborts instead.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace nftnapi {

inline std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r returns a char* that may or may not point into buf.
  const char* text = strerror_r(err, buf, sizeof(buf));
  return std::string(text);
}

struct NsId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const NsId& o) const { return dev == o.dev && ino == o.ino; }
  bool operator!=(const NsId& o) const { return !(*this == o); }
};

class NetnsGuard {
 public:
  // An empty path: stay in the current namespace (a no-op guard).
  explicit NetnsGuard(const std::string& path) {
    if (path.empty()) return;
    int targetFd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (targetFd < 0) {
      error_ = "cannot open network namespace " + path + ": " + ErrnoText(errno);
      return;
    }
    struct stat st;
    if (fstat(targetFd, &st) != 0) {
      error_ = "cannot stat network namespace " + path + ": " + ErrnoText(errno);
      close(targetFd);
      return;
    }
    id_.dev = st.st_dev;
    id_.ino = st.st_ino;
    selfFd_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (selfFd_ < 0) {
      error_ = "cannot open /proc/thread-self/ns/net: " + ErrnoText(errno);
      close(targetFd);
      return;
    }
    if (setns(targetFd, CLONE_NEWNET) != 0) {
      error_ = "cannot enter network namespace " + path + ": " + ErrnoText(errno);
      close(targetFd);
      close(selfFd_);
      selfFd_ = -1;
      return;
    }
    close(targetFd);
  }

  ~NetnsGuard() {
    if (selfFd_ < 0) return;
    if (setns(selfFd_, CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "nftables-napi: FATAL: cannot return a thread to its network namespace: %s\n",
                   ErrnoText(errno).c_str());
      std::abort();
    }
    close(selfFd_);
  }

  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  // The target namespace's identity (zero for the no-op guard).
  const NsId& id() const { return id_; }

 private:
  std::string error_;
  NsId id_;
  int selfFd_ = -1;
};

}  // namespace nftnapi
