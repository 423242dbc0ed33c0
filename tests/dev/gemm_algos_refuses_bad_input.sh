#!/usr/bin/env bash
# bench/cuda_dev/gemm_algos.cpp's options: every bad one ends the run with exit 1 and one line naming
# it, before any GPU work (so this runs with or without a GPU).
#   gemm_algos_refuses_bad_input.sh BUILD/bench/mf_cuda_gemm_algos
set -u
bin=$1
. "$(dirname "$0")/bad_input_check.sh"
check "--batch wants a positive integer" --batch x
check "--batch wants a positive integer" --batch 0
check "--algos wants a positive integer" --algos -3
check "--reps wants a positive integer" --reps 12abc
check "--dims wants a positive integer" --dims 64,,128
check "--batch needs a value" --batch
check "--only names foo" --only fwd,foo
check "unknown option --bogus" --bogus 1
check "--dims and --tokens need as many entries" --dims 64 --tokens 1,2
exit $fail
