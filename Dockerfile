# syntax=docker/dockerfile:1
# The one image of mishards: the gateway, the data nodes, the demo and the tools are the same binary.
# docker-compose/ and the Helm chart (deploy/helm/mishards) run it. Build from the repository root:
#   docker build -t mishards:0.1.0 .
# Multi-stage: the Rust toolchain stays in the build stage; the image holds the binary, the example
# configs and glibc (distroless "cc"), runs as the unprivileged user 65532 and has no shell.

FROM rust:1-bookworm AS build
WORKDIR /src
# The workspace: its manifest, every crate, the wire contract the proto crate compiles (protoc is vendored:
# no system packages needed), the binary's sources, and benches/ (the manifest names its bench targets).
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY proto proto
COPY src src
COPY benches benches
# The registry and target caches live across builds (BuildKit); the binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mishards \
    && mkdir -p /out/var/lib/mishards \
    && cp target/release/mishards /out/mishards

# gcr.io/distroless/cc-debian12 is Debian 12's glibc, libgcc and CA certificates, nothing else: the same
# Debian release as the build stage, so the binary's glibc matches.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mishards /usr/local/bin/mishards
COPY config /etc/mishards
# The data folder belongs to the runtime user, so a fresh named volume mounted there (docker compose) is
# writable; on Kubernetes the chart mounts volumes here and fsGroup makes them writable.
COPY --from=build --chown=65532:65532 /out/var/lib/mishards /var/lib/mishards
USER 65532:65532
WORKDIR /var/lib/mishards
EXPOSE 19530 19121
ENTRYPOINT ["mishards"]
