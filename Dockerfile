# kube-baseline manager image: one statically linked binary FROM scratch — no shell, no libc, no
# package manager — running as UID/GID 65532. e2e/tests/image.rs runs it.
#
# Two ways to the same image (the `runtime` stage plus one binary built by image/static-build.sh):
#   default (last stage)  the Rust stage below builds the binary:
#                         `podman build -t kube-baseline:0.1.0 .` or `docker build ...`
#   --target prebuilt     image/static-build.sh already ran on the host and wrote
#                         image/kube-baseline, which is copied in: what `make image` does where
#                         no registry serves the Rust image (this repository's machines).
# (A stage chosen by a build argument, `FROM ${BINARY}`, is not resolved by buildah 1.28:
# it skips the stage and then tries to pull an image named "build".)
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The manifest names the e2e test targets, so their sources must be present to build.
COPY e2e ./e2e
COPY image/static-build.sh ./image/
RUN image/static-build.sh /kube-baseline

FROM scratch AS runtime
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/kube-baseline"]
CMD ["run"]

FROM runtime AS prebuilt
COPY image/kube-baseline /kube-baseline

FROM runtime
COPY --from=build /kube-baseline /kube-baseline
