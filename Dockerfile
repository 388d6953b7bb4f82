# The one image behind both `ottava operator` (the chart's Deployment) and the injected
# `ottava run --mode kubernetes` sidecar, for those who build with Docker. `make image`
# builds the same image without Docker (image/build.sh: debootstrap, umoci, skopeo) and is
# what the project ships and tests; keep the two in step. Same layout in both: Debian
# bookworm's python3 (3.11), the project and its runtime dependencies in a venv at
# /opt/ottava with precompiled .pyc (the root filesystem is read-only), no pip, uid 65532.
# (image/build.sh also purges the packages a container never runs, such as apt and perl.)
FROM debian:bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip binutils
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar sidecar
COPY operator operator
COPY cli cli
RUN python3 -m venv --without-pip /opt/ottava \
 && python3 -m pip --python /opt/ottava/bin/python install --no-cache-dir --no-compile . \
 && find /opt/ottava -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' \) -delete \
 && find /opt/ottava -name '*.so' -exec strip --strip-unneeded {} + \
 && rm -f /opt/ottava/bin/activate* /opt/ottava/bin/Activate.ps1 \
 && python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/ottava

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 ottava \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ottava
COPY --from=build /opt/ottava /opt/ottava
ENV PATH=/opt/ottava/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 50001 3500 9090 50002 9443 8080
ENTRYPOINT ["ottava"]
CMD ["run"]
