# The trainer (torch; CUDA when the host has a GPU), for `docker compose run --rm trainer`, which writes
# lenet5.onnx, its card and plots into the mounted models/. pip installs the hash-pinned lock like the
# serving image: from the package index by default, or offline with WHEELS=wheelhouse after
#   docker/ci/wheelhouse.sh train && MNIST_WHEELS=wheelhouse docker compose build trainer
ARG PYTHON_IMAGE=python:3.11-slim
ARG WHEELS=index

FROM scratch AS wheels-index
FROM scratch AS wheels-wheelhouse
COPY wheelhouse/train/ /
# hadolint ignore=DL3006
FROM wheels-${WHEELS} AS wheels

FROM ${PYTHON_IMAGE} AS build
ARG WHEELS
# A mirror of the package index (plain http: also PIP_TRUSTED_HOST, or pip neither trusts nor caches it).
ARG PIP_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY docker/requirements/ docker/requirements/
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=bind,from=wheels,target=/wheels \
    if [ "$WHEELS" = wheelhouse ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi \
    && /opt/venv/bin/pip install --require-hashes --no-deps \
        -r docker/requirements/train.txt -r docker/requirements/build.txt
COPY pyproject.toml README.md ./
COPY service/ service/
COPY trainer/ trainer/
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-cache-dir .

FROM ${PYTHON_IMAGE}
# DejaVu fonts: the trainer prints letters, symbols and digits with them (trainer/synth/ink.py). Unpinned: the
# base image's Debian release decides the version, as for any font.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core fonts-dejavu-extra \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mnist
COPY --from=build /opt/venv /opt/venv
# HOME in /tmp: caches (torch, matplotlib) stay writable for whatever --user compose passes.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["mnist-train"]
CMD ["--out", "models"]
