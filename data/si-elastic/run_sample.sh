#!/bin/bash
# Produce (or resume) the silicon elastic and equation-of-state dataset
# (examples/si/sample-elastic.yaml, 7net-0) in data/si-elastic; see data/sample_dataset.sh.
#   nohup data/si-elastic/run_sample.sh > /tmp/si-elastic.log 2>&1 &
exec "$(dirname "$0")/../sample_dataset.sh" data/si-elastic examples/si/sample-elastic.yaml
