# syntax=docker/dockerfile:1.7
#
# andera-lb container image: the load balancer (andera-lb) and the bundled Worker
# simulator (andera-worker-sim), on debian:bookworm-slim, running as an unprivileged user.
#
#   docker build -t andera-lb:local .
#   docker run --rm -p 4000:4000 -p 127.0.0.1:4001:4001 \
#     -e LB_AUTH_KEY="$(openssl rand -hex 32)" \
#     -v "$PWD/workers.json:/etc/andera-lb/workers.json:ro" andera-lb:local
#
# The whole stack (andera-lb, two simulated Workers, Prometheus): compose.yaml.
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# Pingora's build needs cmake and a C compiler (gcc is in the rust image). No OpenSSL:
# TLS is rustls.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# `strip --strip-debug` drops the DWARF data of `[profile.release] debug = 1` (most of
# the binary's size) but keeps the symbol table, so panics and profilers still show
# function names. Build with --build-arg STRIP_DEBUG=false to keep it.
ARG STRIP_DEBUG=true

# The registry, git checkouts and target/ live in BuildKit cache mounts, so a rebuild
# after a source change recompiles only the crate itself. The binaries are copied out
# of the cache mount in the same step (a cache mount is not part of the image layer).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && cp target/release/andera-lb target/release/andera-worker-sim /out/ \
 && if [ "$STRIP_DEBUG" = "true" ]; then strip --strip-debug /out/andera-lb /out/andera-worker-sim; fi \
 && /out/andera-lb --version \
 && /out/andera-worker-sim --version

# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

ARG UID=10001
ARG GID=10001

# ca-certificates: the rustls connector to https:// Workers loads the system roots.
# No curl: the health check uses bash's /dev/tcp (bash is part of every Debian image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid "${GID}" andera \
 && useradd --system --uid "${UID}" --gid andera --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin andera \
 && install -d -m 0755 /etc/andera-lb \
 && install -d -o andera -g andera -m 0750 /var/lib/andera-lb \
 && printf '[]\n' > /etc/andera-lb/workers.json

COPY --from=builder /out/andera-lb /out/andera-worker-sim /usr/local/bin/
COPY --chmod=0755 deploy/docker-entrypoint /usr/local/bin/andera-entrypoint
COPY --chmod=0755 deploy/healthcheck /usr/local/bin/andera-healthcheck
COPY --chmod=0644 deploy/andera-lb.container.yaml /etc/andera-lb/andera-lb.yaml

USER andera:andera
WORKDIR /var/lib/andera-lb

# Fail the build if the baked configuration does not load (throw-away key).
RUN LB_AUTH_KEY=image-build-check andera-lb -t --config /etc/andera-lb/andera-lb.yaml

# 4000: clients (POST /task, GET /health). 4001: admin sidecar (/metrics, /ready,
# /dashboard, /bull, /logs) - never publish it to the internet.
EXPOSE 4000 4001

# SIGTERM = graceful drain: the listeners close, in-flight and queued tasks get
# grace_period_s (30 s) to finish, the rest is answered 503, then exit 0. Give
# `docker stop` more than that: `docker stop -t 40`, or stop_grace_period: 40s.
STOPSIGNAL SIGTERM

# GET 127.0.0.1:$ADMIN_PORT (default 4001)/ready: 200 while serving; 503 or no listener
# while draining.
# bash /dev/tcp instead of curl: nothing to install, no extra attack surface.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/andera-healthcheck"]

ENTRYPOINT ["/usr/local/bin/andera-entrypoint", "andera-lb"]
CMD ["--config", "/etc/andera-lb/andera-lb.yaml"]
