// C is cut into tiles of whole micro-tiles; each work item packs the rows of A and columns of B its tile needs and
// multiplies them. Every element is summed over K in the GEMM's fixed order, so the result does not depend on the
// tiling or the thread count.
#include "matmul.h"

#include <algorithm>

#include "gemm.h"

namespace fastcnn {
namespace {

struct MatmulPlan {
  index_t tile_m, tile_n, tiles_m, tiles_n, per_thread_floats;
  int threads;
};

MatmulPlan plan_matmul(const MatmulGeometry& g, int threads) {
  const GemmKernel& gemm = gemm_kernel();
  MatmulPlan plan{};
  // Split the longer side first; a tile is never thinner than one micro-tile.
  index_t parts_m = 1, parts_n = 1;
  while (parts_m * parts_n < threads) {
    if (ceil_div(g.m, parts_m) / gemm.mr >= ceil_div(g.n, parts_n) / gemm.nr && ceil_div(g.m, parts_m) > gemm.mr)
      ++parts_m;
    else if (ceil_div(g.n, parts_n) > gemm.nr)
      ++parts_n;
    else
      break;
  }
  plan.tile_m = ceil_div(ceil_div(g.m, parts_m), gemm.mr) * gemm.mr;
  plan.tile_n = ceil_div(ceil_div(g.n, parts_n), gemm.nr) * gemm.nr;
  plan.tiles_m = ceil_div(g.m, plan.tile_m);
  plan.tiles_n = ceil_div(g.n, plan.tile_n);
  plan.threads = static_cast<int>(std::min<index_t>(threads, plan.tiles_m * plan.tiles_n));
  plan.per_thread_floats = checked_add(gemm.packed_a_floats(plan.tile_m, g.k), gemm.packed_b_floats(g.k, plan.tile_n),
                                       "matmul");
  return plan;
}

constexpr index_t kFewRows = 4;          // A x B^T with at most this many rows of A: inner products, no packing
constexpr index_t kColumnsPerItem = 64;  // columns of C per work item on that path

// x W^T for a few rows of x (a Linear layer at batch 1): both operands are already laid out along K, so inner
// products read them in place; packing W, as the blocked GEMM would, costs more than the multiply here.
bool takes_inner_products(const MatmulGeometry& g) { return !g.transpose_a && g.transpose_b && g.m <= kFewRows; }

void matmul_inner_products(const MatmulGeometry& g, int threads, const float* a, const float* b, float* c) {
  const GemmKernel& gemm = gemm_kernel();
  parallel_for(ceil_div(g.n, kColumnsPerItem), threads, [&](index_t item, int) {
    const index_t j0 = item * kColumnsPerItem, cols = std::min(kColumnsPerItem, g.n - j0);
    gemm.multiply_abt(g.m, cols, g.k, a, g.k, b + j0 * g.k, g.k, c + j0, g.n, false);
  });
}

}  // namespace

index_t matmul_workspace_bytes(const MatmulGeometry& g, int threads) {
  if (takes_inner_products(g)) return 0;  // that path needs no workspace
  const MatmulPlan plan = plan_matmul(g, threads);
  return checked_mul(checked_mul(plan.threads, plan.per_thread_floats, "matmul"), 4, "matmul");
}

void matmul(const MatmulGeometry& g, int threads, const float* a, const float* b, float* c) {
  if (takes_inner_products(g)) return matmul_inner_products(g, threads, a, b, c);
  const GemmKernel& gemm = gemm_kernel();
  const MatmulPlan plan = plan_matmul(g, threads);
  FloatBuffer workspace = allocate_floats(plan.threads * plan.per_thread_floats);
  // Strides of A(i, k) and B(k, j) for either storage order.
  const index_t a_row = g.transpose_a ? 1 : g.k, a_col = g.transpose_a ? g.m : 1;
  const index_t b_row = g.transpose_b ? 1 : g.n, b_col = g.transpose_b ? g.k : 1;
  parallel_for(plan.tiles_m * plan.tiles_n, plan.threads, [&](index_t item, int thread) {
    const index_t i0 = (item / plan.tiles_n) * plan.tile_m, j0 = (item % plan.tiles_n) * plan.tile_n;
    const index_t rows = std::min(plan.tile_m, g.m - i0), cols = std::min(plan.tile_n, g.n - j0);
    gemm.sgemm(rows, cols, g.k, MatrixView{a + i0 * a_row, a_row, a_col}, MatrixView{b + j0 * b_col, b_row, b_col},
               c + i0 * g.n + j0, g.n, false, workspace.get() + thread * plan.per_thread_floats);
  });
}

}  // namespace fastcnn
