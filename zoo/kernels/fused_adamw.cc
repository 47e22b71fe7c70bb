// ZooApplyAdamW: decoupled weight decay, global-norm clip scale and the Adam update of one float32 variable in a
// single pass over var, m, v and the gradient (zoo/optim.py's FusedAdamW uses it on CPUs when it builds).
//
// Per element, in this order and in float32 (TF's ApplyAdam formula after Keras AdamW's decay):
//   g   = grad * grad_scale
//   m  += (g - m) * (1 - beta1)
//   v  += (g * g - v) * (1 - beta2)
//   var = var * keep - (m * alpha) / (sqrt(v) + epsilon)
// with alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t) and keep = 1 - lr * weight_decay (1 for excluded variables),
// both computed by the caller. Doing it as TF ops takes four passes over memory (clip multiply, decay multiply and
// assign, ResourceApplyAdam): the update is memory-bound, so one pass is the whole gain.
//
// Variables follow TF's resource-variable rules: all three are locked (in address order), and a buffer that is
// shared with a reader (or a variable in copy-on-read mode) is copied before it is written, as TF's own training
// kernels do.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace zoo {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::Var;

REGISTER_OP("ZooApplyAdamW")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("grad: float")
    .Input("alpha: float")
    .Input("beta1: float")
    .Input("beta2: float")
    .Input("epsilon: float")
    .Input("keep: float")
    .Input("grad_scale: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext*) { return absl::OkStatus(); })
    .Doc("AdamW with decoupled decay and a gradient scale, one pass; see zoo/kernels/fused_adamw.cc.");

namespace {

// Makes var's buffer safe to write in place: copies it when another tensor shares it.
absl::Status PrepareToWrite(OpKernelContext* ctx, Var* var) {
  Tensor* tensor = var->tensor();
  if (!var->copy_on_read_mode.load() && tensor->RefCountIsOne()) return absl::OkStatus();
  Tensor copy;
  TF_RETURN_IF_ERROR(ctx->allocate_temp(tensor->dtype(), tensor->shape(), &copy));
  std::memcpy(copy.data(), tensor->data(), tensor->TotalBytes());
  *tensor = copy;
  return absl::OkStatus();
}


}  // namespace

class ZooApplyAdamWOp : public OpKernel {
 public:
  explicit ZooApplyAdamWOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* ctx) override {
    tensorflow::core::RefCountPtr<Var> vars[3];
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES_OK(ctx, tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, i), &vars[i]));
    }
    Var* ordered[3] = {vars[0].get(), vars[1].get(), vars[2].get()};
    OP_REQUIRES(ctx, ordered[0] != ordered[1] && ordered[1] != ordered[2] && ordered[0] != ordered[2],
                absl::InvalidArgumentError("ZooApplyAdamW: var, m and v must be three different variables"));
    std::sort(ordered, ordered + 3);
    tensorflow::mutex_lock lock_0(*ordered[0]->mu());
    tensorflow::mutex_lock lock_1(*ordered[1]->mu());
    tensorflow::mutex_lock lock_2(*ordered[2]->mu());

    const Tensor& grad = ctx->input(3);
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES(ctx, vars[i]->is_initialized,
                  absl::FailedPreconditionError("ZooApplyAdamW: a variable is not initialized"));
      const Tensor& t = *vars[i]->tensor();
      OP_REQUIRES(ctx, t.dtype() == tensorflow::DT_FLOAT && t.shape() == grad.shape(),
                  absl::InvalidArgumentError("ZooApplyAdamW: var, m, v and grad must be float32 of one shape; got " +
                                             t.shape().DebugString() + " and " + grad.shape().DebugString()));
      OP_REQUIRES_OK(ctx, PrepareToWrite(ctx, vars[i].get()));
    }
    float scalars[6];
    for (int i = 0; i < 6; ++i) {
      const Tensor& t = ctx->input(4 + i);
      OP_REQUIRES(ctx, t.NumElements() == 1,
                  absl::InvalidArgumentError("ZooApplyAdamW: hyperparameter inputs must be scalars"));
      scalars[i] = t.flat<float>()(0);
    }
    const float alpha = scalars[0], beta1 = scalars[1], beta2 = scalars[2];
    const float epsilon = scalars[3], keep = scalars[4], scale = scalars[5];
    const float one_minus_beta1 = 1.0f - beta1, one_minus_beta2 = 1.0f - beta2;

    float* var_data = vars[0]->tensor()->flat<float>().data();
    float* m_data = vars[1]->tensor()->flat<float>().data();
    float* v_data = vars[2]->tensor()->flat<float>().data();
    const float* g_data = grad.flat<float>().data();
    auto update = [=](int64_t begin, int64_t end) {
      // Four distinct buffers (three variables, checked above, and the gradient): restrict lets it vectorize.
      float* __restrict__ var = var_data;
      float* __restrict__ m = m_data;
      float* __restrict__ v = v_data;
      const float* __restrict__ g = g_data;
      for (int64_t i = begin; i < end; ++i) {
        const float gi = g[i] * scale;
        const float mi = m[i] + (gi - m[i]) * one_minus_beta1;
        const float vi = v[i] + (gi * gi - v[i]) * one_minus_beta2;
        m[i] = mi;
        v[i] = vi;
        var[i] = var[i] * keep - (mi * alpha) / (std::sqrt(vi) + epsilon);
      }
    };
    // ~16 flops and 28 bytes per element: memory-bound; shard in blocks the threads stream through.
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(grad.NumElements(), 64, update);
  }
};

REGISTER_KERNEL_BUILDER(Name("ZooApplyAdamW").Device(tensorflow::DEVICE_CPU), ZooApplyAdamWOp);

}  // namespace zoo
