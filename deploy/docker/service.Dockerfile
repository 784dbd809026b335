# Builds one Understudy binary. Build from the repository root:
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=tap -t understudy-tap .
# SERVICE is one of tap, invoker, joiner, aggregator, understudy (the CLI).
# The dashboard's charting library comes from npm and is embedded at build time.
FROM node:20-bookworm-slim AS assets
WORKDIR /src
COPY services/aggregator/internal/dashboard/package.json services/aggregator/internal/dashboard/package-lock.json services/aggregator/internal/dashboard/
COPY scripts/dashboard-assets.sh scripts/
RUN scripts/dashboard-assets.sh

FROM golang:1.26-bookworm AS build
ARG SERVICE
WORKDIR /src
COPY . .
COPY --from=assets /src/services/aggregator/internal/dashboard/static/vendor services/aggregator/internal/dashboard/static/vendor
RUN cd services/${SERVICE} && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/app .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /usr/local/bin/app
USER nonroot
ENTRYPOINT ["/usr/local/bin/app"]
