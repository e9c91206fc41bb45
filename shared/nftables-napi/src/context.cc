// NftContextNative: one `struct nft_ctx`, runs on libuv worker threads.
//
// Every call into libnftables happens on a worker (Napi::AsyncWorker), never on the event loop,
// and under one process-wide mutex: libnftables keeps process-global state (the interface cache
// released by every run, one-time gmp/xtables initialisation in nft_ctx_new), so two contexts must
// not run at the same time either. The TypeScript wrapper queues runs so that the mutex is never
// contended; the mutex and the `busy_` check are the native backstop.
//
// nft_ctx_new() opens the netfilter netlink socket, so the nft_ctx is created lazily inside the
// worker while the thread is in the target namespace; if the namespace behind the path changes
// identity (deleted and re-created), the nft_ctx is re-created.
//
// Two things libnftables does not offer are recovered here:
// - the netlink port id of its socket (found by comparing the process's sockets before and after
//   nft_ctx_new): change events in the kernel carry the committing socket's port id, so a monitor
//   can tell this context's own commits from anyone else's;
// - messages libnftables prints straight to the C `stderr` (e.g. "(you must be root)"): `stderr`
//   is pointed at a memory stream for the duration of the call, so they are returned with the run
//   (and logged by the caller as structured lines) instead of stray text on the process's stderr.

#include "context.h"

#include <dirent.h>
#include <linux/netlink.h>
#include <malloc.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>

#include "netns.h"

namespace nftnapi {

namespace {

std::mutex g_nft_mutex;

/** Runs of at least this much command text (~1,500 elements) hand glibc's freed pages back. */
constexpr size_t kTrimAfterBytes = 64 * 1024;

std::set<ino_t> SocketInodes() {
  std::set<ino_t> out;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0') continue;
    struct stat st;
    if (fstat(static_cast<int>(fd), &st) == 0 && S_ISSOCK(st.st_mode)) out.insert(st.st_ino);
  }
  closedir(dir);
  return out;
}

// Whether `fd` is a netfilter netlink socket; its port id (0 until the kernel binds it at the
// first send) in *portId.
bool IsNetfilterSocket(int fd, uint32_t* portId) {
  int protocol = 0;
  socklen_t plen = sizeof(protocol);
  sockaddr_nl addr{};
  socklen_t alen = sizeof(addr);
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &plen) != 0 || protocol != NETLINK_NETFILTER ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0 || addr.nl_family != AF_NETLINK) {
    return false;
  }
  *portId = addr.nl_pid;
  return true;
}

// A netfilter netlink socket that is not in `before`, or -1.
int NewNetfilterSocket(const std::set<ino_t>& before) {
  int found = -1;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0') continue;
    struct stat st;
    uint32_t id = 0;
    if (fstat(static_cast<int>(fd), &st) == 0 && S_ISSOCK(st.st_mode) && before.count(st.st_ino) == 0 &&
        IsNetfilterSocket(static_cast<int>(fd), &id)) {
      found = static_cast<int>(fd);
    }
  }
  closedir(dir);
  return found;
}

// Points the C `stderr` at a memory stream while alive; `text()` is what was printed.
class StderrCapture {
 public:
  StderrCapture() {
    stream_ = open_memstream(&buf_, &len_);
    if (stream_ != nullptr) {
      saved_ = stderr;
      stderr = stream_;
    }
  }
  ~StderrCapture() { Release(); }
  std::string text() {
    Release();
    return text_;
  }

 private:
  void Release() {
    if (stream_ == nullptr) return;
    fflush(stream_);
    stderr = saved_;
    fclose(stream_);
    stream_ = nullptr;
    if (buf_ != nullptr) text_.assign(buf_, len_);
    free(buf_);
    buf_ = nullptr;
  }
  FILE* stream_ = nullptr;
  FILE* saved_ = nullptr;
  char* buf_ = nullptr;
  size_t len_ = 0;
  std::string text_;
};

}  // namespace

class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, NftContextNative* owner, Napi::Object self, std::string commands, bool check,
            bool release)
      : Napi::AsyncWorker(env, "nftables-napi:run"),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        self_(Napi::Persistent(self)),
        commands_(std::move(commands)),
        check_(check),
        release_(release) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    std::lock_guard<std::mutex> lock(g_nft_mutex);
    NetnsGuard guard(owner_->netns_);
    if (!guard.ok()) {
      SetError(guard.error());
      return;
    }
    StderrCapture capture;
    std::string err;
    if (!owner_->EnsureCtx(guard.id(), &err)) {
      stray_ = capture.text();
      SetError(err + (stray_.empty() ? "" : ": " + stray_));
      return;
    }
    nft_ctx* ctx = owner_->ctx_;
    nft_ctx_set_dry_run(ctx, check_);
    errno = 0;
    rc_ = nft_run_cmd_from_buffer(ctx, commands_.c_str());
    errno_ = errno;
    // The kernel binds the socket (assigns its port id) at its first send, inside a run.
    uint32_t id = 0;
    if (owner_->socketFd_ >= 0 && IsNetfilterSocket(owner_->socketFd_, &id)) owner_->portId_ = id;
    nft_ctx_set_dry_run(ctx, false);
    // Both getters rewind their buffer for the next run.
    const char* out = nft_ctx_get_output_buffer(ctx);
    const char* errText = nft_ctx_get_error_buffer(ctx);
    output_ = out != nullptr ? out : "";
    error_ = errText != nullptr ? errText : "";
    stray_ = capture.text();
    if (release_) {
      // libnftables keeps its cache (every listed element, ~1 KB each) in the context until a
      // later run finds the generation changed. Freeing the context frees it; the next run opens
      // a new one. malloc_trim hands the freed pages back to the kernel instead of keeping them
      // in glibc's arenas.
      commands_.clear();
      commands_.shrink_to_fit();
      nft_ctx_free(owner_->ctx_);
      owner_->ctx_ = nullptr;
      owner_->portId_ = 0;
      owner_->socketFd_ = -1;
      malloc_trim(0);
    } else if (commands_.size() >= kTrimAfterBytes) {
      // A large commit (100,000 elements: ~170 MB of libnftables' parse and evaluation, freed
      // by the run's end) leaves glibc's arenas holding the pages. Trimmed here, off the main
      // thread; the context, its socket and port id (which tell our own commits apart) stay.
      commands_.clear();
      commands_.shrink_to_fit();
      malloc_trim(0);
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Release();
    Napi::Object result = Napi::Object::New(env);
    result.Set("rc", Napi::Number::New(env, rc_));
    result.Set("errno", Napi::Number::New(env, errno_));
    result.Set("output", Napi::String::New(env, output_));
    result.Set("error", Napi::String::New(env, error_));
    result.Set("stray", Napi::String::New(env, stray_));
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& e) override {
    Release();
    deferred_.Reject(e.Value());
  }

 private:
  void Release() {
    owner_->busy_ = false;
    if (owner_->closed_) owner_->FreeCtx();
    self_.Reset();
  }

  Napi::Promise::Deferred deferred_;
  NftContextNative* owner_;
  Napi::ObjectReference self_;  // keeps the JS object (and so owner_) alive while in flight
  std::string commands_;
  bool check_;
  bool release_;
  int rc_ = 0;
  int errno_ = 0;
  std::string output_;
  std::string error_;
  std::string stray_;
};

Napi::Function NftContextNative::Init(Napi::Env env) {
  return DefineClass(env, "NftContextNative",
                     {
                         InstanceMethod<&NftContextNative::Run>("run"),
                         InstanceMethod<&NftContextNative::Close>("close"),
                         InstanceMethod<&NftContextNative::PortId>("portId"),
                     });
}

NftContextNative::NftContextNative(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NftContextNative>(info) {
  if (info.Length() > 0 && !info[0].IsUndefined() && !info[0].IsNull()) {
    if (!info[0].IsString()) {
      Napi::TypeError::New(info.Env(), "netns must be a string path").ThrowAsJavaScriptException();
      return;
    }
    netns_ = info[0].As<Napi::String>().Utf8Value();
    if (netns_.empty()) {
      Napi::TypeError::New(info.Env(), "netns must be a non-empty path").ThrowAsJavaScriptException();
      return;
    }
  }
}

NftContextNative::~NftContextNative() { FreeCtx(); }

Napi::Value NftContextNative::Close(const Napi::CallbackInfo& info) {
  closed_ = true;
  if (!busy_) FreeCtx();  // otherwise the in-flight worker frees it when it completes
  return info.Env().Undefined();
}

Napi::Value NftContextNative::PortId(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), portId_.load());
}

void NftContextNative::FreeCtx() {
  if (ctx_ == nullptr) return;
  std::lock_guard<std::mutex> lock(g_nft_mutex);
  nft_ctx_free(ctx_);
  ctx_ = nullptr;
  portId_ = 0;
  socketFd_ = -1;
}

bool NftContextNative::EnsureCtx(const NsId& ns, std::string* err) {
  if (ctx_ != nullptr && ctxNs_ != ns) {
    // The namespace behind the path was replaced: the old ctx's netlink socket still talks to
    // the old namespace.
    nft_ctx_free(ctx_);
    ctx_ = nullptr;
    portId_ = 0;
  }
  if (ctx_ != nullptr) return true;

  // nft_ctx_new() calls exit() if it cannot open its netlink socket; check first so that we can
  // report an error instead of killing the process.
  int probe = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (probe < 0) {
    *err = "cannot open a netfilter netlink socket: " + ErrnoText(errno);
    return false;
  }
  close(probe);

  std::set<ino_t> before = SocketInodes();
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == nullptr) {
    *err = "nft_ctx_new failed";
    return false;
  }
  nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON);
  if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
    nft_ctx_free(ctx);
    *err = "cannot buffer libnftables output";
    return false;
  }
  ctx_ = ctx;
  ctxNs_ = ns;
  portId_ = 0;
  socketFd_ = NewNetfilterSocket(before);
  return true;
}

Napi::Value NftContextNative::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) {
    Napi::Error::New(env, "NftContext is closed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (busy_) {
    Napi::Error::New(env, "NftContext is busy: runs on one context must be serialized")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "commands must be a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string commands = info[0].As<Napi::String>().Utf8Value();
  if (commands.find('\0') != std::string::npos) {
    Napi::TypeError::New(env, "commands must not contain NUL characters").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  bool check = info.Length() > 1 && info[1].ToBoolean().Value();
  bool release = info.Length() > 2 && info[2].ToBoolean().Value();
  auto* worker =
      new RunWorker(env, this, info.This().As<Napi::Object>(), std::move(commands), check, release);
  busy_ = true;
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace nftnapi
