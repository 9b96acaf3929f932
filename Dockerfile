# streamgmm daemon image.
#
#   docker build -t streamgmm .
#   docker run --rm -p 9108:9108 \
#     -v $PWD/config/streamgmm.yaml:/etc/streamgmm/streamgmm.yaml:ro \
#     -v $PWD/tls:/etc/streamgmm/tls:ro \
#     -v streamgmm-state:/var/lib/streamgmm \
#     -e KAFKA_SASL_PASSWORD=... \
#     --stop-timeout 30 streamgmm
#
#   docker run --rm streamgmm run --demo          # the no-Kafka demo
#   docker run --rm -e KAFKA_SASL_PASSWORD=... -v $PWD/tls:/etc/streamgmm/tls:ro streamgmm \
#     check-config /etc/streamgmm/streamgmm.yaml   # also reaches the cluster; --offline: validate only
#
# The config is read from /etc/streamgmm/streamgmm.yaml (mount yours there). The example baked
# in connects with SASL_SSL: it needs KAFKA_SASL_PASSWORD and the cluster's CA certificate at
# /etc/streamgmm/tls/ca.pem (the tls mount above); for a plaintext cluster pass
# -e STREAMGMM__KAFKA__SECURITY='{}' instead of both, as docker-compose.yml does.
# STREAMGMM__SECTION__KEY environment variables override any key.
# Checkpoints belong on the /var/lib/streamgmm volume (checkpoint.path in the config).
# Metrics, /healthz and /readyz are served on port 9108.

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user with a fixed uid/gid (so volume permissions are predictable).
RUN groupadd --system --gid 10001 streamgmm \
 && useradd --system --uid 10001 --gid streamgmm --home-dir /var/lib/streamgmm \
      --shell /usr/sbin/nologin streamgmm \
 && mkdir -p /etc/streamgmm /var/lib/streamgmm \
 && chown streamgmm:streamgmm /var/lib/streamgmm

WORKDIR /src
# Build metadata first, then the package, so code edits do not bust the dependency layer.
COPY pyproject.toml README.md ./
COPY streamgmm ./streamgmm
RUN pip install . \
 && cd / && rm -rf /src \
 && streamgmm --version

COPY config/streamgmm.yaml /etc/streamgmm/streamgmm.yaml

USER streamgmm:streamgmm
WORKDIR /var/lib/streamgmm
VOLUME ["/var/lib/streamgmm"]
EXPOSE 9108

# Liveness: the daemon's /healthz (python, because the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM (docker stop) makes the daemon finish its batch, commit, checkpoint and exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamgmm"]
CMD ["run", "--config", "/etc/streamgmm/streamgmm.yaml"]
