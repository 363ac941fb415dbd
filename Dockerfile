# The one image of dhis2-operator: the operator itself (the default command), and dhis2ctl, which
# the operator's backup, restore and drill Jobs run (`command: [dhis2ctl]`), with the PostgreSQL
# client tools they call. kubectl-dhis2 is there too, for `kubectl cp` to an admin's machine.
#
#   docker build -t registry.moh.gov.kh/dhis2-operator:0.1.0 .
#
# Then set the chart's image.repository/image.tag (or the image in manifests/install.yaml).
# The runtime packages are installed and checked by docker/install-runtime-packages.sh, which
# the tests also run on CI's own Debian machine (tests/helm_chart.rs).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# --locked: exactly the dependency versions CI tested.
RUN cargo build --release --locked --bins \
    && install -D -m 0755 -t /out \
       target/release/dhis2-operator target/release/dhis2ctl target/release/kubectl-dhis2

FROM debian:${DEBIAN_RELEASE}-slim
# The newest PostgreSQL the operator runs (postgis/postgis:16-3.4): pg_dump must be at least the
# server's major version. Raise it together with the managed database image.
ARG PG_MAJOR=16
COPY docker/install-runtime-packages.sh /usr/local/sbin/install-runtime-packages.sh
RUN PG_MAJOR=${PG_MAJOR} /usr/local/sbin/install-runtime-packages.sh
COPY --from=build /out/ /usr/local/bin/
# A numeric user: Kubernetes can then prove runAsNonRoot without reading /etc/passwd. The
# operator's pods and Jobs run with a read-only root filesystem; Jobs get an emptyDir /tmp.
USER 65532:65532
RUN dhis2-operator --version && dhis2ctl --version && kubectl-dhis2 --version
LABEL org.opencontainers.image.title="dhis2-operator" \
      org.opencontainers.image.description="Kubernetes operator for DHIS2, with dhis2ctl and the PostgreSQL client tools"
ENTRYPOINT ["dhis2-operator"]
CMD ["run"]
