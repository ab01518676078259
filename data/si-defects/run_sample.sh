#!/bin/bash
# Produce (or resume) the silicon relaxed point-defect dataset
# (examples/si/sample-defects.yaml, 7net-0) in data/si-defects; see data/sample_dataset.sh.
#   nohup data/si-defects/run_sample.sh > /tmp/si-defects.log 2>&1 &
exec "$(dirname "$0")/../sample_dataset.sh" data/si-defects examples/si/sample-defects.yaml
