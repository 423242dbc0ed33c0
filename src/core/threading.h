// Threads: one OpenMP pool shared by our kernels and oneDNN (Debian's libdnnl uses GNU OpenMP), so
// the two never oversubscribe the cores.
#pragma once

namespace mf {

void set_num_threads(int n);  // n <= 0: all hardware threads
int num_threads();

}  // namespace mf
