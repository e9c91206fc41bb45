// NftBatchNative: one nf_tables transaction written as netlink messages, without libnftables.
//
// A libnftables run re-reads its cache after every generation change and parses its text first:
// milliseconds per run, for element changes the kernel commits in microseconds (a plain set
// element; see batch.ts for the jump case). For element-only changes the caller (batch.ts) encodes the
// messages itself; this class only moves bytes: a netfilter netlink socket opened in the target
// namespace (bound at once, so its port id is known before the first commit: change events carry
// it), a send of the whole batch (BATCH_BEGIN ... BATCH_END: the kernel commits it or nothing),
// and the kernel's answer to every message that asked for an acknowledgement (0 or -errno, by
// sequence number), all on a worker thread.

#include "batch.h"

#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "netns.h"

namespace nftnapi {

namespace {

// How long the kernel may take to answer a batch before the commit is reported failed.
constexpr int kAnswerTimeoutMs = 10000;

class SendWorker : public Napi::AsyncWorker {
 public:
  SendWorker(Napi::Env env, NftBatchNative* owner, Napi::Object self, std::vector<char> bytes,
             std::set<uint32_t> expected)
      : Napi::AsyncWorker(env, "nftables-napi:batch"),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        self_(Napi::Persistent(self)),
        bytes_(std::move(bytes)),
        expected_(std::move(expected)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    const int fd = owner_->fd();
    // netlink refuses a message longer than the socket's send buffer (212 KB by default, ~2,500
    // IPv6 elements): sized to the batch, as libnftables does (FORCE needs CAP_NET_ADMIN, which a
    // writer of nf_tables has; SO_SNDBUF alone stops at net.core.wmem_max).
    int size = static_cast<int>(bytes_.size());
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    ssize_t sent = sendto(fd, bytes_.data(), bytes_.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                          sizeof kernel);
    if (sent < 0 || static_cast<size_t>(sent) != bytes_.size()) {
      SetError("cannot send the netlink batch: " + ErrnoText(sent < 0 ? errno : EMSGSIZE));
      return;
    }
    std::vector<char> buffer(1 << 16);
    while (!expected_.empty()) {
      pollfd p{fd, POLLIN, 0};
      int ready = poll(&p, 1, kAnswerTimeoutMs);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) {
        SetError("the kernel did not answer the netlink batch: " + ErrnoText(ready == 0 ? ETIMEDOUT : errno));
        return;
      }
      ssize_t n = recv(fd, buffer.data(), buffer.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        SetError("cannot read the kernel's answer: " + ErrnoText(errno));
        return;
      }
      size_t left = static_cast<size_t>(n);
      for (const nlmsghdr* h = reinterpret_cast<const nlmsghdr*>(buffer.data()); NLMSG_OK(h, left);
           h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_type != NLMSG_ERROR || h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) continue;
        const nlmsgerr* e = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(h));
        answers_.emplace_back(h->nlmsg_seq, e->error);
        expected_.erase(h->nlmsg_seq);
        // An error answer to a message that asked for none (the batch itself refused) ends it.
        if (e->error != 0 && expected_.count(h->nlmsg_seq) == 0) stop_ = true;
      }
      if (stop_) break;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Release();
    Napi::Array out = Napi::Array::New(env, answers_.size());
    for (size_t i = 0; i < answers_.size(); i++) {
      Napi::Object a = Napi::Object::New(env);
      a.Set("seq", Napi::Number::New(env, answers_[i].first));
      a.Set("errno", Napi::Number::New(env, -answers_[i].second));
      out.Set(static_cast<uint32_t>(i), a);
    }
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override {
    Release();
    deferred_.Reject(e.Value());
  }

 private:
  void Release() {
    owner_->busy_ = false;
    self_.Reset();
  }

  Napi::Promise::Deferred deferred_;
  NftBatchNative* owner_;
  Napi::ObjectReference self_;
  std::vector<char> bytes_;
  std::set<uint32_t> expected_;
  std::vector<std::pair<uint32_t, int>> answers_;
  bool stop_ = false;
};

}  // namespace

Napi::Function NftBatchNative::Init(Napi::Env env) {
  return DefineClass(env, "NftBatchNative",
                     {
                         InstanceMethod<&NftBatchNative::Send>("send"),
                         InstanceMethod<&NftBatchNative::Close>("close"),
                         InstanceMethod<&NftBatchNative::PortId>("portId"),
                     });
}

// new NftBatchNative(netns?: string)
NftBatchNative::NftBatchNative(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NftBatchNative>(info) {
  Napi::Env env = info.Env();
  std::string netns;
  if (info.Length() > 0 && info[0].IsString()) netns = info[0].As<Napi::String>().Utf8Value();
  {
    // The socket belongs to the namespace it is created in: enter it only for socket().
    NetnsGuard guard(netns);
    if (!guard.ok()) {
      Napi::Error::New(env, guard.error()).ThrowAsJavaScriptException();
      return;
    }
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  }
  if (fd_ < 0) {
    Napi::Error::New(env, "cannot open a netfilter netlink socket: " + ErrnoText(errno))
        .ThrowAsJavaScriptException();
    return;
  }
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  socklen_t len = sizeof local;
  if (bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) < 0 ||
      getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &len) < 0) {
    int err = errno;
    close(fd_);
    fd_ = -1;
    Napi::Error::New(env, "cannot bind a netfilter netlink socket: " + ErrnoText(err))
        .ThrowAsJavaScriptException();
    return;
  }
  portId_ = local.nl_pid;
  // Acknowledgements without a copy of the message they answer: an error reply would otherwise
  // echo its whole message (up to ~20 KB), and a batch of them could overflow the receive buffer.
  int one = 1;
  setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
}

NftBatchNative::~NftBatchNative() {
  if (fd_ >= 0) close(fd_);
}

// send(batch: Buffer, acked: number[]): Promise<{ seq, errno }[]>
Napi::Value NftBatchNative::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsArray()) {
    Napi::TypeError::New(env, "send(batch: Buffer, acked: number[])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (fd_ < 0) {
    Napi::Error::New(env, "the batch writer is closed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (busy_) {
    Napi::Error::New(env, "a batch is already in flight").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Buffer<char> buf = info[0].As<Napi::Buffer<char>>();
  std::vector<char> bytes(buf.Data(), buf.Data() + buf.Length());
  Napi::Array acked = info[1].As<Napi::Array>();
  std::set<uint32_t> expected;
  for (uint32_t i = 0; i < acked.Length(); i++) expected.insert(acked.Get(i).As<Napi::Number>().Uint32Value());
  busy_ = true;
  auto* worker = new SendWorker(env, this, info.This().As<Napi::Object>(), std::move(bytes), std::move(expected));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value NftBatchNative::Close(const Napi::CallbackInfo& info) {
  if (fd_ >= 0 && !busy_) {
    close(fd_);
    fd_ = -1;
  }
  return info.Env().Undefined();
}

Napi::Value NftBatchNative::PortId(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), portId_);
}

}  // namespace nftnapi
