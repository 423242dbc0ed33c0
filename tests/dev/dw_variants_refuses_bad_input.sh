#!/usr/bin/env bash
# bench/cuda_dev/depthwise_variants.cpp's options: every bad one ends the run with exit 1 and one
# line naming it, before any GPU work (so this runs with or without a GPU).
#   dw_variants_refuses_bad_input.sh BUILD/bench/mf_cuda_dw_variants
set -u
bin=$1
. "$(dirname "$0")/bad_input_check.sh"
check "--batch takes a whole number" --batch x
check "--batch takes a whole number" --batch 0
check "--reps takes a whole number" --reps 12abc
check "option --reps has no value" --reps
check "no forward variant nope" --fwd tiled,nope
check "no weight-gradient variant nope" --dw nope
check "unknown option --bogus" --bogus 1
check "each need a variant" --fwd ,
exit $fail
