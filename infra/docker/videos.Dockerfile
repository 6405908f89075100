# The video processor (services/videos). Build from the repository root:
#   docker build -f infra/docker/videos.Dockerfile -t media-videos .
FROM oven/bun:1.4.5-slim

# ffmpeg and ffprobe, Debian's build (with zscale, which HDR tone-mapping needs). Before the application layers:
# this changes least often.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && ffmpeg -hide_banner -filters | grep -q zscale \
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
COPY services/videos/ services/videos/
COPY infra/docker/healthcheck.ts infra/docker/

# Work directories: a job holds its original and every rendition here (gigabytes): mount a volume.
ENV VIDEOS_TMP_DIR=/scratch
RUN mkdir -p /scratch && chown bun:bun /scratch
USER bun

# /metrics, /livez and /readyz (no listener when METRICS_PORT is unset).
ENV METRICS_PORT=9100
EXPOSE 9100
# Running jobs get SHUTDOWN_GRACE_SECONDS (25 s) to finish, then go back to the queue: give the container longer
# than that to stop (compose: stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["bun", "infra/docker/healthcheck.ts", "METRICS_PORT"]
CMD ["bun", "services/videos/main.ts"]
