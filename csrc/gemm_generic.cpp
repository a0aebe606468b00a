// Baseline variant for any CPU (SSE2 on x86-64): 6 x 8 register tiles.
#define FASTCNN_GEMM_NAMESPACE generic
#define FASTCNN_GEMM_GETTER gemm_kernel_generic
#define FASTCNN_GEMM_LABEL "generic"
#define FASTCNN_VL 4
#define FASTCNN_NV 2
#define FASTCNN_MR 6
#define FASTCNN_KC 256
#define FASTCNN_MC 96
#define FASTCNN_NC 2048
#define FASTCNN_DOT_M 2
#define FASTCNN_DOT_N 2
#include "gemm_kernel.inc"
