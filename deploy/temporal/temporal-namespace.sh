#!/bin/sh
# Wait for the Temporal frontend, then create the namespace Remedium uses and register the four
# search attributes the worker checks for at start. Idempotent: what exists is left as it is.
set -eu
: "${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS names the Temporal frontend}"
ns="${REMEDIUM_NAMESPACE:-default}"

tries=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ]; then
    echo "Temporal at $TEMPORAL_ADDRESS did not become healthy in 120 s" >&2
    exit 1
  fi
  sleep 1
done

if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" --namespace "$ns" >/dev/null 2>&1; then
  echo "namespace $ns exists"
else
  temporal operator namespace create --address "$TEMPORAL_ADDRESS" --namespace "$ns" \
    --retention "${NAMESPACE_RETENTION:-720h}"
fi

# A new namespace reaches the frontend's namespace cache some seconds after it was created.
tries=0
until existing="$(temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" --namespace "$ns" 2>&1)"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "namespace $ns is still unknown to Temporal after 60 s: $existing" >&2
    exit 1
  fi
  sleep 1
done
for name in IncidentService IncidentSeverity IncidentStage RunbookName; do
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" --namespace "$ns" \
      --name "$name" --type Keyword
  fi
done
echo "namespace $ns is ready for Remedium"
