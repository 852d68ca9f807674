/* weft-example: two ops GAN practitioners use, and a fake device.
 *
 * minibatch_stddev (x [N,C,H,W] -> [N,C+1,H,W]): appends one feature map holding the
 *   average over (C,H,W) of the standard deviation of x across the batch, so that a
 *   discriminator can see how varied a batch is: a remedy for mode collapse (Karras et
 *   al., "Progressive Growing of GANs"). Its gradient is a subgraph of weft ops, so it is
 *   differentiable again.
 * pixel_norm (x [N,C,...]): x / sqrt(mean over channels of x^2 + eps), per position.
 *   Its gradient is an op of this plugin, pixel_norm_backward, with kernels of its own.
 * host-fake: a device whose memory is host memory, with kernels for every op dcgan and
 *   mlp_gan use (borrowed from weft's CPU kernels). It exercises the device half of the
 *   ABI that real accelerators use; see below.
 *
 * Plain C: nothing but the C ABI of weft_plugin.h crosses the boundary. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_device.h"
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

/* ---- host-fake: host memory behind the device interface ------------------------------
 *
 * A device for testing weft's device path without a GPU. Everything goes through the
 * interface a real accelerator uses: its own allocator, one stream, copies and zeroing on
 * the stream, per-plan kernel state and a workspace. The stream is deferred like a GPU's:
 * kernels, copies and zeroing are queued and run only when weft syncs (or frees memory, as
 * cudaFree would), so a host read that weft forgot to wait for sees stale memory. Its
 * kernels borrow weft's own CPU kernels (host->cpu_kernel_*), so a run on it must equal a
 * CPU run bit for bit. weft_example_fake_stats() tells a test what crossed. */

typedef struct fake_op {
  int kind; /* 0 kernel, 1 copy (to host, from host, within), 2 zero */
  struct fake_op* next;
  /* a kernel */
  void* borrowed;
  weft_call call;
  double scalars[8];
  weft_tensor* tensors; /* in, then out */
  int32_t n_in, n_out;
  /* a copy or zeroing */
  void* dst;
  const void* src;
  void* owned_src; /* what copy_from_host read at once */
  size_t bytes;
} fake_op;

typedef struct fake_stream {
  fake_op *head, *tail;
} fake_stream;

typedef struct fake_device {
  fake_stream* stream;
  weft_example_fake_stats_t stats;
  const weft_host* host;
  int failed; /* a queued kernel failed: the next sync says so */
} fake_device;

static fake_device g_fake;

WEFT_EXPORT const weft_example_fake_stats_t* weft_example_fake_stats(void) { return &g_fake.stats; }

static void fake_push(fake_device* d, fake_op* op) {
  fake_stream* s = d->stream;
  op->next = NULL;
  if (s->tail)
    s->tail->next = op;
  else
    s->head = op;
  s->tail = op;
}

/* Runs everything queued, in order. */
static int fake_drain(fake_device* d) {
  fake_stream* s = d->stream;
  if (!s) return 0;
  while (s->head) {
    fake_op* op = s->head;
    s->head = op->next;
    if (!s->head) s->tail = NULL;
    if (op->kind == 0) {
      if (d->host->cpu_kernel_run(op->borrowed, &op->call, op->tensors, op->n_in,
                                  op->tensors + op->n_in, op->n_out) != 0)
        d->failed = 1;
      free(op->tensors);
    } else if (op->kind == 1) {
      memcpy(op->dst, op->owned_src ? op->owned_src : op->src, op->bytes);
      free(op->owned_src);
    } else {
      memset(op->dst, 0, op->bytes);
    }
    free(op);
  }
  return d->failed ? 1 : 0;
}

static int fake_available(void* ctx, char* why, size_t why_size) {
  (void)ctx;
  /* A test can make the device unavailable, as a GPU plugin is without a GPU. */
  const char* reason = getenv("WEFT_EXAMPLE_FAKE_UNAVAILABLE");
  if (reason && *reason) {
    snprintf(why, why_size, "%s", reason);
    return 1;
  }
  return 0;
}
static void* fake_alloc(void* ctx, size_t bytes) {
  fake_device* d = (fake_device*)ctx;
  d->stats.allocations++;
  d->stats.live_allocations++;
  return malloc(bytes ? bytes : 1); /* not zeroed, as cudaMalloc: weft zeroes what it needs */
}
static void fake_free(void* ctx, void* p) {
  fake_device* d = (fake_device*)ctx;
  fake_drain(d); /* queued work may still use it */
  d->stats.live_allocations--;
  free(p);
}
static void* fake_stream_create(void* ctx) {
  fake_device* d = (fake_device*)ctx;
  if (!d->stream) d->stream = (fake_stream*)calloc(1, sizeof(fake_stream));
  return d->stream;
}
static fake_op* fake_new(int kind, void* dst, const void* src, size_t bytes) {
  fake_op* op = (fake_op*)calloc(1, sizeof(fake_op));
  op->kind = kind;
  op->dst = dst;
  op->src = src;
  op->bytes = bytes;
  return op;
}
static int fake_to_host(void* ctx, void* stream, void* dst, const void* src, size_t bytes) {
  fake_device* d = (fake_device*)ctx;
  if (stream != d->stream) return 1;
  d->stats.copies_to_host++;
  d->stats.bytes_to_host += bytes;
  fake_push(d, fake_new(1, dst, src, bytes));
  return 0;
}
static int fake_from_host(void* ctx, void* stream, void* dst, const void* src, size_t bytes) {
  fake_device* d = (fake_device*)ctx;
  if (stream != d->stream) return 1;
  d->stats.copies_from_host++;
  d->stats.bytes_from_host += bytes;
  fake_op* op = fake_new(1, dst, NULL, bytes);
  op->owned_src = malloc(bytes ? bytes : 1); /* the host may reuse src at once */
  memcpy(op->owned_src, src, bytes);
  fake_push(d, op);
  return 0;
}
static int fake_copy(void* ctx, void* stream, void* dst, const void* src, size_t bytes) {
  fake_device* d = (fake_device*)ctx;
  if (stream != d->stream) return 1;
  fake_push(d, fake_new(1, dst, src, bytes));
  return 0;
}
static int fake_zero(void* ctx, void* stream, void* dst, size_t bytes) {
  fake_device* d = (fake_device*)ctx;
  if (stream != d->stream) return 1;
  fake_push(d, fake_new(2, dst, NULL, bytes));
  return 0;
}
static int fake_sync(void* ctx, void* stream) {
  fake_device* d = (fake_device*)ctx;
  if (stream != d->stream) return 1;
  d->stats.syncs++;
  return fake_drain(d);
}

/* Per-plan state: weft's CPU kernel for the node, made once when the plan is compiled. */
static int fake_create(const weft_kernel_setup* setup, void** state, size_t* workspace_bytes,
                       char* why, size_t why_size) {
  if (setup->device_context != &g_fake) {
    snprintf(why, why_size, "made for another device's context");
    return 1;
  }
  if (g_fake.host->cpu_kernel_create(setup, state, why, why_size) != 0) return 1;
  *workspace_bytes = 64; /* asked for, to check that weft hands it over */
  g_fake.stats.states_created++;
  g_fake.stats.live_states++;
  return 0;
}
static void fake_destroy(void* state) {
  fake_drain(&g_fake); /* queued calls may still use it */
  g_fake.host->cpu_kernel_destroy(state);
  g_fake.stats.live_states--;
}
static int fake_run(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor* out,
                    int32_t n_out) {
  if (call->stream != g_fake.stream || call->device_context != &g_fake || !call->state ||
      !call->workspace || call->workspace_bytes < 64 || call->n_scalars > 8) {
    call->host->report_error(call, "called without its stream, context, state or workspace");
    return 1;
  }
  fake_op* op = fake_new(0, NULL, NULL, 0);
  op->borrowed = call->state;
  op->call = *call;
  op->call.host_data = NULL; /* the host's error slot does not outlive this call */
  if (call->n_scalars > 0)   /* memcpy from NULL is undefined even for 0 bytes */
    memcpy(op->scalars, call->scalars, sizeof(double) * (size_t)call->n_scalars);
  op->call.scalars = op->scalars;
  op->n_in = n_in;
  op->n_out = n_out;
  op->tensors = (weft_tensor*)malloc(sizeof(weft_tensor) * (size_t)(n_in + n_out + 1));
  if (n_in > 0) memcpy(op->tensors, in, sizeof(weft_tensor) * (size_t)n_in);
  if (n_out > 0) memcpy(op->tensors + n_in, out, sizeof(weft_tensor) * (size_t)n_out);
  g_fake.stats.launches++;
  fake_push(&g_fake, op);
  return 0;
}

/* Every op the dcgan and mlp_gan graphs train and sample with, and the optimizers. */
/* clang-format off */
static const char* const kFakeOps[] = {
    "add", "sub", "mul", "div", "neg", "sum", "mean", "broadcast_like", "matmul", "matmul_add", "linear",
    "linear_act", "conv2d", "conv2d_backward_data", "conv2d_backward_weights",
    "conv_transpose2d", "batch_norm", "batch_norm_act", "batch_norm_backward", "relu",
    "relu_backward", "leaky_relu", "leaky_relu_backward", "tanh", "tanh_backward", "sigmoid",
    "softplus", "sgd_update", "adam_update", "rmsprop_update", "sum_squares", "noise_normal",
    "noise_uniform", "pixel_norm", "pixel_norm_backward", "minibatch_stddev"};
/* clang-format on */

/* ---- registration -------------------------------------------------------------------- */

static const weft_plugin_info kInfo = {WEFT_PLUGIN_ABI_VERSION, "weft-example", "1.0"};

const weft_plugin_info* weft_plugin_describe(void) { return &kInfo; }

int weft_plugin_init(const weft_host* host, weft_registrar* reg) {
  const char* eps_attr =
      "[{\"name\": \"eps\", \"type\": \"float\", \"default\": 1e-8, \"doc\": \"added under the "
      "square root\"}]";
  weft_op_def mbstd = {
      sizeof(weft_op_def),
      "minibatch_stddev",
      "appends the mean over (C,H,W) of the batch standard deviation as one more channel (a remedy "
      "for mode collapse)",
      "x",
      "y",
      eps_attr,
      mbstd_shape,
      kMbstdGradient,
      "{\"cases\": [[[4, 2, 3, 3]], [[3, 1, 2, 4]]], \"attrs\": {\"eps\": 1e-3}, \"order\": 2}"};
  weft_op_def pn = {sizeof(weft_op_def),
                    "pixel_norm",
                    "x / sqrt(mean over channels of x^2 + eps) at each position",
                    "x",
                    "y",
                    eps_attr,
                    same_shape,
                    "{\"nodes\": [{\"id\": \"g\", \"op\": \"pixel_norm_backward\", \"in\": "
                    "[\"dy\", \"x\"], \"eps\": \"$eps\"}],"
                    " \"grads\": {\"x\": \"g\"}}",
                    "{\"cases\": [[[3, 4, 2, 2]], [[5, 3]]], \"attrs\": {\"eps\": 1e-3}}"};
  weft_op_def pnb = {sizeof(weft_op_def),
                     "pixel_norm_backward",
                     "dx of pixel_norm from dy and x",
                     "dy,x",
                     "dx",
                     eps_attr,
                     backward_shape,
                     NULL,
                     "{\"cases\": [[[3, 4, 2, 2], [3, 4, 2, 2]]], \"attrs\": {\"eps\": 1e-3}}"};
  /* pixel_norm_backward must exist before pixel_norm's gradient names it. */
  if (reg->add_op(reg, &mbstd) || reg->add_op(reg, &pnb) || reg->add_op(reg, &pn)) return 1;
#define CPU_KERNEL(op, dtype, fn) \
  { sizeof(weft_kernel_def), op, WEFT_DEVICE_CPU, dtype, "cpu", fn, NULL, NULL }
  const weft_kernel_def kernels[] = {
      CPU_KERNEL("minibatch_stddev", WEFT_F32, mbstd_f32),
      CPU_KERNEL("minibatch_stddev", WEFT_F64, mbstd_f64),
      CPU_KERNEL("pixel_norm", WEFT_F32, pixel_norm_f32),
      CPU_KERNEL("pixel_norm", WEFT_F64, pixel_norm_f64),
      CPU_KERNEL("pixel_norm_backward", WEFT_F32, pixel_norm_backward_f32),
      CPU_KERNEL("pixel_norm_backward", WEFT_F64, pixel_norm_backward_f64),
  };
#undef CPU_KERNEL
  for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; ++i)
    if (reg->add_kernel(reg, &kernels[i])) return 1;

  g_fake.host = host;
  const weft_device_def fake = {
      sizeof(weft_device_def), "host-fake",  &g_fake,        fake_available, fake_alloc, fake_free,
      fake_stream_create,      fake_to_host, fake_from_host, fake_copy,      fake_zero,  fake_sync};
  int32_t kind = 0;
  if (reg->add_device(reg, &fake, &kind)) return 1;
  for (size_t i = 0; i < sizeof kFakeOps / sizeof kFakeOps[0]; ++i) {
    const weft_kernel_def k = {sizeof(weft_kernel_def),
                               kFakeOps[i],
                               kind,
                               WEFT_F32,
                               "host-fake",
                               fake_run,
                               fake_create,
                               fake_destroy};
    if (reg->add_kernel(reg, &k)) return 1;
  }
  return 0;
}
