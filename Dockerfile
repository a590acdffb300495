# Natter container image: a release binary on a distroless base, run as a non-root user with a
# read-only root filesystem. `docker run -p 8080:8080 IMAGE` needs no configuration: it serves on
# 0.0.0.0:8080 in embedded mode with its SQLite database in the /var/lib/natter volume.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The same command CI runs to check this file (see .ci/run).
RUN cargo build --release --locked --bin natter
# The data directory, owned by the user the image runs as (distroless has no shell to chown).
RUN mkdir -p /out/var/lib/natter && chown 10001:10001 /out/var/lib/natter

FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/natter /usr/local/bin/natter
COPY config /etc/natter/config
COPY --from=build --chown=10001:10001 /out/var/lib/natter /var/lib/natter
# config/container.toml: bind every interface (the port is published from outside) and keep the
# database in the volume. A layer under the environment, so DATABASE_URL, NATS_URL and NATTER_…
# still override it; the Helm chart sets NATTER_ENV=production and its own config instead.
ENV NATTER_ENV=container
USER 10001:10001
WORKDIR /
VOLUME ["/var/lib/natter"]
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/natter", "--config-dir", "/etc/natter/config", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/natter", "--config-dir", "/etc/natter/config"]
CMD ["serve"]
