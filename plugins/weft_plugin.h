/* weft_plugin.h: the C interface between weft and its plugins.
 *
 * A plugin is a shared library exporting two functions:
 *
 *   const weft_plugin_info* weft_plugin_describe(void);
 *   int weft_plugin_init(const weft_host* host, weft_registrar* reg);
 *
 * weft calls weft_plugin_describe first and refuses the library unless its abi_version
 * equals the host's WEFT_PLUGIN_ABI_VERSION. weft_plugin_init then registers ops, kernels
 * and devices through `reg` and returns 0. Registration is all or nothing: if init
 * returns non-zero or any registration is refused, nothing of the plugin stays registered.
 *
 * Only C types cross this boundary. Strings are UTF-8 and NUL-terminated; weft copies
 * every string and table it is given during init, so they need not outlive the call.
 */
#ifndef WEFT_PLUGIN_H
#define WEFT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_PLUGIN_ABI_VERSION 2
#define WEFT_MAX_DIMS 8

#if defined(__GNUC__)
#define WEFT_EXPORT __attribute__((visibility("default")))
#else
#define WEFT_EXPORT
#endif

/* Every struct a plugin fills starts with `size`, set to sizeof the struct as the plugin
 * was compiled: fields added at the end of a struct later leave older plugins working
 * (weft reads only what `size` covers). Structs weft fills carry a size too, so that a
 * plugin can tell whether a field it wants exists. */

typedef enum weft_dtype { WEFT_F32 = 0, WEFT_F64 = 1 } weft_dtype;

/* The CPU is device kind 0; weft_registrar.add_device hands out the others. */
#define WEFT_DEVICE_CPU 0

/* A tensor as a kernel sees it: concrete shape, dense row-major data on `device`. */
typedef struct weft_tensor {
  weft_dtype dtype;
  int32_t device;
  int32_t ndim;
  int64_t shape[WEFT_MAX_DIMS];
  void* data;
} weft_tensor;

struct weft_call;
struct weft_kernel_setup;

/* What the host offers a plugin, valid for the life of the process. */
typedef struct weft_host {
  uint32_t abi_version;
  size_t size;
  void* (*alloc)(size_t bytes); /* 64-byte aligned host memory, zeroed */
  void (*free)(void* p);
  void (*log)(const char* plugin, const char* message);
  /* From inside a kernel: the reason it is about to return non-zero. */
  void (*report_error)(const struct weft_call* call, const char* message);
  /* weft's own CPU kernel for a node, for a device whose memory the host can address
   * (host memory behind a device interface, unified memory): made from the same setup a
   * kernel's `create` gets (the device field is ignored), run on the pointers it is
   * given, destroyed with the plan. Returns 0, or non-zero with the reason in `why`. */
  int (*cpu_kernel_create)(const struct weft_kernel_setup* setup, void** kernel, char* why,
                           size_t why_size);
  int (*cpu_kernel_run)(void* kernel, const struct weft_call* call, const weft_tensor* in,
                        int32_t n_in, weft_tensor* out, int32_t n_out);
  void (*cpu_kernel_destroy)(void* kernel);
} weft_host;

/* What a kernel's `create` gets when a plan is compiled: the node, concrete shapes, and
 * the device it will run on. Pointers are valid during the call only. */
typedef struct weft_kernel_setup {
  size_t size;
  const char* op;
  const char* node;
  const char* attrs; /* the node's attributes as a JSON object, defaults filled */
  weft_dtype dtype;
  int32_t device;
  void* device_context; /* the device's `context` (NULL on the CPU) */
  int32_t n_in, n_out;
  const int32_t* in_ndim;
  const int64_t (*in_shape)[WEFT_MAX_DIMS];
  const int32_t* out_ndim;
  const int64_t (*out_shape)[WEFT_MAX_DIMS];
} weft_kernel_setup;

/* Passed to each kernel run. */
typedef struct weft_call {
  size_t size;
  const weft_host* host;
  void* host_data;   /* the host's own; do not touch */
  const char* attrs; /* the node's attributes as a JSON object, defaults filled */
  /* For kernels that draw random numbers: every draw is a function of these four, and of
   * the element's index in the whole batch: this process computes shard `shard` of equal
   * shards of the batch (its rank under mpirun), so element i of its tensor of n elements
   * is element shard * n + i of the stream. */
  uint64_t seed, step, phase, node_key, shard;
  int32_t training;     /* 1 while training, 0 in inference (sample, encode) */
  void* state;          /* what the kernel's `create` made for this node, or NULL */
  void* device_context; /* the device's `context` (NULL on the CPU) */
  void* stream;         /* the device's stream to launch on (NULL on the CPU) */
  void* workspace;      /* `workspace_bytes` from `create`, on the kernel's device */
  size_t workspace_bytes;
  /* Values that change from call to call, passed by value like a launch's arguments (the
   * optimizers' step sizes); the op's documentation says what each is. */
  const double* scalars;
  int32_t n_scalars;
} weft_call;

/* Returns 0 on success; otherwise calls call->host->report_error and returns non-zero.
 * On a device with a stream the kernel may return before its work is done: weft waits
 * (the device's sync) only where the host reads device memory. */
typedef int (*weft_kernel_fn)(const weft_call* call, const weft_tensor* in, int32_t n_in,
                              weft_tensor* out, int32_t n_out);

/* Called once per node when a plan is compiled, with its concrete shapes: make what every
 * run of the node reuses (descriptors, a chosen algorithm) and store it in *state; ask for
 * a workspace by setting *workspace_bytes (weft allocates it on the device, once). Return
 * 0, or decline the node with a reason in `why` and non-zero: weft then tries the next
 * kernel for the op (and says why with WEFT_VERBOSE=dispatch). */
typedef int (*weft_kernel_create_fn)(const weft_kernel_setup* setup, void** state,
                                     size_t* workspace_bytes, char* why, size_t why_size);
typedef void (*weft_kernel_destroy_fn)(void* state); /* when the plan goes */

/* A shape rule. Shapes are symbolic in the batch: a dimension d >= 0 is d, a dimension
 * d < 0 is -d times the batch size B (so -1 is B, -2 is 2B). Fill out_ndim and out_shape
 * for each output and return 0, or write a message into `error` and return non-zero. */
typedef struct weft_shape_call {
  const char* attrs;
  int32_t n_in;
  const int32_t* in_ndim;
  const int64_t (*in_shape)[WEFT_MAX_DIMS];
  int32_t n_out;
  int32_t* out_ndim;
  int64_t (*out_shape)[WEFT_MAX_DIMS];
  char* error;
  size_t error_size;
} weft_shape_call;
typedef int (*weft_shape_fn)(const weft_shape_call* call);

/* An op. Names are weft's: snake_case, unique across weft and every plugin.
 *
 * attrs: a JSON list of {"name", "type", "default", "doc"}; type is one of "int",
 *   "float", "bool", "string", "ints"; an attribute without "default" is required.
 * gradient: NULL (the op cannot be differentiated) or a JSON object in weft's node
 *   syntax, built when weft differentiates a node of the op:
 *     {"nodes": [{"id": "a", "op": "mul", "in": ["dy", "x"]}, ...],
 *      "grads": {"x": "a"}}
 *   Node inputs name the op's inputs and outputs by their names, "d<output>" for the
 *   gradient flowing into an output, earlier node ids, or numbers. An attribute value
 *   "$name" stands for the op's attribute `name`. "grads" maps input names to ids; inputs
 *   it leaves out get no gradient. The subgraph's ops must exist when the plugin loads
 *   (weft's, or this plugin's own registered before). A gradient made of differentiable
 *   ops makes the op differentiable again.
 * test: NULL or a JSON object for `weft gradcheck` and the op sweep:
 *   {"cases": [[[2, 3, 4, 4]]], "attrs": {...}, "low": -2, "high": 2, "order": 2}
 */
typedef struct weft_op_def {
  size_t size;
  const char* name;
  const char* doc;
  const char* inputs;  /* comma-separated names, e.g. "dy,x" */
  const char* outputs; /* comma-separated names */
  const char* attrs;   /* JSON list, or NULL for none */
  weft_shape_fn shape;
  const char* gradient;
  const char* test;
} weft_op_def;

/* A kernel for one (op, device, dtype). create and destroy may be NULL. */
typedef struct weft_kernel_def {
  size_t size;
  const char* op;
  int32_t device;
  weft_dtype dtype;
  const char* name; /* shown by `weft ops` and WEFT_VERBOSE=dispatch */
  weft_kernel_fn run;
  weft_kernel_create_fn create;
  weft_kernel_destroy_fn destroy;
} weft_kernel_def;

/* A device: memory, one stream, copies. Every function gets the device's `context`.
 * Those returning int return 0 on success. Copies and zeroing are queued on `stream` and
 * may return before they are done, except that copy_from_host must have read `host_src`
 * when it returns (weft reuses that buffer at once). weft calls sync before it reads host
 * memory that a copy_to_host wrote. */
typedef struct weft_device_def {
  size_t size;
  const char* name;
  void* context;
  /* 0 if the device can be used; otherwise the reason in `why` (no driver, no device):
   * weft refuses --device with it. The plugin still loads. */
  int (*available)(void* context, char* why, size_t why_size);
  void* (*alloc)(void* context, size_t bytes); /* NULL when out of memory */
  void (*free)(void* context, void* p);
  /* The stream every call on the device uses, made when weft first needs it and kept for
   * the life of the process; NULL from it is an error. */
  void* (*stream_create)(void* context);
  int (*copy_to_host)(void* context, void* stream, void* host_dst, const void* device_src,
                      size_t bytes);
  int (*copy_from_host)(void* context, void* stream, void* device_dst, const void* host_src,
                        size_t bytes);
  int (*copy)(void* context, void* stream, void* device_dst, const void* device_src, size_t bytes);
  int (*zero)(void* context, void* stream, void* device_dst, size_t bytes);
  int (*sync)(void* context, void* stream);
} weft_device_def;

/* Handed to weft_plugin_init. Each call returns 0, or non-zero when refused (the reason
 * is reported to the user; init should return non-zero then). */
typedef struct weft_registrar {
  void* host_data;
  int (*add_op)(struct weft_registrar* reg, const weft_op_def* op);
  int (*add_kernel)(struct weft_registrar* reg, const weft_kernel_def* kernel);
  /* Stores the new device's kind in *kind, for kernel registrations. */
  int (*add_device)(struct weft_registrar* reg, const weft_device_def* device, int32_t* kind);
} weft_registrar;

/* abi_version comes first (not a size) in every version, so that weft can refuse a plugin
 * built for another version before it reads anything else. */
typedef struct weft_plugin_info {
  uint32_t abi_version; /* WEFT_PLUGIN_ABI_VERSION as the plugin was compiled */
  const char* name;     /* what graphs name in "requires", e.g. "weft-example" */
  const char* version;
} weft_plugin_info;

WEFT_EXPORT const weft_plugin_info* weft_plugin_describe(void);
WEFT_EXPORT int weft_plugin_init(const weft_host* host, weft_registrar* reg);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_PLUGIN_H */
