#!/bin/sh
# Demo restart step. Harmless: it only prints. Safe to repeat.
set -eu
echo "restarting ${OPSBOT_FIELD_SERVICE} in ${OPSBOT_FIELD_ENV} because: ${OPSBOT_FIELD_REASON}"
echo "restart finished"
