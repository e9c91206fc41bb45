# syntax=docker/dockerfile:1
# One image for both Slipstream components; the Kubernetes manifests (deploy/) pick the command:
#   node --disable-sigusr1 --max-semi-space-size=2 --no-concurrent-recompilation --no-maglev webhook/build/main.mjs ...
#                                  the admission webhook, bundled by esbuild (Deployment, uid 65532)
#   node --disable-sigusr1 --max-semi-space-size=4 --expose-gc daemon/build/main.mjs ...  the node daemon, bundled the same way (DaemonSet, overrides
#                                  to uid 0 with CAP_NET_ADMIN only)
# Both run their bundles (`npm run build`, scripts/build.ts), not the TypeScript sources: no type
# stripping at start, less memory. The bundles find the addon and the shipped policy in /app.
#
#   docker build -t ghcr.io/slipstream-dev/slipstream:0.1.0 .
#
# test/deploy/dockerfile.test.ts checks that every COPY source exists and is not excluded by
# .dockerignore; nothing in this repository's CI builds the image.

ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: install production dependencies and compile the N-API addon -------------------------
FROM ${NODE_IMAGE} AS build
# node-gyp needs python3, make and a C++ compiler; the addon links against libnftables.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ pkg-config libnftables-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Manifests first, so the dependency layer is reused while only sources change. The addon's whole
# directory is needed here: node-gyp compiles it during `npm ci`. .npmrc keeps install scripts on.
COPY package.json package-lock.json .npmrc ./
COPY shared/package.json shared/
COPY webhook/package.json webhook/
COPY daemon/package.json daemon/
COPY shared/nftables-napi/ shared/nftables-napi/
# --omit=dev: only what runs in the cluster (the addon's build tools, node-gyp and node-addon-api,
# are its regular dependencies). The root devDependencies (a pinned Node binary, TypeScript, vitest,
# biome) have no place in the image, whose Node is the base image's. Without the pinned Node, the
# addon's install script (shared/nftables-napi/scripts/build.mjs) builds against the headers of the
# running Node, which this image ships under /usr/local/include/node: no header download.
RUN npm ci --omit=dev --no-audit --no-fund
COPY shared/ shared/
COPY webhook/ webhook/
COPY daemon/ daemon/

# ---- bundle: both components as esbuild output (webhook/build/, daemon/build/) -----------------------
FROM ${NODE_IMAGE} AS bundle
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
COPY shared/package.json shared/
COPY webhook/package.json webhook/
COPY daemon/package.json daemon/
COPY shared/nftables-napi/package.json shared/nftables-napi/
# Every dependency as the lockfile pins it (esbuild is a dev one), without install scripts: nothing
# is compiled here, only bundled.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY scripts/build.ts scripts/
COPY shared/ shared/
COPY webhook/ webhook/
COPY daemon/ daemon/
RUN npm run build

# ---- runtime ----------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# libnftables1: the addon's shared library. iproute2: the daemon runs `ip -json link show` and
# `ip monitor link`. conntrack: it reads the offloaded connections (`conntrack -L`) for metrics, status and
# to evict those of ports no longer offloaded. Then drop the package managers and headers nothing at run time uses.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnftables1 iproute2 conntrack \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
      /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
      /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-v* /usr/local/include/node
WORKDIR /app
ENV NODE_ENV=production
# Owned by root: the runtime user can read the app but not modify it.
COPY --from=build /app /app
COPY --from=bundle /app/webhook/build webhook/build
COPY --from=bundle /app/daemon/build daemon/build
# Non-root by default (the webhook). The DaemonSet sets runAsUser: 0 and adds only NET_ADMIN, because
# Kubernetes cannot give a non-root process a capability.
USER 65532:65532
CMD ["node", "--disable-sigusr1", "--max-semi-space-size=2", "--no-concurrent-recompilation", "--no-maglev", "webhook/build/main.mjs"]
