#include "gemm.h"

#include <cstdlib>
#include <cstring>

namespace fastcnn {
namespace {

const GemmKernel& choose_kernel() {
  const char* cap = std::getenv("FASTCNN_SIMD");
  const bool allow_avx512 = cap == nullptr || std::strcmp(cap, "avx512") == 0;
  const bool allow_avx2 = allow_avx512 || std::strcmp(cap, "avx2") == 0;
#ifdef FASTCNN_HAVE_X86_VARIANTS
  __builtin_cpu_init();
  if (allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma")) {
    return gemm_kernel_avx512();
  }
  if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return gemm_kernel_avx2();
#else
  (void)allow_avx2;
#endif
  return gemm_kernel_generic();
}

}  // namespace

const GemmKernel& gemm_kernel() {
  static const GemmKernel& chosen = choose_kernel();  // thread-safe static initialisation
  return chosen;
}

}  // namespace fastcnn
