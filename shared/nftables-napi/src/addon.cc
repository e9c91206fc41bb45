// nftables-napi: a thin N-API binding over libnftables (libnftables.so.1), plus a monitor of
// nf_tables change events and a writer of prepared netlink batches. context.cc runs libnftables;
// monitor.cc reads events; batch.cc sends batches; netns.h enters network namespaces per thread.

#include <napi.h>

#include "batch.h"
#include "context.h"
#include "monitor.h"

namespace {

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("NftBatchNative", nftnapi::NftBatchNative::Init(env));
  exports.Set("NftContextNative", nftnapi::NftContextNative::Init(env));
  exports.Set("NftMonitorNative", nftnapi::NftMonitorNative::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(nftables_napi, InitModule)
