# kube-baseline manager image: one statically linked binary FROM scratch — no shell, no libc, no
# package manager — running as UID/GID 65532. `make image` builds it and e2e/tests/image.rs runs it.
#
# Build argument BINARY chooses where the binary comes from; the runtime stage is the same:
#   BINARY=build     (default) the Rust stage below builds it with image/static-build.sh:
#                    `podman build -t kube-baseline:0.1.0 .` or `docker build ...`.
#   BINARY=prebuilt  image/static-build.sh has already built it on the host (image/kube-baseline)
#                    and it is taken from the context: what `make image` does where no registry
#                    serves the Rust image (this repository's CI). Same script, same command.
ARG BINARY=build
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The manifest names the e2e test targets, so their sources must be present to build.
COPY e2e ./e2e
COPY image/static-build.sh ./image/
RUN image/static-build.sh /kube-baseline

FROM scratch AS prebuilt
COPY image/kube-baseline /kube-baseline

FROM ${BINARY} AS binary

FROM scratch
COPY --from=binary /kube-baseline /kube-baseline
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/kube-baseline"]
CMD ["run"]
