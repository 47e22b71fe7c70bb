// Training-time CPU kernels for the Transformer's memory-bound passes: layer norm (alone, or after dropout and the
// residual add), bias add, bias + GELU, dropout and the attention softmax, forward and backward, each one
// multithreaded pass over its rows (zoo/layers/native.py picks them; the XLA islands of zoo/layers/{normalization,
// activations,dense,dropout,softmax}.py are the fallback and the reference: every kernel computes the same float32
// maths and the same dropout mask).
//
// Why: the XLA islands run XLA:CPU's loops, 1.25-2.4x these kernels' time forward + backward at BERT-base's shapes
// in bf16 (benchmarks/training_kernels.py; a row reduction per softmax or layer-norm row, erf/exp without packet
// maths, an XLA launch per call); these kernels read each input
// once, compute in float32 with Eigen's vectorized exp / erf / erfc (TF's own CPU kernels' functions), and write
// each output once. Column sums that the islands leave to a ones-vector matmul (the layer norm's dgamma / dbeta,
// the GELU's bias gradient) are accumulated here in float32, per fixed block of rows then in block order, so
// results do not depend on thread scheduling.
//
// Dtypes: T is float or bfloat16 (the mixed_bfloat16 compute dtype); statistics, parameters and column sums are
// float32. bfloat16 results are rounded to nearest even, as Eigen's casts do.
//
// Dropout: an element's 16 random bits are the high half of two murmur3-finalizer rounds of its flat index under
// two keys derived from the int32 seed pair: bit for bit zoo/layers/dropout.py's `keep_scale`. A kept element is
// multiplied by the keep scale rounded to T (as the islands multiply by a mask of dtype T), a dropped one by zero.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <utility>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "unsupported/Eigen/SpecialFunctions"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace zoo {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

// ---- helpers ------------------------------------------------------------------------------------------------

inline float Bf16ToFloat(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t FloatToBf16(float f) {  // round to nearest even; NaN stays a (quiet) NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t rounded = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  return f != f ? static_cast<uint16_t>((u >> 16) | 0x40u) : rounded;
}

// Row I/O between T and float32 scratch buffers (the loops vectorize: integer shifts and selects only).
template <typename T>
struct Io;

template <>
struct Io<float> {
  static void Load(const float* src, float* __restrict__ dst, int64_t n) { std::memcpy(dst, src, n * 4); }
  static void Store(const float* src, float* __restrict__ dst, int64_t n) { std::memcpy(dst, src, n * 4); }
  static float Round(float x) { return x; }
};

template <>
struct Io<tensorflow::bfloat16> {
  static void Load(const tensorflow::bfloat16* src, float* __restrict__ dst, int64_t n) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(s[i]);
  }
  static void Store(const float* src, tensorflow::bfloat16* dst, int64_t n) {
    uint16_t* __restrict__ d = reinterpret_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16(src[i]);
  }
  static float Round(float x) { return Bf16ToFloat(FloatToBf16(x)); }
};

using Array = Eigen::Map<Eigen::ArrayXf>;

// Per-shard scratch rows, 64-byte aligned and each padded to a multiple of 16 floats: Eigen's packet loops then
// need no scalar head (an unaligned head calls libm's scalar expf / erff per element).
class Scratch {
 public:
  Scratch(int64_t width, int count) : stride_((width + 15) / 16 * 16), data_(static_cast<size_t>(stride_ * count)) {}
  float* row(int index) { return data_.data() + stride_ * index; }

 private:
  int64_t stride_;
  std::vector<float, Eigen::aligned_allocator<float>> data_;
};

// Row reductions through Eigen's packet reductions (vectorized, a fixed tree order; plain loops here came out
// scalar, and a serial max over a 128-float row was half of the softmax's time).
inline float RowSum(const float* v, int64_t n) { return Eigen::Map<const Eigen::ArrayXf>(v, n).sum(); }

inline float RowDot(const float* a, const float* b, int64_t n) {
  return (Eigen::Map<const Eigen::ArrayXf>(a, n) * Eigen::Map<const Eigen::ArrayXf>(b, n)).sum();
}

inline float RowMax(const float* v, int64_t n) { return Eigen::Map<const Eigen::ArrayXf>(v, n).maxCoeff(); }

inline uint32_t Mix32(uint32_t h) {  // murmur3's 32-bit finalizer
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

struct DropoutMask {
  uint32_t key_0 = 0, key_1 = 0, threshold = 0;
  float scale = 1.0f;  // the keep scale rounded to T

  // keep[i] = scale or 0 for the flat indices [begin, begin + n).
  void Fill(int64_t begin, int64_t n, float* __restrict__ keep) const {
    const uint32_t start = static_cast<uint32_t>(begin), k0 = key_0, k1 = key_1, t = threshold;
    const float s = scale;  // locals, not members: the loop then vectorizes
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t bits = Mix32(Mix32((start + static_cast<uint32_t>(i)) ^ k0) + k1) >> 16;
      keep[i] = bits >= t ? s : 0.0f;
    }
  }
};

template <typename T>
absl::Status MakeDropoutMask(const Tensor& seed, int threshold, DropoutMask* mask) {
  if (seed.dtype() != tensorflow::DT_INT32 || seed.NumElements() != 2) {
    return absl::InvalidArgumentError("dropout seed must be int32 [2], got " + seed.shape().DebugString());
  }
  if (threshold < 0 || threshold >= 65536) return absl::InvalidArgumentError("dropout threshold must be in [0, 65536)");
  const auto s = seed.flat<int32_t>();
  const uint32_t w0 = static_cast<uint32_t>(s(0)), w1 = static_cast<uint32_t>(s(1));
  mask->key_0 = Mix32(w0 ^ Mix32(w1 + 0x9E3779B9u));
  mask->key_1 = Mix32(mask->key_0 + 0x7F4A7C15u);
  mask->threshold = static_cast<uint32_t>(threshold);
  mask->scale = Io<T>::Round(static_cast<float>(65536.0 / (65536 - threshold)));
  return absl::OkStatus();
}

absl::Status CheckElementCount(const Tensor& x) {  // the hash counts elements in 32 bits, as the islands do
  if (x.NumElements() >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError("dropout on 2^31 or more elements in one call; split the tensor");
  }
  return absl::OkStatus();
}

// Denormals flushed to zero and read as zero while a shard runs (restored after): exp() of masked scores and the
// far tails of the GELU produce them, and each costs ~100 cycles otherwise. Eager ops run a shard on the caller's
// thread, which TF's worker-thread setup (that already flushes) does not cover.
class ScopedFlushDenormals {
 public:
#if defined(__SSE__)
  ScopedFlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }  // FTZ | DAZ
  ~ScopedFlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#endif
};

void ParallelRows(OpKernelContext* ctx, int64_t rows, int64_t cost_per_row,
                  const std::function<void(int64_t, int64_t)>& fn) {
  ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(rows, cost_per_row,
                                                                       [&fn](int64_t begin, int64_t end) {
                                                                         ScopedFlushDenormals flush;
                                                                         fn(begin, end);
                                                                       });
}

// Column sums of per-row float32 contributions, deterministic on a given machine: rows are cut into a fixed
// number of blocks (32, or 4 per worker thread on bigger machines), each block accumulates its own [width]
// partial sums, and the partials are added in block order.
class BlockColumnSums {
 public:
  BlockColumnSums(OpKernelContext* ctx, int64_t rows, int64_t width, int sums)
      : rows_(rows), width_(width), sums_(sums),
        blocks_(std::max<int64_t>(1, std::min<int64_t>(
                                         rows, std::max<int64_t>(
                                                   32, 4 * ctx->device()->tensorflow_cpu_worker_threads()->num_threads)))),
        partial_(static_cast<size_t>(blocks_ * width * sums), 0.0f) {}
  int64_t blocks() const { return blocks_; }
  int64_t begin(int64_t block) const { return rows_ * block / blocks_; }
  float* partial(int64_t block, int sum) { return partial_.data() + (block * sums_ + sum) * width_; }
  void Reduce(int sum, float* out) {
    std::fill(out, out + width_, 0.0f);
    for (int64_t b = 0; b < blocks_; ++b) {
      const float* p = partial(b, sum);
      for (int64_t j = 0; j < width_; ++j) out[j] += p[j];
    }
  }

 private:
  int64_t rows_, width_;
  int sums_;
  int64_t blocks_;
  std::vector<float> partial_;
};

absl::Status CheckNonEmptyLastAxis(const Tensor& x) {  // a layer norm over zero features has no statistics
  if (x.dims() < 1 || x.dim_size(x.dims() - 1) == 0) {
    return absl::InvalidArgumentError("layer norm over an empty last axis: " + x.shape().DebugString());
  }
  return absl::OkStatus();
}

absl::Status CheckLastAxis(const Tensor& x, const Tensor& vector, const char* what) {
  if (x.dims() < 1 || vector.dims() != 1 || vector.dim_size(0) != x.dim_size(x.dims() - 1)) {
    return absl::InvalidArgumentError(std::string(what) + " must be [H] for inputs [..., H]; got " +
                                      vector.shape().DebugString() + " for " + x.shape().DebugString());
  }
  return absl::OkStatus();
}

TensorShape RowStatisticsShape(const TensorShape& x) {
  TensorShape shape = x;
  shape.set_dim(shape.dims() - 1, 1);
  return shape;
}

absl::Status SameShape(InferenceContext* c) {
  c->set_output(0, c->input(0));
  return absl::OkStatus();
}

// ---- layer normalization ------------------------------------------------------------------------------------

REGISTER_OP("ZooLayerNorm")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: T")
    .Output("mean: float")
    .Output("inv_std: float")
    .Attr("T: {float, bfloat16}")
    .Attr("epsilon: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle stats;
      TF_RETURN_IF_ERROR(c->ReplaceDim(c->input(0), -1, c->MakeDim(1), &stats));
      c->set_output(0, c->input(0));
      c->set_output(1, stats);
      c->set_output(2, stats);
      return absl::OkStatus();
    })
    .Doc("Layer norm over the last axis: y = (x - mean) * inv_std * gamma + beta, float32 statistics.");

REGISTER_OP("ZooLayerNormGrad")
    .Input("x: T")
    .Input("mean: float")
    .Input("inv_std: float")
    .Input("gamma: float")
    .Input("dy: T")
    .Output("dx: T")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(3));
      c->set_output(2, c->input(3));
      return absl::OkStatus();
    })
    .Doc("ZooLayerNorm's gradient; dgamma and dbeta are float32 column sums.");

REGISTER_OP("ZooDropoutAddLayerNorm")
    .Input("h: T")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Input("seed: int32")
    .Output("y: T")
    .Output("sum: T")
    .Output("mean: float")
    .Output("inv_std: float")
    .Attr("T: {float, bfloat16}")
    .Attr("threshold: int")
    .Attr("epsilon: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle stats;
      TF_RETURN_IF_ERROR(c->ReplaceDim(c->input(0), -1, c->MakeDim(1), &stats));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      c->set_output(2, stats);
      c->set_output(3, stats);
      return absl::OkStatus();
    })
    .Doc("sum = x + dropout(h) (each rounded to T, as the separate ops); y = ZooLayerNorm(sum): a post-LN "
         "Transformer's residual branch in one pass. ZooLayerNormGrad on sum and ZooDropout give its gradient.");

// Normalizes the float32 row v (width h) in place; returns (mean, 1 / std).
inline std::pair<float, float> NormalizeRow(float* __restrict__ v, int64_t h, const float* g, const float* b,
                                            float epsilon) {
  const float mu = RowSum(v, h) / static_cast<float>(h);
  for (int64_t j = 0; j < h; ++j) v[j] -= mu;
  const float inv = 1.0f / std::sqrt(RowDot(v, v, h) / static_cast<float>(h) + epsilon);
  for (int64_t j = 0; j < h; ++j) v[j] = v[j] * inv * g[j] + b[j];
  return {mu, inv};
}

template <typename T>
class DropoutAddLayerNormOp : public OpKernel {
 public:
  explicit DropoutAddLayerNormOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("threshold", &threshold_));
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &h_in = ctx->input(0), &x = ctx->input(1), &gamma = ctx->input(2), &beta = ctx->input(3);
    OP_REQUIRES(ctx, h_in.shape() == x.shape(),
                absl::InvalidArgumentError("ZooDropoutAddLayerNorm: h and x must have one shape; got " +
                                           h_in.shape().DebugString() + " and " + x.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckNonEmptyLastAxis(x));
    OP_REQUIRES_OK(ctx, CheckLastAxis(x, gamma, "gamma"));
    OP_REQUIRES_OK(ctx, CheckLastAxis(x, beta, "beta"));
    DropoutMask mask;
    OP_REQUIRES_OK(ctx, MakeDropoutMask<T>(ctx->input(4), threshold_, &mask));
    if (threshold_) OP_REQUIRES_OK(ctx, CheckElementCount(x));
    Tensor *y, *sum, *mean, *inv_std;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &sum));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, RowStatisticsShape(x.shape()), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, RowStatisticsShape(x.shape()), &inv_std));
    const int64_t h = x.dim_size(x.dims() - 1), rows = h ? x.NumElements() / h : 0;
    if (rows == 0) return;
    const T *h_data = h_in.flat<T>().data(), *x_data = x.flat<T>().data();
    T *y_data = y->flat<T>().data(), *sum_data = sum->flat<T>().data();
    const float *g = gamma.flat<float>().data(), *b = beta.flat<float>().data();
    float *mean_data = mean->flat<float>().data(), *inv_data = inv_std->flat<float>().data();
    const float epsilon = epsilon_;
    const bool dropout = threshold_ != 0;
    ParallelRows(ctx, rows, 12 * h, [=](int64_t begin, int64_t end) {
      Scratch scratch(h, 3);
      float* __restrict__ v = scratch.row(0);
      float* __restrict__ residual = scratch.row(1);
      float* __restrict__ keep = scratch.row(2);
      for (int64_t r = begin; r < end; ++r) {
        Io<T>::Load(h_data + r * h, v, h);
        Io<T>::Load(x_data + r * h, residual, h);
        if (dropout) {
          mask.Fill(r * h, h, keep);
          for (int64_t j = 0; j < h; ++j) v[j] = Io<T>::Round(v[j] * keep[j]);
        }
        for (int64_t j = 0; j < h; ++j) v[j] = Io<T>::Round(residual[j] + v[j]);
        Io<T>::Store(v, sum_data + r * h, h);
        const auto stats = NormalizeRow(v, h, g, b, epsilon);
        Io<T>::Store(v, y_data + r * h, h);
        mean_data[r] = stats.first;
        inv_data[r] = stats.second;
      }
    });
  }

 private:
  int threshold_;
  float epsilon_;
};

template <typename T>
class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* c) : OpKernel(c) { OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_)); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &gamma = ctx->input(1), &beta = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckNonEmptyLastAxis(x));
    OP_REQUIRES_OK(ctx, CheckLastAxis(x, gamma, "gamma"));
    OP_REQUIRES_OK(ctx, CheckLastAxis(x, beta, "beta"));
    Tensor *y, *mean, *inv_std;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, RowStatisticsShape(x.shape()), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, RowStatisticsShape(x.shape()), &inv_std));
    const int64_t h = x.dim_size(x.dims() - 1), rows = h ? x.NumElements() / h : 0;
    if (rows == 0) return;
    const T* x_data = x.flat<T>().data();
    T* y_data = y->flat<T>().data();
    const float *g = gamma.flat<float>().data(), *b = beta.flat<float>().data();
    float *mean_data = mean->flat<float>().data(), *inv_data = inv_std->flat<float>().data();
    const float epsilon = epsilon_;
    ParallelRows(ctx, rows, 8 * h, [=](int64_t begin, int64_t end) {
      Scratch scratch(h, 1);
      float* __restrict__ v = scratch.row(0);
      for (int64_t r = begin; r < end; ++r) {
        Io<T>::Load(x_data + r * h, v, h);
        const auto stats = NormalizeRow(v, h, g, b, epsilon);
        Io<T>::Store(v, y_data + r * h, h);
        mean_data[r] = stats.first;
        inv_data[r] = stats.second;
      }
    });
  }

 private:
  float epsilon_;
};

template <typename T>
class LayerNormGradOp : public OpKernel {
 public:
  explicit LayerNormGradOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &mean = ctx->input(1), &inv_std = ctx->input(2), &gamma = ctx->input(3);
    const Tensor& dy = ctx->input(4);
    OP_REQUIRES_OK(ctx, CheckLastAxis(x, gamma, "gamma"));
    OP_REQUIRES(ctx, dy.shape() == x.shape() && mean.shape() == RowStatisticsShape(x.shape()) &&
                         inv_std.shape() == mean.shape(),
                absl::InvalidArgumentError("ZooLayerNormGrad: dy must have x's shape and mean / inv_std [..., 1]"));
    const int64_t h = x.dim_size(x.dims() - 1), rows = h ? x.NumElements() / h : 0;
    Tensor *dx, *dgamma, *dbeta;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma.shape(), &dbeta));
    BlockColumnSums sums(ctx, rows, h, 2);
    const T *x_data = x.flat<T>().data(), *dy_data = dy.flat<T>().data();
    T* dx_data = dx->flat<T>().data();
    const float *g = gamma.flat<float>().data(), *mean_data = mean.flat<float>().data();
    const float* inv_data = inv_std.flat<float>().data();
    const float inv_h = h ? 1.0f / static_cast<float>(h) : 0.0f;
    BlockColumnSums* s = &sums;
    ParallelRows(ctx, sums.blocks(), 14 * h * (rows / sums.blocks() + 1), [=](int64_t block_begin, int64_t block_end) {
      Scratch scratch(h, 3);
      float* __restrict__ x_hat = scratch.row(0);
      float* __restrict__ d = scratch.row(1);
      float* __restrict__ gd = scratch.row(2);
      const float* __restrict__ gain = g;  // a local copy: read through the closure, the loop stayed scalar
      for (int64_t block = block_begin; block < block_end; ++block) {
        float* __restrict__ dgamma_part = s->partial(block, 0);
        float* __restrict__ dbeta_part = s->partial(block, 1);
        for (int64_t r = s->begin(block); r < s->begin(block + 1); ++r) {
          Io<T>::Load(x_data + r * h, x_hat, h);
          Io<T>::Load(dy_data + r * h, d, h);
          const float mu = mean_data[r], inv = inv_data[r];
          // Eigen expressions: the same loop written out stayed scalar (g++ 12 found no vector type for it).
          Array xh(x_hat, h), dd(d, h), gg(gd, h), dgamma_row(dgamma_part, h), dbeta_row(dbeta_part, h);
          xh = (xh - mu) * inv;
          gg = dd * Eigen::Map<const Eigen::ArrayXf>(gain, h);
          dgamma_row += dd * xh;
          dbeta_row += dd;
          const float mean_g = RowSum(gd, h) * inv_h, mean_g_x_hat = RowDot(gd, x_hat, h) * inv_h;
          for (int64_t j = 0; j < h; ++j) gd[j] = inv * (gd[j] - mean_g - x_hat[j] * mean_g_x_hat);
          Io<T>::Store(gd, dx_data + r * h, h);
        }
      }
    });
    sums.Reduce(0, dgamma->flat<float>().data());
    sums.Reduce(1, dbeta->flat<float>().data());
  }
};

// ---- bias add, bias + GELU --------------------------------------------------------------------------------

constexpr float kSqrtHalf = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

// Phi(v) in place. 16-bit results: 0.5 + 0.5 * erf(v / sqrt(2)) (the islands' choice: erf is one polynomial);
// float32 results: 0.5 * erfc(-v / sqrt(2)), exact in the negative tail.
template <typename T>
void NormalCdf(const float* v, float* __restrict__ out, int64_t n) {
  Eigen::Map<const Eigen::ArrayXf> in(v, n);
  Array o(out, n);
  if (std::is_same<T, float>::value) {
    o = (in * -kSqrtHalf).erfc() * 0.5f;
  } else {
    o = (in * kSqrtHalf).erf() * 0.5f + 0.5f;
  }
}

// GPT-1's tanh form: Phi(v) ~ 0.5 * (1 + tanh(sqrt(2 / pi) * (v + 0.044715 v^3))), in place.
constexpr float kSqrtTwoOverPi = 0.7978845608028654f;
constexpr float kTanhCubic = 0.044715f;

void TanhCdf(const float* v, float* __restrict__ out, int64_t n) {
  Eigen::Map<const Eigen::ArrayXf> in(v, n);
  Array o(out, n);
  o = ((in + in * in * in * kTanhCubic) * kSqrtTwoOverPi).tanh() * 0.5f + 0.5f;
}

REGISTER_OP("ZooBiasGelu")
    .Input("x: T")
    .Input("bias: float")
    .Output("y: T")
    .Attr("T: {float, bfloat16}")
    .Attr("approximate: bool = false")
    .SetShapeFn(SameShape)
    .Doc("y = v * Phi(v) with v = x + bias (float32 inside): the exact GELU, or its tanh form if approximate.");

REGISTER_OP("ZooBiasGeluGrad")
    .Input("x: T")
    .Input("bias: float")
    .Input("dy: T")
    .Output("dx: T")
    .Output("dbias: float")
    .Attr("T: {float, bfloat16}")
    .Attr("approximate: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      return absl::OkStatus();
    })
    .Doc("ZooBiasGelu's gradient: dx = dy * (Phi(v) + v * phi(v)); dbias = float32 column sums of dx (as T).");

REGISTER_OP("ZooBiasAdd")
    .Input("x: T")
    .Input("bias: float")
    .Output("y: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn(SameShape)
    .Doc("y = x + bias over the last axis, in float32 rounded once to T (a Dense layer's training bias add).");

// y = x + bias, or GELU(x + bias), over the last axis in float32, rounded once to T: ZooBiasAdd and ZooBiasGelu.
template <typename T, bool kGelu>
class BiasActivationOp : public OpKernel {
 public:
  explicit BiasActivationOp(OpKernelConstruction* c) : OpKernel(c) {
    if (kGelu) OP_REQUIRES_OK(c, c->GetAttr("approximate", &approximate_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &bias = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckLastAxis(x, bias, "bias"));
    Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const int64_t f = x.dim_size(x.dims() - 1), rows = f ? x.NumElements() / f : 0;
    if (rows == 0) return;
    const T* x_data = x.flat<T>().data();
    T* y_data = y->flat<T>().data();
    const float* bias_data = bias.flat<float>().data();
    const bool approximate = approximate_;
    ParallelRows(ctx, rows, (kGelu ? 40 : 4) * f, [=](int64_t begin, int64_t end) {
      Scratch scratch(f, 2);
      float* __restrict__ v = scratch.row(0);
      float* __restrict__ cdf = scratch.row(1);
      const float* __restrict__ b = bias_data;
      for (int64_t r = begin; r < end; ++r) {
        Io<T>::Load(x_data + r * f, v, f);
        for (int64_t j = 0; j < f; ++j) v[j] += b[j];
        if (kGelu) {
          if (approximate) {
            TanhCdf(v, cdf, f);
          } else {
            NormalCdf<T>(v, cdf, f);
          }
          for (int64_t j = 0; j < f; ++j) v[j] *= cdf[j];
        }
        Io<T>::Store(v, y_data + r * f, f);
      }
    });
  }

 private:
  bool approximate_ = false;
};

template <typename T>
class BiasGeluGradOp : public OpKernel {
 public:
  explicit BiasGeluGradOp(OpKernelConstruction* c) : OpKernel(c) { OP_REQUIRES_OK(c, c->GetAttr("approximate", &approximate_)); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &bias = ctx->input(1), &dy = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckLastAxis(x, bias, "bias"));
    OP_REQUIRES(ctx, dy.shape() == x.shape(), absl::InvalidArgumentError("ZooBiasGeluGrad: dy must have x's shape"));
    Tensor *dx, *dbias;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, bias.shape(), &dbias));
    const int64_t f = x.dim_size(x.dims() - 1), rows = f ? x.NumElements() / f : 0;
    BlockColumnSums sums(ctx, rows, f, 1);
    const T *x_data = x.flat<T>().data(), *dy_data = dy.flat<T>().data();
    T* dx_data = dx->flat<T>().data();
    const float* b = bias.flat<float>().data();
    BlockColumnSums* s = &sums;
    const bool approximate = approximate_;
    ParallelRows(ctx, sums.blocks(), 60 * f * (rows / sums.blocks() + 1), [=](int64_t block_begin, int64_t block_end) {
      Scratch scratch(f, 3);
      float* __restrict__ v = scratch.row(0);
      float* __restrict__ cdf = scratch.row(1);
      float* __restrict__ d = scratch.row(2);
      for (int64_t block = block_begin; block < block_end; ++block) {
        float* __restrict__ dbias_part = s->partial(block, 0);
        for (int64_t r = s->begin(block); r < s->begin(block + 1); ++r) {
          Io<T>::Load(x_data + r * f, v, f);
          Io<T>::Load(dy_data + r * f, d, f);
          for (int64_t j = 0; j < f; ++j) v[j] += b[j];
          Array vv(v, f), cc(cdf, f), dd(d, f);
          if (approximate) {
            // d/dv [v * 0.5 (1 + t)] = 0.5 (1 + t) + 0.5 v (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 v^2)
            TanhCdf(v, cdf, f);
            dd = dd * (cc + vv * (cc * (1.0f - cc) * 2.0f) * kSqrtTwoOverPi * (vv * vv * (3.0f * kTanhCubic) + 1.0f));
          } else {
            NormalCdf<T>(v, cdf, f);
            dd = dd * (cc + vv * ((vv * vv * -0.5f).exp() * kInvSqrt2Pi));  // dy * (Phi + v * phi)
          }
          Io<T>::Store(d, dx_data + r * f, f);
          for (int64_t j = 0; j < f; ++j) dbias_part[j] += Io<T>::Round(d[j]);
        }
      }
    });
    sums.Reduce(0, dbias->flat<float>().data());
  }

 private:
  bool approximate_ = false;
};

// ---- dropout ------------------------------------------------------------------------------------------------

REGISTER_OP("ZooDropout")
    .Input("x: T")
    .Input("seed: int32")
    .Output("y: T")
    .Attr("T: {float, bfloat16}")
    .Attr("threshold: int")
    .SetShapeFn(SameShape)
    .Doc("x * keep_scale(seed, threshold): dropout's forward and (on dy, same seed) its gradient.");

template <typename T>
class DropoutOp : public OpKernel {
 public:
  explicit DropoutOp(OpKernelConstruction* c) : OpKernel(c) { OP_REQUIRES_OK(c, c->GetAttr("threshold", &threshold_)); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    DropoutMask mask;
    OP_REQUIRES_OK(ctx, MakeDropoutMask<T>(ctx->input(1), threshold_, &mask));
    OP_REQUIRES_OK(ctx, CheckElementCount(x));
    Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    constexpr int64_t kChunk = 1024;
    const int64_t n = x.NumElements(), chunks = (n + kChunk - 1) / kChunk;
    const T* x_data = x.flat<T>().data();
    T* y_data = y->flat<T>().data();
    ParallelRows(ctx, chunks, 10 * kChunk, [=](int64_t begin, int64_t end) {
      alignas(64) float v[kChunk];
      alignas(64) float keep[kChunk];
      for (int64_t c = begin; c < end; ++c) {
        const int64_t start = c * kChunk, count = std::min(kChunk, n - start);
        Io<T>::Load(x_data + start, v, count);
        mask.Fill(start, count, keep);
        for (int64_t j = 0; j < count; ++j) v[j] *= keep[j];
        Io<T>::Store(v, y_data + start, count);
      }
    });
  }

 private:
  int threshold_;
};

// ---- attention softmax --------------------------------------------------------------------------------------

REGISTER_OP("ZooAttentionSoftmax")
    .Input("scores: T")
    .Input("bias: float")
    .Input("seed: int32")
    .Output("probs: T")
    .Output("p: float")
    .Attr("T: {float, bfloat16}")
    .Attr("threshold: int")
    .Attr("scale: float = 1.0")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      return absl::OkStatus();
    })
    .Doc("p = softmax(scores * scale + bias) over the last axis in float32; probs = T(p) dropped out.");

REGISTER_OP("ZooAttentionSoftmaxGrad")
    .Input("p: float")
    .Input("dy: T")
    .Input("seed: int32")
    .Output("dscores: T")
    .Attr("T: {float, bfloat16}")
    .Attr("threshold: int")
    .Attr("scale: float = 1.0")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    })
    .Doc("ZooAttentionSoftmax's gradient: scale * p * (g - sum(g * p)), g = dy * keep mask in float32.");

// Per-axis strides of a bias broadcast against [B, N, T, S] (0 along its size-1 axes).
absl::Status BiasStrides(const Tensor& scores, const Tensor& bias, int64_t strides[4]) {
  if (scores.dims() != 4 || bias.dims() > 4) {
    return absl::InvalidArgumentError("ZooAttentionSoftmax: scores must be [B, N, T, S] and bias of rank <= 4; got " +
                                      scores.shape().DebugString() + " and " + bias.shape().DebugString());
  }
  int64_t stride = 1;
  for (int axis = 3; axis >= 0; --axis) {
    const int bias_axis = axis - (4 - bias.dims());
    const int64_t size = bias_axis >= 0 ? bias.dim_size(bias_axis) : 1;
    if (size != 1 && size != scores.dim_size(axis)) {
      return absl::InvalidArgumentError("ZooAttentionSoftmax: bias " + bias.shape().DebugString() +
                                        " does not broadcast to scores " + scores.shape().DebugString());
    }
    strides[axis] = size == 1 ? 0 : stride;
    stride *= size;
  }
  return absl::OkStatus();
}

template <typename T>
class AttentionSoftmaxOp : public OpKernel {
 public:
  explicit AttentionSoftmaxOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("threshold", &threshold_));
    OP_REQUIRES_OK(c, c->GetAttr("scale", &scale_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &scores = ctx->input(0), &bias = ctx->input(1);
    int64_t strides[4];
    OP_REQUIRES_OK(ctx, BiasStrides(scores, bias, strides));
    DropoutMask mask;
    OP_REQUIRES_OK(ctx, MakeDropoutMask<T>(ctx->input(2), threshold_, &mask));
    if (threshold_) OP_REQUIRES_OK(ctx, CheckElementCount(scores));
    Tensor *probs, *p;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, scores.shape(), &probs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, scores.shape(), &p));
    const int64_t n_heads = scores.dim_size(1), t = scores.dim_size(2), s = scores.dim_size(3);
    const int64_t rows = scores.dim_size(0) * n_heads * t;
    if (rows == 0 || s == 0) return;
    const T* in = scores.flat<T>().data();
    const float* bias_data = bias.flat<float>().data();
    T* probs_data = probs->flat<T>().data();
    float* p_data = p->flat<float>().data();
    const bool dropout = threshold_ != 0;
    const int64_t sb0 = strides[0], sb1 = strides[1], sb2 = strides[2], sb3 = strides[3];
    const float scale = scale_;
    ParallelRows(ctx, rows, 30 * s, [=](int64_t begin, int64_t end) {
      Scratch scratch(s, 3);
      float* __restrict__ v = scratch.row(0);
      float* __restrict__ keep = scratch.row(1);
      float* __restrict__ rounded = scratch.row(2);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t q = r % t, head = (r / t) % n_heads, example = r / (t * n_heads);
        const float* b = bias_data + example * sb0 + head * sb1 + q * sb2;
        Io<T>::Load(in + r * s, v, s);
        if (sb3) {
          for (int64_t j = 0; j < s; ++j) v[j] = v[j] * scale + b[j];
        } else {
          for (int64_t j = 0; j < s; ++j) v[j] = v[j] * scale + b[0];
        }
        const float top = RowMax(v, s);
        for (int64_t j = 0; j < s; ++j) v[j] -= top;
        Array row(v, s);
        row = row.exp();
        const float sum = RowSum(v, s);
        for (int64_t j = 0; j < s; ++j) v[j] /= sum;
        std::memcpy(p_data + r * s, v, s * 4);
        if (dropout) {
          mask.Fill(r * s, s, keep);
          for (int64_t j = 0; j < s; ++j) rounded[j] = Io<T>::Round(v[j]) * keep[j];
          Io<T>::Store(rounded, probs_data + r * s, s);
        } else {
          Io<T>::Store(v, probs_data + r * s, s);
        }
      }
    });
  }

 private:
  int threshold_;
  float scale_ = 1.0f;
};

template <typename T>
class AttentionSoftmaxGradOp : public OpKernel {
 public:
  explicit AttentionSoftmaxGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("threshold", &threshold_));
    OP_REQUIRES_OK(c, c->GetAttr("scale", &scale_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &p = ctx->input(0), &dy = ctx->input(1);
    OP_REQUIRES(ctx, p.shape() == dy.shape() && p.dims() >= 1,
                absl::InvalidArgumentError("ZooAttentionSoftmaxGrad: p and dy must have one shape"));
    DropoutMask mask;
    OP_REQUIRES_OK(ctx, MakeDropoutMask<T>(ctx->input(2), threshold_, &mask));
    if (threshold_) OP_REQUIRES_OK(ctx, CheckElementCount(dy));
    Tensor* dscores;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, dy.shape(), &dscores));
    const int64_t s = dy.dim_size(dy.dims() - 1), rows = s ? dy.NumElements() / s : 0;
    if (rows == 0) return;
    const float* p_data = p.flat<float>().data();
    const T* dy_data = dy.flat<T>().data();
    T* out = dscores->flat<T>().data();
    const bool dropout = threshold_ != 0;
    const float scale = scale_;
    ParallelRows(ctx, rows, 12 * s, [=](int64_t begin, int64_t end) {
      Scratch scratch(s, 2);
      float* __restrict__ g = scratch.row(0);
      float* __restrict__ keep = scratch.row(1);
      for (int64_t r = begin; r < end; ++r) {
        const float* __restrict__ pr = p_data + r * s;
        Io<T>::Load(dy_data + r * s, g, s);
        if (dropout) {
          mask.Fill(r * s, s, keep);
          for (int64_t j = 0; j < s; ++j) g[j] = Io<T>::Round(g[j] * keep[j]);
        }
        const float dot = RowDot(g, pr, s);
        for (int64_t j = 0; j < s; ++j) g[j] = pr[j] * (g[j] - dot) * scale;
        Io<T>::Store(g, out + r * s, s);
      }
    });
  }

 private:
  int threshold_;
  float scale_ = 1.0f;
};

// ---- registration -------------------------------------------------------------------------------------------

#define ZOO_REGISTER(type)                                                                                        \
  REGISTER_KERNEL_BUILDER(Name("ZooLayerNorm").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),          \
                          LayerNormOp<type>);                                                                     \
  REGISTER_KERNEL_BUILDER(Name("ZooDropoutAddLayerNorm").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"), \
                          DropoutAddLayerNormOp<type>);                                                           \
  REGISTER_KERNEL_BUILDER(Name("ZooLayerNormGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),      \
                          LayerNormGradOp<type>);                                                                 \
  REGISTER_KERNEL_BUILDER(Name("ZooBiasGelu").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),           \
                          (BiasActivationOp<type, true>));                                                                      \
  REGISTER_KERNEL_BUILDER(Name("ZooBiasGeluGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),       \
                          BiasGeluGradOp<type>);                                                                  \
  REGISTER_KERNEL_BUILDER(Name("ZooBiasAdd").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),            \
                          (BiasActivationOp<type, false>));                                                                       \
  REGISTER_KERNEL_BUILDER(Name("ZooDropout").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),            \
                          DropoutOp<type>);                                                                       \
  REGISTER_KERNEL_BUILDER(Name("ZooAttentionSoftmax").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),   \
                          AttentionSoftmaxOp<type>);                                                              \
  REGISTER_KERNEL_BUILDER(Name("ZooAttentionSoftmaxGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"), \
                          AttentionSoftmaxGradOp<type>);

ZOO_REGISTER(float)
ZOO_REGISTER(tensorflow::bfloat16)

#undef ZOO_REGISTER

}  // namespace zoo
