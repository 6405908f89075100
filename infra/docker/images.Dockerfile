# The image processor (services/images). Build from the repository root:
#   docker build -f infra/docker/images.Dockerfile -t media-images .
FROM oven/bun:1.4.5-slim

# heif-convert decodes HEIC (sharp's prebuilt libvips has no HEVC decoder). Debian 13 split libheif's decoders
# into plugins that libheif1 only recommends, so the HEVC one is asked for by name where it exists; Debian 12's
# libheif1 has it built in. Before the application layers: this changes least often.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libheif-examples \
    && if apt-cache show libheif-plugin-libde265 >/dev/null 2>&1; then apt-get install -y --no-install-recommends libheif-plugin-libde265; fi \
    && command -v heif-convert \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV NODE_ENV=production

# Manifests first, so the dependency layer is rebuilt only when they change. Every workspace's manifest is copied:
# --frozen-lockfile refuses a set of workspaces other than the one bun.lock was made for.
COPY package.json bun.lock ./
COPY shared/package.json shared/
COPY services/api/package.json services/api/
COPY services/audio/package.json services/audio/
COPY services/images/package.json services/images/
COPY services/videos/package.json services/videos/
RUN bun install --frozen-lockfile --production

COPY shared/ shared/
COPY services/images/ services/images/
COPY infra/docker/healthcheck.ts infra/docker/

# Work directories (originals and outputs while a job runs): mount a volume here for large files.
ENV IMAGES_TMP_DIR=/scratch
RUN mkdir -p /scratch && chown bun:bun /scratch
USER bun

# libvips allocates through glibc's malloc; two arenas keep the processor's memory flat (an arena per thread kept
# 60–100 MB more, growing over thousands of images: issue 13's figure 7).
ENV MALLOC_ARENA_MAX=2

# /metrics, /livez and /readyz (no listener when METRICS_PORT is unset).
ENV METRICS_PORT=9100
EXPOSE 9100
# Running jobs get SHUTDOWN_GRACE_SECONDS (25 s) to finish, then go back to the queue: give the container longer
# than that to stop (compose: stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["bun", "infra/docker/healthcheck.ts", "METRICS_PORT"]
CMD ["bun", "services/images/main.ts"]
