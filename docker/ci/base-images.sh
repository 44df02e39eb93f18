#!/usr/bin/env bash
# Stand-ins for the registry base images, built from Debian with debootstrap, because these machines
# cannot pull from a registry. The rootfs tarball is cached, so only the first run pays its ~100 s.
#   python:3.11-slim          -> Debian bookworm minbase + python3 (3.11, in /usr/bin instead of /usr/local/bin)
#   prom/prometheus:<tag>     -> the same rootfs + Debian's prometheus binary (the tag the compose file uses)
# Usage: docker/ci/base-images.sh    (DOCKER_HOST must point at a running engine; see dockerd.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${MNIST_DOCKER_CACHE:-/tmp/mnist-docker-cache}
suite=bookworm
packages=python3,python3-venv,python-is-python3,ca-certificates,wget
tarball="$cache/rootfs-$suite-$(echo "$packages" | sha256sum | cut -c1-12).tar"
python_image=python:3.11-slim
prometheus_image=$(sed -n 's/^ *image: *\(prom\/prometheus:[^ ]*\).*/\1/p' docker-compose.yml)
mkdir -p "$cache"

if [ ! -s "$tarball" ]; then
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "${mirror:-http://deb.debian.org/debian}" \
        >"$cache/debootstrap.log" 2>&1 || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc \
        "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
    tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
fi

docker image inspect "$python_image" >/dev/null 2>&1 ||
    docker import -c 'CMD ["python3"]' "$tarball" "$python_image" >/dev/null

if ! docker image inspect "$prometheus_image" >/dev/null 2>&1; then
    # Same layout as the real image: /bin/prometheus, config in /etc/prometheus, data in /prometheus, user nobody.
    context=$(mktemp -d)
    cp "$(command -v prometheus)" "$context/prometheus"
    cat >"$context/Dockerfile" <<DOCKERFILE
FROM $python_image
COPY prometheus /bin/prometheus
RUN mkdir -p /etc/prometheus /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
DOCKERFILE
    docker build -q -t "$prometheus_image" "$context" >/dev/null
    rm -rf "$context"
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$python_image"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$prometheus_image"
