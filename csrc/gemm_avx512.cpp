// AVX-512 variant (compiled with -mavx512f, used only when the CPU has it): 8 x 32 tiles, 16 zmm accumulators.
// KC is smaller than in the AVX2 variant so that a KC x 32 panel of B stays in a 32 KiB L1 beside A's panel.
#define FASTCNN_GEMM_NAMESPACE avx512
#define FASTCNN_GEMM_GETTER gemm_kernel_avx512
#define FASTCNN_GEMM_LABEL "avx512"
#define FASTCNN_VL 16
#define FASTCNN_NV 2
#define FASTCNN_MR 8
#define FASTCNN_KC 128
#define FASTCNN_MC 128
#define FASTCNN_NC 2048
#define FASTCNN_DOT_M 4
#define FASTCNN_DOT_N 4
#include "gemm_kernel.inc"
