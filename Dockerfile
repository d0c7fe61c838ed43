# syntax=docker/dockerfile:1
#
# RauskuClaw gateway image.
#   docker build -t rauskuclaw:latest .
#   docker run -d -p 127.0.0.1:8787:8787 -v rauskuclaw-data:/data rauskuclaw:latest
# On first start (without RAUSKU_API_KEY) an admin key is printed to the logs and saved to
# /data/admin.key. Configuration: RAUSKU_* environment variables, or /data/rauskuclaw.toml
# (the working directory is /data). See docker-compose.yml for the usual settings.

# --- build -----------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The caches need BuildKit (the default builder of current Docker and of `docker compose`).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway \
    && install -D -m 0755 target/release/rauskuclaw /out/rauskuclaw

# --- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to callbacks, GitHub and allowlisted hosts; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 rausku \
    && useradd --system --uid 10001 --gid rausku --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin rausku \
    && mkdir -p /data \
    && chown rausku:rausku /data \
    && chmod 0700 /data
COPY --from=builder /out/rauskuclaw /usr/local/bin/rauskuclaw

ENV RAUSKU_LISTEN=0.0.0.0:8787 RAUSKU_DATA_DIR=/data
WORKDIR /data
VOLUME ["/data"]
USER rausku
EXPOSE 8787
# Assumes the default port; change it here too if RAUSKU_LISTEN uses another one.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8787/health || exit 1
# The gateway handles SIGTERM itself (stops accepting, lets running attempts finish within
# RAUSKU_SHUTDOWN_GRACE_SECS, flushes, exits 0).
ENTRYPOINT ["rauskuclaw"]
CMD ["serve"]
