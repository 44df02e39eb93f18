# The trainer (torch; CUDA when the host has a GPU), for `docker compose run --rm trainer`, which writes
# lenet5.onnx, its card and plots into the mounted models/. Offline pip like the serving image:
#   docker/ci/wheelhouse.sh train && docker compose build trainer
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY docker/requirements/ docker/requirements/
COPY wheelhouse/train/ /wheels/
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r docker/requirements/train.txt
COPY pyproject.toml README.md ./
COPY service/ service/
COPY trainer/ trainer/
RUN /opt/venv/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
# DejaVu fonts: the trainer prints letters, symbols and digits with them (trainer/drawing.py). Unpinned: the
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
