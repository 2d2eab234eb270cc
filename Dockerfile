# Build stage: a static binary (CGO_ENABLED=0: no libc, so it runs on
# distroless/static). Modules are downloaded first so that a code change
# does not download them again.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/balancer ./balancer

# Final stage: the binary alone, as uid 65532. The balancer re-executes
# itself as its workers ("balancer backend"), so this one file is all the
# image needs. Workers default to one per CPU of the container's CPU limit.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/balancer /balancer
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/balancer"]
# The admin API stays on the container's loopback; publish only 8080.
CMD ["-listen", ":8080", "-admin-listen", "127.0.0.1:9090"]
