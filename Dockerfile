# genserve's embedded server (`genserve serve`) as an image: TF Serving's gRPC and REST APIs on CPU,
# for amd64 and arm64 clusters (python:slim and the tensorflow wheels exist for both).
#
#   genserve export toy --models-dir models
#   docker build -t genserve --build-arg MODELS_DIR=models .      # models baked in at /models
#   docker run -p 8500:8500 -p 8501:8501 genserve
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/genserve --push .
#
# For models on a volume (genserve deploy kubernetes --runtime genserve --pvc NAME), build with an empty
# folder: `mkdir -p empty && docker build --build-arg MODELS_DIR=empty -t genserve .`.
# The CMD is genserve.deploy.args.genserve_args() (the Kubernetes manifests use the same list; a test
# compares them and parses them with the real `genserve serve` command). See docs/deploy.md.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG MODELS_DIR=models

WORKDIR /opt/genserve
COPY pyproject.toml setup.py README.md ./
COPY genserve/ genserve/
# gcc for the one C file (genserve/serving/_json_floats.c: the REST float format at C speed), removed
# again in the same layer.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir '.[tf]' \
    && (cd / && python -c "import genserve.serving._json_floats") \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --no-create-home genserve

# Prometheus settings (the ConfigMap of the Kubernetes manifests mounts its copy at the same path).
COPY genserve/deploy/monitoring.config /etc/genserve/monitoring.config
# The models directory genserve's export writer fills: <name>/<version>/ and models.config.
COPY ${MODELS_DIR}/ /models/

USER 1000
# 8500: gRPC (PredictionService, ModelService, grpc.health.v1.Health); 8501: REST, /v1/health/ready,
# /monitoring/prometheus/metrics.
EXPOSE 8500 8501
ENTRYPOINT ["genserve"]
CMD ["serve", "--models-dir", "/models", "--host", "0.0.0.0", "--port", "8500", "--rest-port", "8501", \
     "--poll-seconds", "5", "--enable-batching", \
     "--monitoring-config-file", "/etc/genserve/monitoring.config", "--drain-seconds", "20", \
     "--enable-grpc-healthcheck-service"]
