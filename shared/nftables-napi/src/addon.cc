// nftables-napi: a thin N-API binding over libnftables (libnftables.so.1), plus a monitor of
// nf_tables change events. context.cc runs libnftables; monitor.cc reads events; netns.h enters
// network namespaces per thread.

#include <napi.h>

#include "context.h"
#include "monitor.h"

namespace {

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("NftContextNative", nftnapi::NftContextNative::Init(env));
  exports.Set("NftMonitorNative", nftnapi::NftMonitorNative::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(nftables_napi, InitModule)
