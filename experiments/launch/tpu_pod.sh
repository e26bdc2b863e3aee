#!/usr/bin/env bash
# Pretrain on a Cloud TPU pod slice: one process per TPU VM host, all started at once.
#
#   experiments/launch/tpu_pod.sh setup                 # once: checkout + venv on every host
#   experiments/launch/tpu_pod.sh train [pretrain flags] # e.g. --task avsa --steps 20000
#
# Settings (environment): TPU_NAME, ZONE, PROJECT (gcloud's default if unset), REPO_URL (git
# remote of this repository), REPO_DIR (checkout on each host, default ~/spatialav), DATA
# (dataset directory written by data_tools/convert_yt360.py, on storage every host sees,
# e.g. a gcsfuse mount or a copy on each host), WORKDIR (checkpoints, logs: one filesystem
# path every host sees - orbax writes one checkpoint from all hosts - e.g. a gcsfuse mount of
# a bucket or a Filestore/NFS share; the trainer takes local paths, not gs:// URLs).
#
# JAX finds the coordinator, the host count and this host's index from the TPU metadata, so
# no --coordinator/--process-id is passed. Run `train` again with the same WORKDIR to resume.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_DIR=${REPO_DIR:-'~/spatialav'}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}

on_all_hosts() {
  # shellcheck disable=SC2086
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
    --command="$1"
}

case "${1:-}" in
  setup)
    : "${REPO_URL:?set REPO_URL to the git remote of this repository}"
    on_all_hosts "set -e; [ -d $REPO_DIR ] || git clone $REPO_URL $REPO_DIR; cd $REPO_DIR
      python3 -m venv .venv && . .venv/bin/activate
      pip install -q -U pip && pip install -q -e . 'jax[tpu]'"
    ;;
  train)
    shift
    : "${DATA:?set DATA}" "${WORKDIR:?set WORKDIR}"
    # Every host runs the same command; printf %q keeps the quoting across the ssh hop.
    args=$(printf '%q ' --config pod --task avsa --data "$DATA" --workdir "$WORKDIR" \
      --peer-timeout 60 "$@")
    on_all_hosts "cd $REPO_DIR && . .venv/bin/activate && python -m spatialav.pretrain $args"
    ;;
  *)
    echo "usage: $0 setup | train [python -m spatialav.pretrain flags]" >&2
    exit 2
    ;;
esac
