#pragma once

#include <napi.h>
#include <nftables/libnftables.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "netns.h"

namespace nftnapi {

class RunWorker;

class NftContextNative : public Napi::ObjectWrap<NftContextNative> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit NftContextNative(const Napi::CallbackInfo& info);
  ~NftContextNative() override;

 private:
  friend class RunWorker;

  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value PortId(const Napi::CallbackInfo& info);

  void FreeCtx();
  // Worker-thread side: called with the global mutex held, inside the target namespace.
  bool EnsureCtx(const NsId& ns, std::string* err);

  std::string netns_;
  nft_ctx* ctx_ = nullptr;
  NsId ctxNs_;
  std::atomic<uint32_t> portId_{0};
  int socketFd_ = -1;
  bool busy_ = false;
  bool closed_ = false;
};

}  // namespace nftnapi
