/* Plugins that weft must refuse (or, for kernel_error, whose kernel fails at run time),
 * one per BROKEN_* definition. Built by tests/CMakeLists.txt. */
#include <stdio.h>
#include <string.h>

#include "weft_plugin.h"

static int copy_shape(const weft_shape_call* c) {
  c->out_ndim[0] = c->in_ndim[0];
  memcpy(c->out_shape[0], c->in_shape[0], sizeof(int64_t) * WEFT_MAX_DIMS);
  return 0;
}

static int fails(const weft_call* call, const weft_tensor* in, int32_t n_in, weft_tensor* out,
                 int32_t n_out) {
  (void)in, (void)n_in, (void)out, (void)n_out;
  call->host->report_error(call, "the kernel was asked to fail");
  return 1;
}

#ifdef BROKEN_not_a_plugin
int some_function(void) { return 42; }
#else
static const weft_plugin_info kInfo = {
#ifdef BROKEN_abi
    1, /* a plugin built against the first version of the header */
#else
    WEFT_PLUGIN_ABI_VERSION,
#endif
#ifdef BROKEN_kernel_error
    /* It stays loaded once a test has loaded it: its name must not turn away the others. */
    "weft-broken-kernel-error",
#else
    "weft-broken",
#endif
    "0"};

const weft_plugin_info* weft_plugin_describe(void) { return &kInfo; }

int weft_plugin_init(const weft_host* host, weft_registrar* reg) {
  (void)host;
#if defined(BROKEN_duplicate)
  weft_op_def op = {
      sizeof(weft_op_def), "relu", "a second relu", "x", "y", NULL, copy_shape, NULL, NULL};
#elif defined(BROKEN_schema)
  weft_op_def op = {sizeof(weft_op_def),
                    "broken_schema",
                    "",
                    "x",
                    "y",
                    "[{\"name\": \"z\", \"type\": \"complex\"}]",
                    copy_shape,
                    NULL,
                    NULL};
#elif defined(BROKEN_gradient)
  weft_op_def op = {sizeof(weft_op_def),
                    "broken_gradient",
                    "",
                    "x",
                    "y",
                    NULL,
                    copy_shape,
                    "{\"nodes\": [{\"id\": \"g\", \"op\": \"no_such_op\", \"in\": [\"dy\"]}], "
                    "\"grads\": {\"x\": \"g\"}}",
                    NULL};
#elif defined(BROKEN_partial)
  weft_op_def ok = {sizeof(weft_op_def),
                    "partial_ok",
                    "registered before the plugin is refused",
                    "x",
                    "y",
                    NULL,
                    copy_shape,
                    NULL,
                    NULL};
  if (reg->add_op(reg, &ok)) return 1;
  weft_op_def op = {sizeof(weft_op_def), "Partial Bad", "", "x", "y", NULL, copy_shape, NULL, NULL};
#elif defined(BROKEN_size)
  /* A weft_op_def shorter than this ABI's: a plugin compiled against another header. */
  weft_op_def op = {8, "short_struct", "", "x", "y", NULL, copy_shape, NULL, NULL};
#else /* BROKEN_kernel_error: loads, but its kernel fails */
  weft_op_def op = {sizeof(weft_op_def),
                    "always_fails",
                    "fails when run",
                    "x",
                    "y",
                    NULL,
                    copy_shape,
                    NULL,
                    NULL};
#endif
  if (reg->add_op(reg, &op)) return 1;
#ifdef BROKEN_kernel_error
  weft_kernel_def k = {
      sizeof(weft_kernel_def), "always_fails", WEFT_DEVICE_CPU, WEFT_F32, "cpu", fails, NULL, NULL};
  if (reg->add_kernel(reg, &k)) return 1;
#else
  (void)fails;
#endif
  return 0;
}
#endif
