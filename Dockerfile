# The one image behind both `ottava operator` (the chart's Deployment) and the injected
# `ottava run --mode kubernetes` sidecar. Runs as the unprivileged uid the injector and
# the chart declare (65532), with a read-only root filesystem.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar sidecar
COPY operator operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
USER 65532:65532
EXPOSE 50001 3500 9090 50002 9443 8080
ENTRYPOINT ["ottava"]
CMD ["run"]
