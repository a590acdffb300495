# Natter container image: a static-enough release binary on a distroless base, run as a non-root
# user with a read-only root filesystem (nothing is written outside the mounted config).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The same command CI runs to check this file (see .ci/run).
RUN cargo build --release --locked --bin natter

FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/natter /usr/local/bin/natter
COPY config /etc/natter/config
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/natter", "--config-dir", "/etc/natter/config"]
CMD ["serve"]
