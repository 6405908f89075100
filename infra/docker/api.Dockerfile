# The HTTP API (services/api). Build from the repository root:
#   docker build -f infra/docker/api.Dockerfile -t media-api .
# Configuration is the environment (README, "Configuration"); DATABASE_URL should name PostgreSQL, as a container's
# SQLite file lives only as long as its volume.
FROM oven/bun:1.4.5-slim

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

# The API imports only itself and @app/shared.
COPY shared/ shared/
COPY services/api/ services/api/
COPY infra/docker/healthcheck.ts infra/docker/

# SQLite (when DATABASE_URL is unset) and the API's files go under DATA_DIR: the one directory the user may write.
ENV DATA_DIR=/data
RUN mkdir -p /data && chown bun:bun /data
USER bun

ENV PORT=3000
EXPOSE 3000
# The API stops taking requests and finishes those in flight on SIGTERM (services/api/main.ts).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["bun", "infra/docker/healthcheck.ts", "PORT"]
CMD ["bun", "services/api/main.ts"]
