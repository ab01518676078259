#!/bin/bash
# Produce (or resume) the silicon open-site interstitial dataset
# (examples/si/sample-interstitials.yaml, 7net-0) in data/si-interstitials; see data/sample_dataset.sh.
#   nohup data/si-interstitials/run_sample.sh > /tmp/si-interstitials.log 2>&1 &
exec "$(dirname "$0")/../sample_dataset.sh" data/si-interstitials examples/si/sample-interstitials.yaml
