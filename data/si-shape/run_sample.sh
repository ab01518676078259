#!/bin/bash
# Produce (or resume) the silicon constant-volume shape-relaxation dataset
# (examples/si/sample-shape.yaml, 7net-0) in data/si-shape; see data/sample_dataset.sh.
#   nohup data/si-shape/run_sample.sh > /tmp/si-shape.log 2>&1 &
exec "$(dirname "$0")/../sample_dataset.sh" data/si-shape examples/si/sample-shape.yaml
