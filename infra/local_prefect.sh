#!/usr/bin/env bash
# A local Prefect server with its UI (http://127.0.0.1:4200), the gradus deployments, and a worker that runs
# them. Ctrl-C stops everything. Run from the project root: `make prefect`.
set -euo pipefail
export PREFECT_API_URL="http://127.0.0.1:4200/api"
prefect server start --host 127.0.0.1 --port 4200 &
server=$!
trap 'kill "$server" 2>/dev/null' EXIT
python - <<'PY'
import time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen("http://127.0.0.1:4200/api/health", timeout=2)
        break
    except OSError:
        time.sleep(1)
else:
    raise SystemExit("Prefect server did not start within 120 s")
PY
gradus deploy
echo "UI: http://127.0.0.1:4200  (deployments: training-pipeline, drift-monitor; worker below)"
prefect worker start --pool gradus-local --type process
