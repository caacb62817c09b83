#!/bin/sh
# Demo rollback for the golive flow. Harmless: it only prints the plan.
set -eu
echo "rolling back ${OPSBOT_FIELD_SERVICE} from ${OPSBOT_OUT_DEPLOYED_VERSION:-the failed deploy} (ticket ${OPSBOT_TICKET})"
echo "application: ${OPSBOT_FIELD_ROLLBACK_APP}"
if [ -n "${OPSBOT_FIELD_ROLLBACK_DB:-}" ]; then
  echo "database: ${OPSBOT_FIELD_ROLLBACK_DB}"
fi
echo "rollback finished"
