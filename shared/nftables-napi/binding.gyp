{
  "targets": [
    {
      "target_name": "nftables_napi",
      "sources": ["src/addon.cc", "src/batch.cc", "src/context.cc", "src/monitor.cc"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lnftables"]
    }
  ]
}
