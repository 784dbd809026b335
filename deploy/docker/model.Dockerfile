# Serves a demo model (Open Inference Protocol v2) for the docker-compose stack.
#   MODEL=champion|candidate
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
RUN cd services/understudy && CGO_ENABLED=0 go build -trimpath -o /out/understudy .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/understudy /usr/local/bin/understudy
USER nonroot
ENTRYPOINT ["/usr/local/bin/understudy", "model"]
