#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace nftnapi {

// NftBatchNative: sends a prepared nf_tables netlink batch (one transaction) and collects the
// kernel's answer to each message, on a libuv worker thread.
class NftBatchNative : public Napi::ObjectWrap<NftBatchNative> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit NftBatchNative(const Napi::CallbackInfo& info);
  ~NftBatchNative() override;

  int fd() const { return fd_; }
  bool busy_ = false;

 private:
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value PortId(const Napi::CallbackInfo& info);

  int fd_ = -1;
  uint32_t portId_ = 0;
};

}  // namespace nftnapi
