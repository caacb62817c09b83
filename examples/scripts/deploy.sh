#!/bin/sh
# Demo deploy step for the golive flow. Harmless: it only prints what a real
# deploy would do. opsbot passes the ticket as OPSBOT_* environment variables.
set -eu
echo "deploying ${OPSBOT_FIELD_SERVICE} ${OPSBOT_FIELD_VERSION} for ticket ${OPSBOT_TICKET} (attempt ${OPSBOT_ATTEMPT})"
echo "deploy order: ${OPSBOT_FIELD_DEPLOY_ORDER:-single service}"
if [ -n "${OPSBOT_FIELD_DB_SCRIPTS:-}" ]; then
  echo "database scripts were run by the DBA stage: ${OPSBOT_FIELD_DB_SCRIPTS}"
fi
sleep 1 # a deploy takes a moment; the card shows it running
# Record what was deployed, so a rollback knows what to return from.
echo "OPSBOT_SET deployed_version=${OPSBOT_FIELD_VERSION}"
echo "OPSBOT_SET deployed_commit=${OPSBOT_FIELD_COMMIT:-unknown}"
echo "deploy finished"
