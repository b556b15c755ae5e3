#!/usr/bin/env bash
# Lint the Dockerfile, build both images with podman/buildah, then check them from outside: the worker image
# trains a store, the serving image (no TensorFlow, at most 700 MB) serves it.
#
#   scripts/container-check.sh
#
# Works without a Docker engine and without registry access: the python:3.11-slim base is stood in for by a
# Debian bookworm root made with debootstrap and imported into podman (done once; later runs reuse it, and
# the builds reuse their dependency layers). Needs root, podman, buildah, runc and debootstrap (apt-get
# install podman buildah runc debootstrap); trains on the bundled data/mnist-sample.npz.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVING=localhost/prediction-service:serving
WORKER=localhost/prediction-service:worker
VENVS=localhost/prediction-service:build-cache  # keeps the dependency layers from `podman image prune`
BASE=docker.io/library/python:3.11-slim
STAND_IN=prediction-service.stand-in  # label of a base made here, with its recipe's version
STAND_IN_VERSION=2
MAX_SERVING_BYTES=700000000  # 700 MB, as podman counts
CONTAINER=prediction-service-check
WORKER_CONTAINER=prediction-service-worker-check
WORK=${CONTAINER_WORK:-/var/tmp/prediction-service-container}
STORE=$WORK/store
PORT=${CONTAINER_PORT:-18080}
TOKEN=container-check-token
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
RUN=(podman --runtime runc run "${LIMITS[@]}")
ONCE=("${RUN[@]}" --rm --no-healthcheck)
# Healthchecks run on demand here (`podman healthcheck run`): podman's timers for them need systemd.
quiet_timers() { grep -v "systemd connection" >&2 || true; }
checked=$(date +%s)

echo "== hadolint"
hadolint Dockerfile

echo "== base image ($BASE)"
# A stand-in made by an earlier recipe (or before the label existed) is made again; a pulled image is kept.
made_here=$(podman image inspect "$BASE" --format "{{.Comment}} {{index .Labels \"$STAND_IN\"}}" 2>/dev/null || true)
case "$made_here" in
  "") build_base=yes ;;
  "imported from tarball $STAND_IN_VERSION") build_base="" ;;
  "imported from tarball"*) build_base=yes ;;
  *) build_base="" ;;
esac
if [ -n "$build_base" ]; then
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap.log"; echo "debootstrap failed"; exit 1; }
  # Like python:3.11-slim (on debian:bookworm-slim): `python` on the PATH; no package lists or downloaded
  # packages, documentation, manual pages or translations.
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL $STAND_IN=$STAND_IN_VERSION" \
    --change 'CMD ["python3"]' - "$BASE"
  rm -rf "$rootfs"
fi
echo "base: $(podman image inspect "$BASE" --format '{{.Size}}' | numfmt --to=si)"

echo "== build both targets"
build() {
  local target=$1 tag=$2 started
  started=$(date +%s)
  podman build --pull=never --format docker --isolation chroot --network host "${LIMITS[@]}" \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --target "$target" --tag "$tag" . >"$WORK/build-$target.log" 2>&1 \
    || { tail -30 "$WORK/build-$target.log"; echo "building --target $target failed"; return 1; }
  echo "$target: built in $(( $(date +%s) - started )) s"
}
mkdir -p "$WORK"
build venv-worker "$VENVS"
build serving "$SERVING"
build worker "$WORKER"
podman image prune -f >/dev/null  # earlier builds' layers
serving_bytes=$(podman image inspect "$SERVING" --format '{{.Size}}')
worker_bytes=$(podman image inspect "$WORKER" --format '{{.Size}}')
echo "sizes: serving $(numfmt --to=si "$serving_bytes") ($serving_bytes bytes), worker $(numfmt --to=si "$worker_bytes")"
[ "$serving_bytes" -le "$MAX_SERVING_BYTES" ] \
  || { echo "the serving image is $serving_bytes bytes, over $MAX_SERVING_BYTES"; exit 1; }

echo "== the serving image has no training libraries; the worker image has them"
no_training='import importlib.util, sys
found = [name for name in ("tensorflow", "keras", "tf2onnx", "onnx", "pip") if importlib.util.find_spec(name)]
print("installed:", found or "none of tensorflow, keras, tf2onnx, onnx, pip")
sys.exit(1 if found else 0)'
"${ONCE[@]}" --network none "$SERVING" python -c "$no_training" \
  || { echo "the serving image has training libraries (or pip)"; exit 1; }
"${ONCE[@]}" --network none "$SERVING" sh -c 'test "$RUN_TRAINING" = false' \
  || { echo "the serving image does not set RUN_TRAINING=false"; exit 1; }
# What needs TensorFlow says so there, with the fix.
if refusal=$("${ONCE[@]}" --network none -e MODEL_DIR=/tmp/store "$SERVING" python -m prediction_service train mnist 2>&1); then
  echo "the serving image trained mnist"; exit 1
fi
grep -q "training needs TensorFlow (Keras), which is not installed here" <<<"$refusal" \
  || { echo "$refusal"; echo "training in the serving image failed without saying why"; exit 1; }
grep "^mnist:" <<<"$refusal"
"${ONCE[@]}" --network none "$WORKER" python -c 'import keras, tf2onnx; print("worker: keras", keras.__version__)'

cleanup() {
  podman logs "$CONTAINER" 2>&1 | tail -20 || true
  for container in "$CONTAINER" "$WORKER_CONTAINER"; do
    podman rm -f -t 0 "$container" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

echo "== the worker image trains a store (a directory both containers mount)"
rm -rf "$STORE"
mkdir -p "$STORE"
chown 10001:10001 "$STORE"
started=$(date +%s)
"${ONCE[@]}" --network none -v "$STORE:/app/model_store" \
  -e MNIST_DATA=/app/data/mnist-sample.npz -e MNIST_EPOCHS="${MNIST_EPOCHS:-3}" \
  "$WORKER" python -m prediction_service train
trained=$(date +%s)
echo "trained in $(( trained - started )) s"
owner=$(stat -c %u "$STORE/mnist/1/manifest.json")
[ "$owner" != 0 ] || { echo "the worker trained as root"; exit 1; }

echo "== the worker's healthcheck"
health=$(podman image inspect "$WORKER" --format '{{.Config.Healthcheck.Test}}')
case "$health" in *"prediction_service versions"*) ;; *) echo "no HEALTHCHECK on the worker: $health"; exit 1 ;; esac
# Its own command until `worker` exists in this build; then the image's.
worker_command=()
commands=$("${ONCE[@]}" --network none "$WORKER" python -m prediction_service --help)
if ! grep -qw worker <<<"$commands"; then
  worker_command=(python -c 'import time; time.sleep(600)')
  echo "(no \`worker\` command in this build: the container idles while its healthcheck runs)"
fi
"${RUN[@]}" -d --name "$WORKER_CONTAINER" --network none -v "$STORE:/app/model_store" \
  "$WORKER" "${worker_command[@]}" >/dev/null 2> >(quiet_timers)
podman healthcheck run "$WORKER_CONTAINER" 2>/dev/null || { echo "the worker is unhealthy"; exit 1; }
echo "worker healthy: $(podman exec "$WORKER_CONTAINER" python -m prediction_service versions | grep -c '^ \*') serving versions seen"
# ... and unhealthy where it cannot read the store.
chmod 000 "$STORE/mnist"
if podman healthcheck run "$WORKER_CONTAINER" >/dev/null 2>&1; then
  chmod 755 "$STORE/mnist"
  echo "the worker's healthcheck passed with an unreadable store"
  exit 1
fi
chmod 755 "$STORE/mnist"
podman rm -f -t 0 "$WORKER_CONTAINER" >/dev/null 2> >(quiet_timers)
echo "worker unhealthy with an unreadable store, as it should be"

echo "== the serving image serves that store"
podman rm -f -t 0 "$CONTAINER" >/dev/null 2>&1 || true
started=$(date +%s)
"${RUN[@]}" -d --name "$CONTAINER" --network host -v "$STORE:/app/model_store" \
  -e PORT="$PORT" -e WORKERS=2 -e ADMIN_TOKEN="$TOKEN" "$SERVING" >/dev/null 2> >(quiet_timers)
url="http://127.0.0.1:$PORT"
# Up to 5 min: on 2 cores shared with other work, loading both models in two workers has taken 65 s.
ready=""
for _ in $(seq 1 600); do
  if curl -fsS "$url/health/ready" >/dev/null 2>&1; then ready=yes; break; fi
  sleep 0.5
done
[ -n "$ready" ] || { echo "not ready $(( $(date +%s) - started )) s after start"; exit 1; }
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
podman healthcheck run "$CONTAINER" 2>/dev/null || { echo "the serving container is unhealthy"; exit 1; }

# No training in the serving container: the log says so, and each model's only version is the worker's.
if podman logs "$CONTAINER" 2>&1 | grep -q "training mnist\|training penguins"; then
  echo "the serving container trained:"; podman logs "$CONTAINER" 2>&1 | grep "training"; exit 1
fi
podman exec "$CONTAINER" python -c '
import json, sys
from datetime import datetime
from pathlib import Path
trained = int(sys.argv[1])
for model in ("penguins", "mnist"):
    folder = Path("/app/model_store") / model
    versions = sorted(p.name for p in folder.iterdir() if p.name.isdigit())
    assert versions == ["1"], f"{model} has versions {versions}, not just the worker image'"'"'s"
    made = datetime.fromisoformat(json.loads((folder / "1" / "manifest.json").read_text())["created_at"])
    assert made.timestamp() <= trained, f"{model} version 1 was made at {made}, after the worker image trained"
' "$trained" || { echo "the store shows training in the serving container"; exit 1; }

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
echo "container checks passed in $(( $(date +%s) - checked )) s (serving $(numfmt --to=si "$serving_bytes"), no" \
  "TensorFlow, uid $uid, 2 workers, serving the worker image's store; worker $(numfmt --to=si "$worker_bytes"), healthy)"
