// nftables-napi: a thin N-API binding over libnftables (libnftables.so.1).
//
// One native NftContext owns at most one `struct nft_ctx`. Every call into
// libnftables happens on a libuv worker thread (Napi::AsyncWorker), never on
// the event loop, and under one process-wide mutex: libnftables keeps
// process-global state (the interface cache released by every run, one-time
// gmp/xtables initialisation in nft_ctx_new), so two contexts must not run at
// the same time either. The TypeScript wrapper queues runs so that the mutex is
// never contended (no pool thread ever blocks on it); the mutex and the `busy_`
// check below are the native backstop.
//
// Network namespaces are per thread on Linux. A context bound to a namespace
// path enters it (setns) on the worker thread for the duration of the run and
// returns to the thread's previous namespace afterwards. nft_ctx_new() opens
// the netfilter netlink socket, so the nft_ctx is created lazily inside the
// worker while the thread is in the target namespace; if the namespace behind
// the path changes identity (deleted and re-created), the nft_ctx is re-created.

#include <napi.h>
#include <nftables/libnftables.h>

#include <fcntl.h>
#include <linux/netlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace {

std::mutex g_nft_mutex;

std::string ErrnoText(int err) {
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

class RunWorker;

class NftContextNative : public Napi::ObjectWrap<NftContextNative> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NftContextNative",
                       {
                           InstanceMethod<&NftContextNative::Run>("run"),
                           InstanceMethod<&NftContextNative::Close>("close"),
                       });
  }

  explicit NftContextNative(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NftContextNative>(info) {
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

  ~NftContextNative() override { FreeCtx(); }

 private:
  friend class RunWorker;

  Napi::Value Run(const Napi::CallbackInfo& info);

  Napi::Value Close(const Napi::CallbackInfo& info) {
    closed_ = true;
    if (!busy_) FreeCtx();  // otherwise the in-flight worker frees it when it completes
    return info.Env().Undefined();
  }

  void FreeCtx() {
    if (ctx_ == nullptr) return;
    std::lock_guard<std::mutex> lock(g_nft_mutex);
    nft_ctx_free(ctx_);
    ctx_ = nullptr;
  }

  // Worker-thread side. Called with g_nft_mutex held and the thread already in
  // the target namespace (if any).
  bool EnsureCtx(const NsId& ns, std::string* err) {
    if (ctx_ != nullptr && ctxNs_ != ns) {
      // The namespace behind the path was replaced: the old ctx's netlink
      // socket still talks to the old namespace.
      nft_ctx_free(ctx_);
      ctx_ = nullptr;
    }
    if (ctx_ != nullptr) return true;

    // nft_ctx_new() calls exit() if it cannot open its netlink socket; check
    // first so that we can report an error instead of killing the process.
    int probe = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (probe < 0) {
      *err = "cannot open a netfilter netlink socket: " + ErrnoText(errno);
      return false;
    }
    close(probe);

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
    return true;
  }

  std::string netns_;
  nft_ctx* ctx_ = nullptr;
  NsId ctxNs_;
  bool busy_ = false;
  bool closed_ = false;
};

class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, NftContextNative* owner, Napi::Object self, std::string commands, bool check)
      : Napi::AsyncWorker(env, "nftables-napi:run"),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        self_(Napi::Persistent(self)),
        commands_(std::move(commands)),
        check_(check) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    std::lock_guard<std::mutex> lock(g_nft_mutex);

    NsId ns;
    int selfFd = -1;
    if (!owner_->netns_.empty()) {
      const std::string& path = owner_->netns_;
      int targetFd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (targetFd < 0) {
        SetError("cannot open network namespace " + path + ": " + ErrnoText(errno));
        return;
      }
      struct stat st;
      if (fstat(targetFd, &st) != 0) {
        int e = errno;
        close(targetFd);
        SetError("cannot stat network namespace " + path + ": " + ErrnoText(e));
        return;
      }
      ns.dev = st.st_dev;
      ns.ino = st.st_ino;
      selfFd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
      if (selfFd < 0) {
        int e = errno;
        close(targetFd);
        SetError("cannot open /proc/thread-self/ns/net: " + ErrnoText(e));
        return;
      }
      if (setns(targetFd, CLONE_NEWNET) != 0) {
        int e = errno;
        close(targetFd);
        close(selfFd);
        SetError("cannot enter network namespace " + path + ": " + ErrnoText(e));
        return;
      }
      close(targetFd);
    }

    RunInCurrentNamespace(ns);

    if (selfFd >= 0) {
      if (setns(selfFd, CLONE_NEWNET) != 0) {
        // A pooled libuv thread left in a foreign namespace would silently run
        // unrelated work (DNS, other contexts) there. Refuse to continue.
        std::fprintf(stderr, "nftables-napi: FATAL: cannot return worker thread to its network namespace: %s\n",
                     ErrnoText(errno).c_str());
        std::abort();
      }
      close(selfFd);
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
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& e) override {
    Release();
    deferred_.Reject(e.Value());
  }

 private:
  void RunInCurrentNamespace(const NsId& ns) {
    std::string err;
    if (!owner_->EnsureCtx(ns, &err)) {
      SetError(err);
      return;
    }
    nft_ctx* ctx = owner_->ctx_;
    nft_ctx_set_dry_run(ctx, check_);
    errno = 0;
    rc_ = nft_run_cmd_from_buffer(ctx, commands_.c_str());
    errno_ = errno;
    nft_ctx_set_dry_run(ctx, false);
    // Both getters rewind their buffer for the next run.
    const char* out = nft_ctx_get_output_buffer(ctx);
    const char* errText = nft_ctx_get_error_buffer(ctx);
    output_ = out != nullptr ? out : "";
    error_ = errText != nullptr ? errText : "";
  }

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
  int rc_ = 0;
  int errno_ = 0;
  std::string output_;
  std::string error_;
};

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
  auto* worker = new RunWorker(env, this, info.This().As<Napi::Object>(), std::move(commands), check);
  busy_ = true;
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("NftContextNative", NftContextNative::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(nftables_napi, InitModule)
