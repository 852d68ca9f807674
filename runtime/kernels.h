// Helpers for writing kernels: plain reference kernels (generic over f32 and f64, written
// for clarity, never for speed) and the glue to oneDNN primitives (one CPU engine, a
// stream per thread, memory descriptors from shapes).
#pragma once

#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <utility>

#include "runtime/op.h"

namespace weft {

using RefFn = std::function<void(const KernelInfo&, const KernelArgs&)>;

// A kernel calling `f` with the plan-time info.
KernelMaker fn_kernel(RefFn f);

// Reference kernels for both dtypes from one generic lambda
// [](auto t, const KernelInfo& info, const KernelArgs& a) { using T = decltype(t); ... }.
template <class G>
std::vector<KernelEntry> reference(G g) {
  return {{0, DType::f32, "reference",
           fn_kernel([g](const KernelInfo& i, const KernelArgs& a) { g(float{}, i, a); }), 0},
          {0, DType::f64, "reference",
           fn_kernel([g](const KernelInfo& i, const KernelArgs& a) { g(double{}, i, a); }), 0}};
}

template <class T>
const T* in_ptr(const KernelArgs& a, int i) {
  return a.in[i]->data<T>();
}
template <class T>
T* out_ptr(const KernelArgs& a, int i) {
  return a.out[i]->data<T>();
}

// Index arithmetic for numpy broadcasting: for an output index, the offset into an input
// of shape `src` broadcast to `dst`.
struct Broadcast {
  Broadcast(const Dims& src, const Dims& dst);
  int64_t offset(int64_t dst_index) const;
  // Walks the output row by row (a row is the last axis): f(dst_row_start, src_offset,
  // src_step, row_length). One call per row, no division per element.
  template <class F>
  void rows(F f) const {
    const int r = int(dst_.size());
    if (r == 0) return f(int64_t(0), int64_t(0), int64_t(0), int64_t(1));
    const int64_t len = dst_[r - 1], step = stride_[r - 1], n = numel(dst_);
    int64_t src = 0;
    for (int64_t row = 0; row < n; row += len) {
      f(row, src, step, len);
      for (int a = r - 2; a >= 0; --a) {  // odometer over the leading axes
        src += stride_[a];
        if (++pos_[a] < dst_[a]) break;
        src -= stride_[a] * dst_[a];
        pos_[a] = 0;
      }
    }
  }
  bool identity;

 private:
  Dims dst_;
  std::vector<int64_t> stride_;  // per dst axis; 0 where broadcast
  mutable std::vector<int64_t> pos_;
};

// oneDNN glue.
dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();                     // one per thread
dnnl::memory::desc md(const Dims& d, DType t);  // dense row-major
dnnl::memory::desc md_strided(const Dims& d, const Dims& strides, DType t);
dnnl::memory::data_type dnnl_type(DType t);
// The same descriptor with bf16 elements where `bf16` is set (strides count elements, so
// they stay): a primitive's inputs under --precision bf16. A LayoutKernel's reorder from
// weft's f32 tensor to it rounds the values.
dnnl::memory::desc maybe_bf16(dnnl::memory::desc d, bool bf16);
// Whether oneDNN runs bf16 matrix products natively on this CPU (AVX-512 BF16 or AMX), and
// the instruction set it found.
bool cpu_has_bf16(std::string& isa);

// A oneDNN primitive that may want other memory formats than weft's plain row-major
// tensors (blocked layouts such as nChw16c): for each argument whose format differs it owns
// a buffer in the wanted format and a reorder, made when the plan is compiled, and runs
// them around the primitive.
class LayoutKernel : public Kernel {
 public:
  struct Arg {
    int id;                     // DNNL_ARG_*
    dnnl::memory::desc plain;   // weft's tensor
    dnnl::memory::desc wanted;  // what the primitive takes
    int bind;                   // +1+i input i, -1-i output i
  };
  LayoutKernel(dnnl::primitive p, const std::vector<Arg>& args);
  void run(const KernelArgs& a) override;

 private:
  struct Exec {
    dnnl::primitive p;
    std::vector<dnnl_exec_arg_t> args;
    void run() const;
  };
  std::vector<std::pair<dnnl::memory, int>> plain_;  // memory over weft's tensor, binding
  std::vector<dnnl::memory> owned_;                  // buffers in the wanted formats
  std::vector<Exec> before_, after_;                 // reorders in, reorders out
  Exec main_;
};

// A oneDNN primitive on weft's plain tensors: a LayoutKernel whose formats already match.
class OnednnKernel : public LayoutKernel {
 public:
  // args: oneDNN argument id -> descriptor; bind: argument id -> +1+i input i, -1-i output i
  OnednnKernel(dnnl::primitive p, const std::vector<std::pair<int, dnnl::memory::desc>>& args,
               const std::vector<std::pair<int, int>>& bind);
};

// Catches oneDNN's refusal to build a primitive and turns it into a why_not reason.
template <class F>
std::unique_ptr<Kernel> try_onednn(std::string& why_not, F f) {
  try {
    return f();
  } catch (const dnnl::error& e) {
    why_not = e.what();
    return nullptr;
  }
}

}  // namespace weft
