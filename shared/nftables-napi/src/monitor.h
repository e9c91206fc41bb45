#pragma once

#include <linux/netlink.h>
#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace nftnapi {

class NftMonitorNative : public Napi::ObjectWrap<NftMonitorNative> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit NftMonitorNative(const Napi::CallbackInfo& info);
  ~NftMonitorNative() override;

 private:
  Napi::Value RequestGeneration(const Napi::CallbackInfo& info);
  Napi::Value RequestFlowtable(const Napi::CallbackInfo& info);
  uint32_t SendRequest(Napi::Env env, int type, int family, const std::string& table, const std::string& name);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value PortId(const Napi::CallbackInfo& info);

  void Shutdown();
  void Teardown();
  void OnReadable(int status);
  void Drain(int status);
  void OnMessage(const nlmsghdr* h);
  void OnReply(const nlmsghdr* h);
  void Call(Napi::Object event);
  void Emit(const char* type, const std::string& message);
  void EmitBatch(uint32_t gen, uint32_t portId, uint32_t pid, const std::string& process);

  napi_env env_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
  int family_ = 0;
  std::string table_;
  int fd_ = -1;
  uint32_t portId_ = 0;
  uint32_t seq_ = 0;
  uv_poll_t poll_{};
  bool polling_ = false;
  bool closing_ = false;
  bool tearingDown_ = false;
  // "op\nkind\nname" -> messages, for the transaction being received.
  std::map<std::string, uint32_t> changes_;
};

}  // namespace nftnapi
