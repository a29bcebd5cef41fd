#!/usr/bin/env bash
# Copies the CRDs (their one source is crds/) into the Helm chart, which must carry its own
# copies: Helm packages only files inside the chart directory and does not follow symlinks
# out of it. tests/test_chart.py fails when the copies differ from crds/.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f charts/saigon/crds/*.yaml
cp crds/*.yaml charts/saigon/crds/
