// Rotary embedding (rotate-half) on the q and k parts of qkv, one thread per rotated pair.
#include <algorithm>

#include "kernels/cuda_check.cuh"
#include "kernels/elements.cuh"
#include "kernels/ops.cuh"

namespace dsmoe::cuda {
namespace {

// Blocks take rows (tokens) in turn; a row's 2 * n_heads * half pairs (q then k, head by head,
// the pair index i fastest so that accesses coalesce) are spread over the block's threads. E: the
// storage of qkv (fp32 or bf16; rotated in fp32).
template <typename E>
__global__ void rope_kernel(E* qkv, const float* cos_sin, int rows, int seq, int first_pos, int n_heads,
                            int head_dim, float sign) {
  const int half = head_dim / 2, per_part = n_heads * half, d = n_heads * head_dim;
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* cs = cos_sin + static_cast<int64_t>(first_pos + r % seq) * head_dim;
    E* row = qkv + static_cast<int64_t>(r) * 3 * d;
    for (int t = threadIdx.x; t < 2 * per_part; t += blockDim.x) {
      const int part = t / per_part, h = t % per_part / half, i = t % half;
      const float co = cs[i], si = sign * cs[half + i];
      E* x = row + part * d + h * head_dim;
      float a[1], b[1];
      load<1>(a, x + i);
      load<1>(b, x + i + half);
      const float ra[1] = {a[0] * co - b[0] * si}, rb[1] = {b[0] * co + a[0] * si};
      store<1>(x + i, ra);
      store<1>(x + i + half, rb);
    }
  }
}

}  // namespace

void rope(Ptr<float> qkv, const float* cos_sin, int batch, int seq, int first_pos, int n_heads, int head_dim,
          bool inverse, cudaStream_t s) {
  const int rows = batch * seq, pairs = 2 * n_heads * (head_dim / 2);
  if (rows <= 0 || pairs <= 0) return;
  with_storage(qkv, [&](auto* q) {
    rope_kernel<<<std::min(rows, 1 << 16), row_threads(pairs), 0, s>>>(q, cos_sin, rows, seq, first_pos, n_heads,
                                                                       head_dim, inverse ? -1.0f : 1.0f);
  });
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace dsmoe::cuda
