// NftMonitorNative: nf_tables change events for one table, what `nft monitor` listens to.
//
// A netfilter netlink socket, opened inside the target network namespace, joins the
// NFNLGRP_NFTABLES multicast group and is polled by the event loop (uv_poll, unref'd: it never
// keeps the process alive). The kernel sends one message per changed object of every committed
// transaction (any table, anyone's), then NFT_MSG_NEWGEN with the new generation id, the
// committer's pid and process name; the message header carries the committing socket's netlink
// port id. Messages about the watched table are counted per (operation, kind, object) and handed
// to JavaScript once per transaction, at its NEWGEN, with the generation and the committer.
// Transactions that do not touch the watched table cost a parse, never a callback.
//
// `requestGeneration()` sends NFT_MSG_GETGEN on the same socket; the reply (a NEWGEN addressed to
// this socket's own port id) is reported as a `generation` event. A full receive buffer (ENOBUFS:
// events were dropped) is reported as `overrun`: the caller can no longer know what changed and
// must read the table back.

#include "monitor.h"

#include <arpa/inet.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "netns.h"

namespace nftnapi {

namespace {

struct Kind {
  const char* op;
  const char* kind;
  int nameAttr;  // attribute holding the object's name (0: the table itself)
};

// Message type -> what changed. Attribute 1 is the table name for every one of them.
bool KindOf(int type, Kind* out) {
  switch (type) {
    case NFT_MSG_NEWTABLE: *out = {"add", "table", 0}; return true;
    case NFT_MSG_DELTABLE: *out = {"delete", "table", 0}; return true;
    case NFT_MSG_NEWCHAIN: *out = {"add", "chain", NFTA_CHAIN_NAME}; return true;
    case NFT_MSG_DELCHAIN: *out = {"delete", "chain", NFTA_CHAIN_NAME}; return true;
    case NFT_MSG_NEWRULE: *out = {"add", "rule", NFTA_RULE_CHAIN}; return true;
    case NFT_MSG_DELRULE: *out = {"delete", "rule", NFTA_RULE_CHAIN}; return true;
    case NFT_MSG_NEWSET: *out = {"add", "set", NFTA_SET_NAME}; return true;
    case NFT_MSG_DELSET: *out = {"delete", "set", NFTA_SET_NAME}; return true;
    case NFT_MSG_NEWSETELEM: *out = {"add", "element", NFTA_SET_ELEM_LIST_SET}; return true;
    case NFT_MSG_DELSETELEM: *out = {"delete", "element", NFTA_SET_ELEM_LIST_SET}; return true;
    case NFT_MSG_NEWOBJ: *out = {"add", "object", NFTA_OBJ_NAME}; return true;
    case NFT_MSG_DELOBJ: *out = {"delete", "object", NFTA_OBJ_NAME}; return true;
    case NFT_MSG_NEWFLOWTABLE: *out = {"add", "flowtable", NFTA_FLOWTABLE_NAME}; return true;
    case NFT_MSG_DELFLOWTABLE: *out = {"delete", "flowtable", NFTA_FLOWTABLE_NAME}; return true;
    default: return false;
  }
}

// Walks the attributes in `left` bytes from `p` (a message's, or those nested in an attribute's
// payload); calls f(type, data, len) for each.
template <typename F>
void ForEachNested(const char* p, size_t left, F f) {
  while (left >= sizeof(nlattr)) {
    const nlattr* a = reinterpret_cast<const nlattr*>(p);
    if (a->nla_len < sizeof(nlattr) || a->nla_len > left) return;
    f(a->nla_type & NLA_TYPE_MASK, p + NLA_HDRLEN, static_cast<size_t>(a->nla_len - NLA_HDRLEN));
    size_t step = NLA_ALIGN(a->nla_len);
    if (step >= left) return;
    p += step;
    left -= step;
  }
}

// Walks the attributes of a nf_tables message (after its headers).
template <typename F>
void ForEachAttr(const nlmsghdr* h, F f) {
  const size_t header = NLMSG_LENGTH(NLMSG_ALIGN(sizeof(nfgenmsg)));
  if (h->nlmsg_len < header) return;
  ForEachNested(reinterpret_cast<const char*>(h) + header, h->nlmsg_len - header, f);
}

std::string AttrString(const char* data, size_t len) {
  size_t n = strnlen(data, len);
  return std::string(data, n);
}

uint32_t AttrU32(const char* data, size_t len) {
  if (len < 4) return 0;
  uint32_t v;
  std::memcpy(&v, data, 4);
  return ntohl(v);
}

}  // namespace

Napi::Function NftMonitorNative::Init(Napi::Env env) {
  return DefineClass(env, "NftMonitorNative",
                     {
                         InstanceMethod<&NftMonitorNative::RequestGeneration>("requestGeneration"),
                         InstanceMethod<&NftMonitorNative::RequestFlowtable>("requestFlowtable"),
                         InstanceMethod<&NftMonitorNative::Close>("close"),
                         InstanceMethod<&NftMonitorNative::PortId>("portId"),
                     });
}

// new NftMonitorNative(netns: string | undefined, family: number, table: string, rcvbuf: number, callback)
NftMonitorNative::NftMonitorNative(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NftMonitorNative>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsNumber() ||
      !info[4].IsFunction()) {
    Napi::TypeError::New(env, "NftMonitorNative(netns, family, table, rcvbuf, callback)")
        .ThrowAsJavaScriptException();
    return;
  }
  std::string netns;
  if (info[0].IsString()) netns = info[0].As<Napi::String>().Utf8Value();
  family_ = info[1].As<Napi::Number>().Int32Value();
  table_ = info[2].As<Napi::String>().Utf8Value();
  int rcvbuf = info[3].As<Napi::Number>().Int32Value();
  callback_ = Napi::Persistent(info[4].As<Napi::Function>());
  context_ = std::make_unique<Napi::AsyncContext>(env, "nftables-napi:monitor");
  env_ = env;

  {
    // The socket belongs to the namespace it is created in: enter it only for socket().
    NetnsGuard guard(netns);
    if (!guard.ok()) {
      Napi::Error::New(env, guard.error()).ThrowAsJavaScriptException();
      return;
    }
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER);
  }
  if (fd_ < 0) {
    Napi::Error::New(env, "cannot open a netfilter netlink socket: " + ErrnoText(errno))
        .ThrowAsJavaScriptException();
    return;
  }
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  socklen_t alen = sizeof(addr);
  int group = NFNLGRP_NFTABLES;
  if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &alen) != 0 ||
      setsockopt(fd_, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) != 0) {
    std::string why = ErrnoText(errno);
    close(fd_);
    fd_ = -1;
    Napi::Error::New(env, "cannot subscribe to nf_tables events: " + why).ThrowAsJavaScriptException();
    return;
  }
  portId_ = addr.nl_pid;
  // A large batch (100,000 elements) is some 10 MB of events: ask for room (root may exceed
  // rmem_max with SO_RCVBUFFORCE), fall back to what the system allows.
  if (rcvbuf > 0 && setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) {
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr ||
      uv_poll_init_socket(loop, &poll_, fd_) != 0) {
    close(fd_);
    fd_ = -1;
    Napi::Error::New(env, "cannot poll the nf_tables event socket").ThrowAsJavaScriptException();
    return;
  }
  poll_.data = this;
  uv_poll_start(&poll_, UV_READABLE, [](uv_poll_t* handle, int status, int) {
    static_cast<NftMonitorNative*>(handle->data)->OnReadable(status);
  });
  uv_unref(reinterpret_cast<uv_handle_t*>(&poll_));
  polling_ = true;
  Ref();  // alive while the socket is open, whatever JavaScript holds
  // At process or worker exit the socket is closed before the environment goes.
  napi_add_env_cleanup_hook(env, [](void* self) { static_cast<NftMonitorNative*>(self)->Teardown(); }, this);
}

void NftMonitorNative::Teardown() {
  tearingDown_ = true;
  if (fd_ >= 0 && polling_) {
    uv_poll_stop(&poll_);
    // The loop will not run again: close the handle's fd now; libuv frees nothing of ours.
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), nullptr);
    close(fd_);
    fd_ = -1;
  }
}

NftMonitorNative::~NftMonitorNative() {
  if (!tearingDown_) napi_remove_env_cleanup_hook(env_, [](void* self) { static_cast<NftMonitorNative*>(self)->Teardown(); }, this);
  if (fd_ >= 0 && !polling_) close(fd_);
}

Napi::Value NftMonitorNative::PortId(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), portId_);
}

// Sends one nf_tables request on the monitor's socket; the reply comes back addressed to its
// port id with this sequence number. Returns the sequence number, or 0 (and a JS exception).
uint32_t NftMonitorNative::SendRequest(Napi::Env env, int type, int family, const std::string& table,
                                       const std::string& name) {
  if (fd_ < 0 || closing_) {
    Napi::Error::New(env, "the monitor is closed").ThrowAsJavaScriptException();
    return 0;
  }
  char buf[1024] = {};
  auto* h = reinterpret_cast<nlmsghdr*>(buf);
  h->nlmsg_len = NLMSG_LENGTH(sizeof(nfgenmsg));
  h->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | type;
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  h->nlmsg_seq = ++seq_;
  auto* g = reinterpret_cast<nfgenmsg*>(NLMSG_DATA(h));
  g->nfgen_family = static_cast<uint8_t>(family);
  g->version = NFNETLINK_V0;
  auto put = [&](int attr, const std::string& value) {
    size_t len = NLA_HDRLEN + value.size() + 1;
    if (NLMSG_ALIGN(h->nlmsg_len) + NLA_ALIGN(len) > sizeof(buf)) return false;
    auto* a = reinterpret_cast<nlattr*>(buf + NLMSG_ALIGN(h->nlmsg_len));
    a->nla_type = static_cast<uint16_t>(attr);
    a->nla_len = static_cast<uint16_t>(len);
    std::memcpy(reinterpret_cast<char*>(a) + NLA_HDRLEN, value.c_str(), value.size() + 1);
    h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + NLA_ALIGN(len);
    return true;
  };
  if ((!table.empty() && !put(1, table)) || (!name.empty() && !put(2, name))) {
    Napi::Error::New(env, "request too long").ThrowAsJavaScriptException();
    return 0;
  }
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd_, buf, h->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
    Napi::Error::New(env, "cannot send an nf_tables request: " + ErrnoText(errno)).ThrowAsJavaScriptException();
    return 0;
  }
  return h->nlmsg_seq;
}

Napi::Value NftMonitorNative::RequestGeneration(const Napi::CallbackInfo& info) {
  uint32_t seq = SendRequest(info.Env(), NFT_MSG_GETGEN, AF_UNSPEC, "", "");
  return Napi::Number::New(info.Env(), seq);
}

// requestFlowtable(family: number, table: string, name: string): seq
Napi::Value NftMonitorNative::RequestFlowtable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsString()) {
    Napi::TypeError::New(env, "requestFlowtable(family, table, name)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t seq = SendRequest(env, NFT_MSG_GETFLOWTABLE, info[0].As<Napi::Number>().Int32Value(),
                             info[1].As<Napi::String>().Utf8Value(), info[2].As<Napi::String>().Utf8Value());
  return Napi::Number::New(env, seq);
}

Napi::Value NftMonitorNative::Close(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

void NftMonitorNative::Shutdown() {
  if (closing_ || !polling_) return;
  closing_ = true;
  uv_poll_stop(&poll_);
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), [](uv_handle_t* handle) {
    auto* self = static_cast<NftMonitorNative*>(handle->data);
    if (self->fd_ >= 0) close(self->fd_);
    self->fd_ = -1;
    self->polling_ = false;
    if (!self->tearingDown_) self->Unref();
  });
}

void NftMonitorNative::OnReadable(int status) {
  if (closing_ || tearingDown_) return;
  try {
    Drain(status);
  } catch (...) {
    // Never let a C++ exception escape into libuv (the process would abort).
  }
}

void NftMonitorNative::Drain(int status) {
  if (status < 0) {
    // libuv stops polling on POLLERR (reporting EBADF): a netlink socket signals a full receive
    // buffer that way. Read (and so clear) the socket error, and poll again.
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == ENOBUFS) {
      changes_.clear();
      Emit("overrun", "");
      if (closing_) return;
      uv_poll_start(&poll_, UV_READABLE, [](uv_poll_t* handle, int st, int) {
        static_cast<NftMonitorNative*>(handle->data)->OnReadable(st);
      });
      status = 0;
    } else {
      Emit("error", err != 0 ? ErrnoText(err) : uv_strerror(status));
      return;
    }
  }
  std::vector<char> buf(1 << 18);
  for (;;) {
    ssize_t n = recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == ENOBUFS) {
        // Events were dropped: what is being collected is incomplete too.
        changes_.clear();
        Emit("overrun", "");
        if (closing_) return;
        continue;
      }
      Emit("error", ErrnoText(errno));
      return;
    }
    int left = static_cast<int>(n);
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      OnMessage(h);
      if (closing_) return;
    }
  }
}

void NftMonitorNative::OnMessage(const nlmsghdr* h) {
  if (h->nlmsg_pid == portId_ && portId_ != 0) {
    OnReply(h);
    return;
  }
  if ((h->nlmsg_type >> 8) != NFNL_SUBSYS_NFTABLES) return;
  int type = h->nlmsg_type & 0xff;
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) return;
  const auto* g = reinterpret_cast<const nfgenmsg*>(NLMSG_DATA(h));

  if (type == NFT_MSG_NEWGEN) {
    uint32_t gen = 0, pid = 0;
    std::string process;
    ForEachAttr(h, [&](int t, const char* d, size_t len) {
      if (t == NFTA_GEN_ID) gen = AttrU32(d, len);
      if (t == NFTA_GEN_PROC_PID) pid = AttrU32(d, len);
      if (t == NFTA_GEN_PROC_NAME) process = AttrString(d, len);
    });
    if (!changes_.empty()) EmitBatch(gen, h->nlmsg_pid, pid, process);
    return;
  }
  Kind kind;
  if (!KindOf(type, &kind) || g->nfgen_family != family_) return;
  std::string table, name;
  ForEachAttr(h, [&](int t, const char* d, size_t len) {
    if (t == 1) table = AttrString(d, len);
    else if (kind.nameAttr != 0 && t == kind.nameAttr) name = AttrString(d, len);
  });
  if (table != table_) return;
  changes_[std::string(kind.op) + "\n" + kind.kind + "\n" + name]++;
}

// A message addressed to this socket: the answer (or the error) to one of its requests.
void NftMonitorNative::OnReply(const nlmsghdr* h) {
  Napi::Env env(env_);
  Napi::HandleScope scope(env);
  Napi::Object event = Napi::Object::New(env);
  event.Set("seq", Napi::Number::New(env, h->nlmsg_seq));
  if (h->nlmsg_type == NLMSG_ERROR) {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return;
    const auto* err = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(h));
    if (err->error == 0) return;  // the ACK after a successful answer
    event.Set("type", "reply-error");
    event.Set("errno", Napi::Number::New(env, -err->error));
    event.Set("message", ErrnoText(-err->error));
    Call(event);
    return;
  }
  if ((h->nlmsg_type >> 8) != NFNL_SUBSYS_NFTABLES) return;
  int type = h->nlmsg_type & 0xff;
  if (type == NFT_MSG_NEWGEN) {
    uint32_t gen = 0;
    ForEachAttr(h, [&](int t, const char* d, size_t len) {
      if (t == NFTA_GEN_ID) gen = AttrU32(d, len);
    });
    event.Set("type", "generation");
    event.Set("generation", Napi::Number::New(env, gen));
    Call(event);
    return;
  }
  if (type == NFT_MSG_NEWFLOWTABLE) {
    uint32_t flags = 0, hooknum = 0, priority = 0;
    Napi::Array devices = Napi::Array::New(env);
    ForEachAttr(h, [&](int t, const char* d, size_t len) {
      if (t == NFTA_FLOWTABLE_FLAGS) flags = AttrU32(d, len);
      if (t != NFTA_FLOWTABLE_HOOK) return;
      ForEachNested(d, len, [&](int ht, const char* hd, size_t hlen) {
        if (ht == NFTA_FLOWTABLE_HOOK_NUM) hooknum = AttrU32(hd, hlen);
        if (ht == NFTA_FLOWTABLE_HOOK_PRIORITY) priority = AttrU32(hd, hlen);
        if (ht != NFTA_FLOWTABLE_HOOK_DEVS) return;
        ForEachNested(hd, hlen, [&](int dt, const char* dd, size_t dlen) {
          if (dt == NFTA_DEVICE_NAME) devices.Set(devices.Length(), AttrString(dd, dlen));
        });
      });
    });
    event.Set("type", "flowtable");
    event.Set("flags", Napi::Number::New(env, flags));
    event.Set("hook", Napi::Number::New(env, hooknum));
    event.Set("priority", Napi::Number::New(env, static_cast<int32_t>(priority)));
    event.Set("devices", devices);
    Call(event);
  }
}

void NftMonitorNative::Call(Napi::Object event) {
  try {
    callback_.MakeCallback(Value(), {event}, *context_);
  } catch (const Napi::Error& e) {
    if (!e.Value().IsEmpty()) napi_fatal_exception(env_, e.Value());
  }
}

void NftMonitorNative::Emit(const char* type, const std::string& message) {
  Napi::Env env(env_);
  Napi::HandleScope scope(env);
  Napi::Object event = Napi::Object::New(env);
  event.Set("type", type);
  if (!message.empty()) event.Set("message", message);
  Call(event);
}

void NftMonitorNative::EmitBatch(uint32_t gen, uint32_t portId, uint32_t pid, const std::string& process) {
  Napi::Env env(env_);
  Napi::HandleScope scope(env);
  Napi::Object event = Napi::Object::New(env);
  event.Set("type", "batch");
  event.Set("generation", Napi::Number::New(env, gen));
  event.Set("portId", Napi::Number::New(env, portId));
  event.Set("pid", Napi::Number::New(env, pid));
  event.Set("process", process);
  Napi::Array list = Napi::Array::New(env, changes_.size());
  uint32_t i = 0;
  for (const auto& [key, count] : changes_) {
    size_t a = key.find('\n');
    size_t b = key.find('\n', a + 1);
    Napi::Object change = Napi::Object::New(env);
    change.Set("op", key.substr(0, a));
    change.Set("kind", key.substr(a + 1, b - a - 1));
    change.Set("name", key.substr(b + 1));
    change.Set("count", Napi::Number::New(env, count));
    list.Set(i++, change);
  }
  changes_.clear();
  event.Set("changes", list);
  Call(event);
}

}  // namespace nftnapi
