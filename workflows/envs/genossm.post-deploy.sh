#!/usr/bin/env bash
# Install genossm (no dependencies: the env file has them) from the checkout the Snakefile runs
# from; the Snakefile exports its location as GENOSSM_SOURCE. Editable, so the env follows the
# checkout's code.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e "${GENOSSM_SOURCE:?the Snakefile sets GENOSSM_SOURCE}"
