#!/bin/bash
# Produce (or resume) the silicon equation-of-state window dataset
# (examples/si/sample-eos-window.yaml, 7net-0) in data/si-eos-window; see data/sample_dataset.sh.
#   nohup data/si-eos-window/run_sample.sh > /tmp/si-eos-window.log 2>&1 &
exec "$(dirname "$0")/../sample_dataset.sh" data/si-eos-window examples/si/sample-eos-window.yaml
