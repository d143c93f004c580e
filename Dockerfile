# syntax=docker/dockerfile:1
#
# Herald's production image: the `herald` binary on Debian slim, run as an unprivileged user.
#
#   docker build -t herald .
#   docker run --rm -p 50051:50051 -e HERALD_ADMIN_KEY=... herald
#
# The build needs the whole workspace (every member of the root Cargo.toml, and proto/,
# which server/build.rs compiles with protox, so no system protoc is needed).
# .dockerignore keeps target/, .git and node_modules out of the context.

# ---------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds (BuildKit, the default
# builder of current Docker); the binary is copied out of target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p herald --locked \
    && install -D -m 0755 target/release/herald /out/herald

# ---------------------------------------------------------------------------------------
# Same Debian release as the builder, so the glibc the binary links against is there.
# TLS is rustls (no OpenSSL); ca-certificates is the only package added.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The home directory is the working directory: the default SQLite database
# (sqlite://herald.db) lands there when no PostgreSQL URL is given.
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --home-dir /var/lib/herald --create-home \
       --shell /usr/sbin/nologin herald
COPY --from=builder /out/herald /usr/local/bin/herald
WORKDIR /var/lib/herald
USER 10001:10001

# Herald's default listen address is 127.0.0.1:50051, which nothing outside the container
# can reach: listen on every interface, on the default port.
ENV HERALD_LISTEN_ADDR=0.0.0.0:50051
EXPOSE 50051

# A TCP check with bash's /dev/tcp (no curl or grpc_health_probe in the image). Herald
# binds its port only after migrations and the admin key bootstrap, so an open port means
# it has started; it does not follow grpc.health.v1's NOT_SERVING (database down): probe
# that from outside (grpcurl, grpc_health_probe, a Kubernetes grpc probe). The port is
# taken from HERALD_LISTEN_ADDR at run time.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${HERALD_LISTEN_ADDR##*:}"]

# SIGTERM (docker stop) starts a graceful shutdown: in-flight calls finish, tails end.
ENTRYPOINT ["herald"]
CMD ["serve"]
