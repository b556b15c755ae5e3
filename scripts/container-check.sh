#!/usr/bin/env bash
# Lint, build and run the Docker image with podman/buildah, then check the service from outside.
#
#   scripts/container-check.sh
#
# Works without a Docker engine and without registry access: the python:3.11-slim base is
# stood in for by a Debian bookworm root made with debootstrap and imported into podman (done
# once; later runs reuse it). Needs root, podman, buildah, runc and debootstrap (apt-get install
# podman buildah runc debootstrap); trains during the build on the bundled data/mnist-sample.npz.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=localhost/prediction-service:check
BASE=docker.io/library/python:3.11-slim
CONTAINER=prediction-service-check
WORK=${CONTAINER_WORK:-/var/tmp/prediction-service-container}
PORT=${CONTAINER_PORT:-18080}
TOKEN=container-check-token
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

echo "== hadolint"
hadolint Dockerfile

echo "== base image ($BASE)"
if ! podman image exists "$BASE"; then
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian
  # Like python:3.11-slim: `python` on the PATH, no package lists.
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$BASE"
  rm -rf "$rootfs"
fi

echo "== build"
started=$(date +%s)
podman build --pull=never --format docker --isolation chroot --network host "${LIMITS[@]}" \
  --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg TRAIN_MODELS=true \
  --build-arg MNIST_DATA=data/mnist-sample.npz \
  --build-arg MNIST_EPOCHS="${MNIST_EPOCHS:-15}" \
  --tag "$IMAGE" .
echo "built in $(( $(date +%s) - started )) s; size: $(podman image inspect "$IMAGE" --format '{{.Size}}' | numfmt --to=iec)"
podman image prune -f >/dev/null  # earlier builds' layers

echo "== run"
podman rm -f "$CONTAINER" >/dev/null 2>&1 || true
trap 'podman logs "$CONTAINER" 2>&1 | tail -20; podman rm -f "$CONTAINER" >/dev/null 2>&1 || true' EXIT
started=$(date +%s)
podman --runtime runc run -d --name "$CONTAINER" --network host "${LIMITS[@]}" \
  -e PORT="$PORT" -e WORKERS=2 -e ADMIN_TOKEN="$TOKEN" "$IMAGE" >/dev/null
url="http://127.0.0.1:$PORT"
for _ in $(seq 1 120); do
  if curl -fsS "$url/health/ready" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
echo "ready $(( $(date +%s) - started )) s after start"

echo "== checks from outside"
# Prints the answer, and fails unless it holds the pattern. (Not `tee /dev/stderr`: that reopens the
# file stderr goes to, truncating a CI log that is written to a file.)
expect_answer() {
  local pattern=$1 answer
  shift
  answer=$(curl -fsS "$@") || { echo "request failed: curl $*"; return 1; }
  echo "$answer"
  grep -q -- "$pattern" <<<"$answer" || { echo "the answer lacks $pattern"; return 1; }
}
expect_answer '"status":"ready"' "$url/health/ready"
expect_answer '"result":"Adelie"' "$url/predict?bill_length_mm=40.3&flipper_length_mm=195"
expect_answer '"model_version":1' -F file=@samples/test_img0.png "$url/predict-image"
status=$(curl -s -o /dev/null -w '%{http_code}' -F file=@samples/retrain_img.zip "$url/upload-images") \
  || { echo "an anonymous upload failed on the client's side (curl exit $?), not a clean 401"; exit 1; }
[ "$status" = 401 ] || { echo "an anonymous upload got $status, not 401"; exit 1; }
uid=$(podman exec "$CONTAINER" id -u)
[ "$uid" != 0 ] || { echo "the service runs as root"; exit 1; }
podman exec "$CONTAINER" sh -c 'test ! -d /root/.cache/pip && ! command -v gcc' \
  || { echo "build tools or caches left in the image"; exit 1; }
health=$(podman inspect "$CONTAINER" --format '{{.Config.Healthcheck.Test}}')
case "$health" in *health/live*) ;; *) echo "no HEALTHCHECK on /health/live: $health"; exit 1 ;; esac

# No training at start: the log says so, and each model's only version was made before the container ran.
if podman logs "$CONTAINER" 2>&1 | grep -q "training mnist\|training penguins"; then
  echo "the container trained at start:"; podman logs "$CONTAINER" 2>&1 | grep "training"; exit 1
fi
podman exec "$CONTAINER" python -c '
import json, sys
from datetime import datetime
from pathlib import Path
started = int(sys.argv[1])
for model in ("penguins", "mnist"):
    folder = Path("/app/model_store") / model
    versions = sorted(p.name for p in folder.iterdir() if p.name.isdigit())
    assert versions == ["1"], f"{model} has versions {versions}, not just the one from the build"
    made = datetime.fromisoformat(json.loads((folder / "1" / "manifest.json").read_text())["created_at"])
    assert made.timestamp() < started, f"{model} version 1 was made at {made}, after the container started"
' "$started" || { echo "the store shows training at start"; exit 1; }

# WORKERS=2 gives two worker processes: answers (each on a new connection) name exactly two workers.
workers=""
for _ in $(seq 1 200); do
  worker=$(curl -fsS -D - -o /dev/null "$url/health/live" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-worker" {print $2}')
  [ -n "$worker" ] || { echo "an answer without X-Worker"; exit 1; }
  workers=$(printf '%s\n%s\n' "$workers" "$worker" | grep -v '^$' | sort -u)
  [ "$(wc -l <<<"$workers")" -ge 2 ] && break
done
count=$(wc -l <<<"$workers")
[ "$count" = 2 ] || { echo "WORKERS=2 but $count worker(s) answered: $workers"; exit 1; }
echo "container checks passed (uid $uid; 2 workers; trained in the image: no training at start)"
