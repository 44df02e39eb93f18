# The MNIST inference service image: onnxruntime + FastAPI, no torch, no compilers, non-root.
#   docker build -t mnist-serve:cpu .                                # CPU (default)
#   docker build --build-arg VARIANT=gpu -t mnist-serve:gpu .        # onnxruntime-gpu + CUDA/cuDNN wheels
# pip installs the hash-pinned locks docker/requirements/<variant>.txt from the package index (or the mirror
# the PIP_INDEX_URL build arg names); BuildKit keeps the downloads in a cache mount across builds.
# Offline and hermetic instead: fetch the locked wheels on the host, then build without any index:
#   docker/ci/wheelhouse.sh cpu && docker build --build-arg WHEELS=wheelhouse -t mnist-serve:cpu .
# Needs BuildKit: the default builder since Docker 23 (DOCKER_BUILDKIT=1 on older engines).
# The GPU image runs on CPU-only hosts too: onnxruntime falls back to the CPU provider (logged, and the
# `provider` label of mnist_model_info says which one serves).
ARG PYTHON_IMAGE=python:3.11-slim
ARG VARIANT=cpu
# Where pip gets the locked wheels: "index" or "wheelhouse" (wheelhouse/<variant>/ in the build context).
ARG WHEELS=index

# The wheel sources, one stage each; BuildKit builds only the one WHEELS names.
FROM scratch AS wheels-index
FROM scratch AS wheels-wheelhouse
ARG VARIANT
COPY wheelhouse/${VARIANT}/ /
# hadolint ignore=DL3006
FROM wheels-${WHEELS} AS wheels

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT
ARG WHEELS
# A mirror of the package index (plain http: also PIP_TRUSTED_HOST, or pip neither trusts nor caches it).
ARG PIP_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY docker/requirements/ docker/requirements/
# The project's own build backend (setuptools) comes from a lock too: nothing unpinned enters the image.
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=bind,from=wheels,target=/wheels \
    if [ "$WHEELS" = wheelhouse ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi \
    && /opt/venv/bin/pip install --require-hashes --no-deps \
        -r "docker/requirements/${VARIANT}.txt" -r docker/requirements/build.txt
COPY pyproject.toml README.md ./
COPY service/ service/
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-cache-dir . \
    && /opt/venv/bin/python -I -c "import onnxruntime, service.app; print(onnxruntime.get_available_providers())" \
    && /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools

FROM ${PYTHON_IMAGE}
ARG VARIANT
LABEL org.opencontainers.image.title="mnist-serve" \
      org.opencontainers.image.description="LeNet-5 MNIST inference service (onnxruntime, ${VARIANT})"
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mnist
COPY --from=build /opt/venv /opt/venv
# The shipped model; mount another folder over it, or point MNIST_MODEL_PATH elsewhere.
COPY models/ /opt/mnist/models/
# The CUDA/cuDNN wheels' libraries (GPU variant) are found through LD_LIBRARY_PATH; the driver (libcuda)
# comes from the host through the NVIDIA container toolkit (compose `devices`, k8s nvidia.com/gpu).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MNIST_MODEL_PATH=/opt/mnist/models/lenet5.onnx \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib
WORKDIR /opt/mnist
USER 10001:10001
# HTTP (REST, KServe V2, /metrics) and KServe V2 over gRPC (MNIST_GRPC_PORT).
EXPOSE 8000 8001
# Ready: /readyz 200 and grpc.health.v1 SERVING (service/healthcheck.py).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-m", "service.healthcheck", "--port", "8000"]
ENTRYPOINT ["mnist-serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
