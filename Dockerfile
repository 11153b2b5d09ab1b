# syntax=docker/dockerfile:1
# meterd image: build with exactly the npm scripts CI runs (`npm ci`, `npm run build`), ship only
# dist/ + production node_modules + package.json, run as uid 10001 on a read-only root filesystem.
#   docker build -t meterd:dev .
#   docker run --rm -p 50051:50051 -p 9464:9464 -e REDIS_URL=... -e DATABASE_URL=... meterd:dev
# test/unit/packaging.test.ts checks this file statically (no Docker engine in CI).

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: generate the protobuf code, compile TypeScript, copy the Lua/migration/config assets ----
FROM ${NODE_IMAGE} AS build
# The npm CI runs (11): it honours package.json `allowScripts`, which the image's bundled npm 10 ignores.
ARG NPM_VERSION=11.19.1
RUN npm install --global --no-fund --no-audit "npm@${NPM_VERSION}"
WORKDIR /build
# What `npm ci` needs (its `prepare` runs `buf generate` over proto/) comes first, so editing src/
# does not re-download dependencies.
COPY package.json package-lock.json buf.yaml buf.gen.yaml ./
COPY proto ./proto
RUN npm ci
COPY . .
RUN npm run build

# ---- deps: production dependencies only; no install scripts (the one a production dependency has,
# protobufjs's postinstall, only prints version advice), so `prepare`/buf never runs here ----
FROM ${NODE_IMAGE} AS deps
ARG NPM_VERSION=11.19.1
RUN npm install --global --no-fund --no-audit "npm@${NPM_VERSION}"
WORKDIR /deps
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-fund --no-audit

# ---- runtime ----
FROM ${NODE_IMAGE} AS runtime
ARG NODE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="meterd" \
      org.opencontainers.image.description="gRPC metering sidecar for AI gateways: reserve, commit and release AI credits atomically in Redis" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="UNLICENSED" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"

# A numeric uid so Kubernetes `runAsNonRoot` can verify it without /etc/passwd lookups.
RUN groupadd --system --gid 10001 meterd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin meterd

WORKDIR /app
ENV NODE_ENV=production
# Files stay owned by root: the process reads them and writes nothing (logs go to stdout), so the
# root filesystem can be mounted read-only.
# package.json is needed at run time: its "type": "module" makes node load dist/**/*.js as ESM.
COPY package.json ./
COPY --from=deps /deps/node_modules ./node_modules
# dist/ holds the compiled service, the generated protobuf code (src/gen compiled in), and the
# assets the build copies: dist/src/redis/lua, dist/src/postgres/migrations,
# dist/src/config/product.example.yaml and dist/proto (read by server reflection).
COPY --from=build /build/dist ./dist

USER 10001:10001
EXPOSE 50051 9464
# Liveness of the process via its HTTP server (slim has no curl; node 20 has fetch). Readiness
# (/readyz: Redis and Postgres) is for the orchestrator, not a restart signal.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.HTTP_PORT || '9464') + '/healthz', { signal: AbortSignal.timeout(2500) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1: main.ts handles SIGTERM/SIGINT itself (drain, then exit).
ENTRYPOINT ["node", "dist/src/main.js"]
CMD ["serve"]
