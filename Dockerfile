# One container: attache, and the Envoy it supervises (`attache serve --envoy`).
#
# Not built by CI (no container engine on the machines it runs on): it is kept deliberately
# plain. Envoy comes from the official image of the version the tests run against (1.40.0).
#   docker build -t attache:latest .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin attache

FROM envoyproxy/envoy:v1.40.0 AS envoy

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=envoy /usr/local/bin/envoy /usr/local/bin/envoy
COPY --from=build /src/target/release/attache /usr/local/bin/attache
USER 65532:65532
EXPOSE 8080 8443 8877
ENTRYPOINT ["/usr/local/bin/attache"]
CMD ["serve", "--kubernetes", "--envoy", "--admin-listen=0.0.0.0:8877"]
