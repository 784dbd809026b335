# Builds one Understudy binary. Build from the repository root:
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=tap -t understudy-tap .
# SERVICE is one of tap, invoker, joiner, aggregator, understudy (the CLI).
FROM golang:1.26-bookworm AS build
ARG SERVICE
WORKDIR /src
COPY . .
RUN cd services/${SERVICE} && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/app .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /usr/local/bin/app
USER nonroot
ENTRYPOINT ["/usr/local/bin/app"]
