#!/bin/sh
# Creates the namespace referral-tracker runs in, with its retention, once the server answers.
# Run by the `temporal-namespace` service (image temporalio/admin-tools). An existing namespace
# is left as it is: change its retention with
#   temporal operator namespace update -n "$NAMESPACE" --retention 720h
# UNTESTED here: see deploy/README.md.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${NAMESPACE:?}" "${RETENTION:?}"

echo "waiting for Temporal at ${TEMPORAL_ADDRESS}"
attempt=0
until temporal operator cluster health --address "${TEMPORAL_ADDRESS}"; do
  attempt=$((attempt + 1))
  if [ "${attempt}" -ge 30 ]; then
    echo "Temporal did not answer after ${attempt} attempts" >&2
    exit 1
  fi
  sleep 5
done

if temporal operator namespace describe -n "${NAMESPACE}" --address "${TEMPORAL_ADDRESS}" >/dev/null 2>&1; then
  echo "namespace ${NAMESPACE} exists; retention unchanged"
else
  temporal operator namespace create -n "${NAMESPACE}" --retention "${RETENTION}" \
    --history-archival-state disabled --visibility-archival-state disabled \
    --address "${TEMPORAL_ADDRESS}"
  echo "namespace ${NAMESPACE} created with retention ${RETENTION}"
fi

# A new namespace takes a moment to reach the frontend's cache; the API and workers start after
# this script, so wait until the namespace answers a request.
attempt=0
until temporal workflow list --namespace "${NAMESPACE}" --limit 1 --address "${TEMPORAL_ADDRESS}" >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "${attempt}" -ge 60 ]; then
    echo "namespace ${NAMESPACE} does not answer" >&2
    exit 1
  fi
  sleep 1
done
echo "namespace ${NAMESPACE} is ready"
