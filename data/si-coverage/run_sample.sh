#!/bin/bash
# Produce (or resume) the silicon coverage dataset (examples/si/sample-coverage.yaml, 7net-0) in
# data/si-coverage; see data/sample_dataset.sh.
#   nohup data/si-coverage/run_sample.sh > /tmp/si-coverage.log 2>&1 &
exec "$(dirname "$0")/../sample_dataset.sh" data/si-coverage examples/si/sample-coverage.yaml
