/* weft-example: two ops GAN practitioners use, and a fake device.
 *
 * minibatch_stddev (x [N,C,H,W] -> [N,C+1,H,W]): appends one feature map holding the
 *   average over (C,H,W) of the standard deviation of x across the batch, so that a
 *   discriminator can see how varied a batch is: a remedy for mode collapse (Karras et
 *   al., "Progressive Growing of GANs"). Its gradient is a subgraph of weft ops, so it is
 *   differentiable again.
 * pixel_norm (x [N,C,...]): x / sqrt(mean over channels of x^2 + eps), per position.
 *   Its gradient is an op of this plugin, pixel_norm_backward, with kernels of its own.
 * host-fake: a device whose memory is host memory; pixel_norm has a kernel for it. It
 *   exercises the device half of the ABI that real accelerators use.
 *
 * Plain C: nothing but the C ABI of weft_plugin.h crosses the boundary. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft_plugin.h"

/* Reads the number after "key": in a flat JSON object; good enough for our attributes. */
static double attr_number(const char* json, const char* key, double fallback) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  const char* at = strstr(json, pattern);
  return at ? strtod(at + strlen(pattern), NULL) : fallback;
}

static int64_t numel(const weft_tensor* t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
  return n;
}

/* ---- minibatch_stddev ---------------------------------------------------------------- */

static int mbstd_shape(const weft_shape_call* c) {
  if (c->in_ndim[0] != 4) {
    snprintf(c->error, c->error_size, "minibatch_stddev takes [batch, channels, height, width]");
    return 1;
  }
  c->out_ndim[0] = 4;
  for (int i = 0; i < 4; ++i) c->out_shape[0][i] = c->in_shape[0][i];
  c->out_shape[0][1] += 1;
  return 0;
}

#define MBSTD_KERNEL(T, NAME)                                                                     \
  static int NAME(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor* out,   \
                  int32_t n_out) {                                                                \
    (void)n_in;                                                                                   \
    (void)n_out;                                                                                  \
    const double eps = attr_number(call->attrs, "eps", 1e-8);                                     \
    const int64_t n = in[0].shape[0], c = in[0].shape[1], hw = in[0].shape[2] * in[0].shape[3];   \
    const T* x = (const T*)in[0].data;                                                            \
    T* y = (T*)out[0].data;                                                                       \
    if (n < 2) {                                                                                  \
      call->host->report_error(call, "minibatch_stddev needs a batch of at least 2");             \
      return 1;                                                                                   \
    }                                                                                             \
    double total = 0;                                                                             \
    for (int64_t k = 0; k < c * hw; ++k) {                                                        \
      double mu = 0, var = 0;                                                                     \
      for (int64_t i = 0; i < n; ++i) mu += x[i * c * hw + k];                                    \
      mu /= (double)n;                                                                            \
      for (int64_t i = 0; i < n; ++i) var += (x[i * c * hw + k] - mu) * (x[i * c * hw + k] - mu); \
      total += sqrt(var / (double)n + eps);                                                       \
    }                                                                                             \
    const T v = (T)(total / (double)(c * hw));                                                    \
    for (int64_t i = 0; i < n; ++i) {                                                             \
      memcpy(y + i * (c + 1) * hw, x + i * c * hw, sizeof(T) * (size_t)(c * hw));                 \
      for (int64_t j = 0; j < hw; ++j) y[(i * (c + 1) + c) * hw + j] = v;                         \
    }                                                                                             \
    return 0;                                                                                     \
  }
MBSTD_KERNEL(float, mbstd_f32)
MBSTD_KERNEL(double, mbstd_f64)

/* v = mean_{c,h,w} sd, sd = sqrt(var_n(x) + eps), so
 * dx = dy[:, :C] + sum(dy[:, C]) * (x - mu) / (N * C*H*W * sd). */
static const char* kMbstdGradient =
    "{\"nodes\": ["
    " {\"id\": \"mu\", \"op\": \"mean\", \"in\": [\"x\"], \"axes\": [0], \"keepdims\": true},"
    " {\"id\": \"xc\", \"op\": \"sub\", \"in\": [\"x\", \"mu\"]},"
    " {\"id\": \"sq\", \"op\": \"square\", \"in\": [\"xc\"]},"
    " {\"id\": \"var\", \"op\": \"mean\", \"in\": [\"sq\"], \"axes\": [0], \"keepdims\": true},"
    " {\"id\": \"ve\", \"op\": \"add\", \"in\": [\"var\", \"$eps\"]},"
    " {\"id\": \"sd\", \"op\": \"sqrt\", \"in\": [\"ve\"]},"
    " {\"id\": \"one\", \"op\": \"sum\", \"in\": [\"x\"], \"axes\": [1], \"keepdims\": true},"
    " {\"id\": \"gx\", \"op\": \"concat_backward\", \"in\": [\"dy\", \"x\", \"one\"], \"axis\": 1, "
    "\"index\": 0},"
    " {\"id\": \"gm\", \"op\": \"concat_backward\", \"in\": [\"dy\", \"x\", \"one\"], \"axis\": 1, "
    "\"index\": 1},"
    " {\"id\": \"gv\", \"op\": \"sum\", \"in\": [\"gm\"]},"
    " {\"id\": \"t0\", \"op\": \"broadcast_like\", \"in\": [\"gv\", \"sd\"], \"mean\": true},"
    " {\"id\": \"t\", \"op\": \"div\", \"in\": [\"t0\", \"sd\"]},"
    " {\"id\": \"tb\", \"op\": \"broadcast_like\", \"in\": [\"t\", \"x\"], \"mean\": true},"
    " {\"id\": \"corr\", \"op\": \"mul\", \"in\": [\"xc\", \"tb\"]},"
    " {\"id\": \"dx\", \"op\": \"add\", \"in\": [\"gx\", \"corr\"]}"
    "], \"grads\": {\"x\": \"dx\"}}";

/* ---- pixel_norm ---------------------------------------------------------------------- */

static int same_shape(const weft_shape_call* c) {
  if (c->in_ndim[0] < 2) {
    snprintf(c->error, c->error_size, "pixel_norm takes [batch, channels, ...]");
    return 1;
  }
  c->out_ndim[0] = c->in_ndim[0];
  memcpy(c->out_shape[0], c->in_shape[0], sizeof(int64_t) * WEFT_MAX_DIMS);
  return 0;
}

static int backward_shape(const weft_shape_call* c) {
  for (int i = 0; i < c->in_ndim[0]; ++i)
    if (c->in_ndim[0] != c->in_ndim[1] || c->in_shape[0][i] != c->in_shape[1][i]) {
      snprintf(c->error, c->error_size, "dy and x differ in shape");
      return 1;
    }
  c->out_ndim[0] = c->in_ndim[1];
  memcpy(c->out_shape[0], c->in_shape[1], sizeof(int64_t) * WEFT_MAX_DIMS);
  return 0;
}

/* y = x r, r = 1 / sqrt(mean_c x^2 + eps); dx = r dy - x r^3 mean_c(dy x). */
#define PIXEL_NORM_KERNELS(T, FWD, BWD)                                                           \
  static int FWD(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor* out,    \
                 int32_t n_out) {                                                                 \
    (void)n_in;                                                                                   \
    (void)n_out;                                                                                  \
    const double eps = attr_number(call->attrs, "eps", 1e-8);                                     \
    const int64_t n = in[0].shape[0], c = in[0].shape[1], s = numel(&in[0]) / (n * c);            \
    const T* x = (const T*)in[0].data;                                                            \
    T* y = (T*)out[0].data;                                                                       \
    for (int64_t i = 0; i < n; ++i)                                                               \
      for (int64_t p = 0; p < s; ++p) {                                                           \
        double m = 0;                                                                             \
        for (int64_t k = 0; k < c; ++k)                                                           \
          m += (double)x[(i * c + k) * s + p] * x[(i * c + k) * s + p];                           \
        const double r = 1 / sqrt(m / (double)c + eps);                                           \
        for (int64_t k = 0; k < c; ++k) y[(i * c + k) * s + p] = (T)(x[(i * c + k) * s + p] * r); \
      }                                                                                           \
    return 0;                                                                                     \
  }                                                                                               \
  static int BWD(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor* out,    \
                 int32_t n_out) {                                                                 \
    (void)n_in;                                                                                   \
    (void)n_out;                                                                                  \
    const double eps = attr_number(call->attrs, "eps", 1e-8);                                     \
    const int64_t n = in[1].shape[0], c = in[1].shape[1], s = numel(&in[1]) / (n * c);            \
    const T *dy = (const T*)in[0].data, *x = (const T*)in[1].data;                                \
    T* dx = (T*)out[0].data;                                                                      \
    for (int64_t i = 0; i < n; ++i)                                                               \
      for (int64_t p = 0; p < s; ++p) {                                                           \
        double m = 0, d = 0;                                                                      \
        for (int64_t k = 0; k < c; ++k) {                                                         \
          const double xv = x[(i * c + k) * s + p];                                               \
          m += xv * xv;                                                                           \
          d += dy[(i * c + k) * s + p] * xv;                                                      \
        }                                                                                         \
        const double r = 1 / sqrt(m / (double)c + eps);                                           \
        for (int64_t k = 0; k < c; ++k) {                                                         \
          const int64_t at = (i * c + k) * s + p;                                                 \
          dx[at] = (T)(r * dy[at] - x[at] * r * r * r * d / (double)c);                           \
        }                                                                                         \
      }                                                                                           \
    return 0;                                                                                     \
  }
PIXEL_NORM_KERNELS(float, pixel_norm_f32, pixel_norm_backward_f32)
PIXEL_NORM_KERNELS(double, pixel_norm_f64, pixel_norm_backward_f64)

/* ---- a fake device: host memory behind the device interface ------------------------- */

static void* fake_alloc(size_t bytes) { return calloc(1, bytes ? bytes : 1); }
static void fake_free(void* p) { free(p); }
static int fake_to_host(void* dst, const void* src, size_t bytes) {
  memcpy(dst, src, bytes);
  return 0;
}
static int fake_from_host(void* dst, const void* src, size_t bytes) {
  memcpy(dst, src, bytes);
  return 0;
}
static int fake_sync(void) { return 0; }

/* ---- registration -------------------------------------------------------------------- */

static const weft_plugin_info kInfo = {WEFT_PLUGIN_ABI_VERSION, "weft-example", "1.0"};

const weft_plugin_info* weft_plugin_describe(void) { return &kInfo; }

int weft_plugin_init(const weft_host* host, weft_registrar* reg) {
  (void)host;
  const char* eps_attr =
      "[{\"name\": \"eps\", \"type\": \"float\", \"default\": 1e-8, \"doc\": \"added under the "
      "square root\"}]";
  weft_op_def mbstd = {
      "minibatch_stddev",
      "appends the mean over (C,H,W) of the batch standard deviation as one more channel (a remedy "
      "for mode collapse)",
      "x",
      "y",
      eps_attr,
      mbstd_shape,
      kMbstdGradient,
      "{\"cases\": [[[4, 2, 3, 3]], [[3, 1, 2, 4]]], \"attrs\": {\"eps\": 1e-3}, \"order\": 2}"};
  weft_op_def pn = {"pixel_norm",
                    "x / sqrt(mean over channels of x^2 + eps) at each position",
                    "x",
                    "y",
                    eps_attr,
                    same_shape,
                    "{\"nodes\": [{\"id\": \"g\", \"op\": \"pixel_norm_backward\", \"in\": "
                    "[\"dy\", \"x\"], \"eps\": \"$eps\"}],"
                    " \"grads\": {\"x\": \"g\"}}",
                    "{\"cases\": [[[3, 4, 2, 2]], [[5, 3]]], \"attrs\": {\"eps\": 1e-3}}"};
  weft_op_def pnb = {"pixel_norm_backward",
                     "dx of pixel_norm from dy and x",
                     "dy,x",
                     "dx",
                     eps_attr,
                     backward_shape,
                     NULL,
                     "{\"cases\": [[[3, 4, 2, 2], [3, 4, 2, 2]]], \"attrs\": {\"eps\": 1e-3}}"};
  /* pixel_norm_backward must exist before pixel_norm's gradient names it. */
  if (reg->add_op(reg, &mbstd) || reg->add_op(reg, &pnb) || reg->add_op(reg, &pn)) return 1;
  const weft_kernel_def kernels[] = {
      {"minibatch_stddev", WEFT_DEVICE_CPU, WEFT_F32, "cpu", mbstd_f32},
      {"minibatch_stddev", WEFT_DEVICE_CPU, WEFT_F64, "cpu", mbstd_f64},
      {"pixel_norm", WEFT_DEVICE_CPU, WEFT_F32, "cpu", pixel_norm_f32},
      {"pixel_norm", WEFT_DEVICE_CPU, WEFT_F64, "cpu", pixel_norm_f64},
      {"pixel_norm_backward", WEFT_DEVICE_CPU, WEFT_F32, "cpu", pixel_norm_backward_f32},
      {"pixel_norm_backward", WEFT_DEVICE_CPU, WEFT_F64, "cpu", pixel_norm_backward_f64},
  };
  for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; ++i)
    if (reg->add_kernel(reg, &kernels[i])) return 1;
  const weft_device_def fake = {"host-fake",  fake_alloc,     fake_free,
                                fake_to_host, fake_from_host, fake_sync};
  int32_t kind = 0;
  if (reg->add_device(reg, &fake, &kind)) return 1;
  const weft_kernel_def on_fake = {"pixel_norm", kind, WEFT_F32, "host-fake", pixel_norm_f32};
  return reg->add_kernel(reg, &on_fake);
}
