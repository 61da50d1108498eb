# kube-baseline manager image. Not built in this repository's CI (no container engine there);
# see README "Install on a cluster".
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The manifest names the e2e test targets, so their sources must be present to build.
COPY e2e ./e2e
RUN cargo build --release --locked --bin kube-baseline

# distroless/cc: glibc and CA certificates only, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kube-baseline /usr/local/bin/kube-baseline
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kube-baseline"]
CMD ["run"]
