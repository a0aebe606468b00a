// AVX2 + FMA variant (compiled with -mavx2 -mfma, used only when the CPU has them): 6 x 16 tiles, 12 of the 16
// ymm registers hold accumulators.
#define FASTCNN_GEMM_NAMESPACE avx2
#define FASTCNN_GEMM_GETTER gemm_kernel_avx2
#define FASTCNN_GEMM_LABEL "avx2"
#define FASTCNN_VL 8
#define FASTCNN_NV 2
#define FASTCNN_MR 6
#define FASTCNN_KC 256
#define FASTCNN_MC 96
#define FASTCNN_NC 2048
#define FASTCNN_DOT_M 2
#define FASTCNN_DOT_N 4
#include "gemm_kernel.inc"
