#include "runtime/kernels.h"

namespace weft {

namespace {
class FnKernel : public Kernel {
 public:
  FnKernel(KernelInfo info, RefFn f) : info_(std::move(info)), f_(std::move(f)) {}
  void run(const KernelArgs& a) override { f_(info_, a); }

 private:
  KernelInfo info_;
  RefFn f_;
};
}  // namespace

KernelMaker fn_kernel(RefFn f) {
  return [f](const KernelInfo& info, std::string&) -> std::unique_ptr<Kernel> {
    return std::make_unique<FnKernel>(info, f);
  };
}

Broadcast::Broadcast(const Dims& src, const Dims& dst) : identity(src == dst), dst_(dst) {
  stride_.assign(dst.size(), 0);
  pos_.assign(dst.size(), 0);
  int64_t s = 1;
  for (int i = int(src.size()) - 1, j = int(dst.size()) - 1; i >= 0; --i, --j) {
    stride_[j] = src[i] == 1 && dst[j] != 1 ? 0 : s;
    s *= src[i];
  }
}

int64_t Broadcast::offset(int64_t idx) const {
  if (identity) return idx;
  int64_t off = 0;
  for (int j = int(dst_.size()) - 1; j >= 0; --j) {
    int64_t c = idx % dst_[j];
    idx /= dst_[j];
    off += c * stride_[j];
  }
  return off;
}

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& cpu_stream() {
  thread_local dnnl::stream s(cpu_engine());
  return s;
}

dnnl::memory::data_type dnnl_type(DType t) {
  // oneDNN 2.6 has no f64: f64 always runs on the reference kernels.
  WEFT_ASSERT(t == DType::f32, "oneDNN kernels are f32 only");
  return dnnl::memory::data_type::f32;
}

dnnl::memory::desc maybe_bf16(dnnl::memory::desc d, bool bf16) {
  if (bf16) d.data.data_type = dnnl_bf16;
  return d;
}

bool cpu_has_bf16(std::string& isa) {
  const auto have = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto need = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  static const std::pair<dnnl::cpu_isa, const char*> names[] = {
      {dnnl::cpu_isa::avx512_core_amx, "AVX-512 with AMX"},
      {dnnl::cpu_isa::avx512_core_bf16, "AVX-512 BF16"},
      {dnnl::cpu_isa::avx512_core_vnni, "AVX-512 VNNI"},
      {dnnl::cpu_isa::avx512_core, "AVX-512"},
      {dnnl::cpu_isa::avx2, "AVX2"}};
  isa = "below AVX2";
  for (auto& [i, name] : names)
    if ((have & static_cast<unsigned>(i)) == static_cast<unsigned>(i)) {
      isa = name;
      break;
    }
  return (have & need) == need;
}

dnnl::memory::desc md(const Dims& d, DType t) {
  Dims strides(d.size(), 1);
  for (int i = int(d.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * d[i + 1];
  return md_strided(d, strides, t);
}

dnnl::memory::desc md_strided(const Dims& d, const Dims& strides, DType t) {
  if (d.empty()) return dnnl::memory::desc({1}, dnnl_type(t), dnnl::memory::dims{1});
  return dnnl::memory::desc(dnnl::memory::dims(d.begin(), d.end()), dnnl_type(t),
                            dnnl::memory::dims(strides.begin(), strides.end()));
}

void LayoutKernel::Exec::run() const {
  dnnl_status_t st =
      dnnl_primitive_execute(p.get(), cpu_stream().get(), int(args.size()), args.data());
  if (st != dnnl_success)
    throw std::runtime_error("oneDNN failed to execute a primitive (status " +
                             std::to_string(int(st)) + ")");
}

LayoutKernel::LayoutKernel(dnnl::primitive p, const std::vector<Arg>& args) {
  main_.p = std::move(p);
  for (const Arg& a : args) {
    dnnl::memory user(a.plain, cpu_engine(), DNNL_MEMORY_NONE);
    plain_.push_back({user, a.bind});
    if (a.plain == a.wanted) {
      main_.args.push_back({a.id, user.get()});
      continue;
    }
    dnnl::memory mine(a.wanted, cpu_engine());  // allocated now, once
    owned_.push_back(mine);
    main_.args.push_back({a.id, mine.get()});
    if (a.bind > 0)
      before_.push_back(
          {dnnl::reorder(user, mine), {{DNNL_ARG_FROM, user.get()}, {DNNL_ARG_TO, mine.get()}}});
    else
      after_.push_back(
          {dnnl::reorder(mine, user), {{DNNL_ARG_FROM, mine.get()}, {DNNL_ARG_TO, user.get()}}});
  }
}

void LayoutKernel::run(const KernelArgs& a) {
  for (auto& [m, which] : plain_)
    m.set_data_handle(which > 0 ? a.in[which - 1]->raw() : a.out[-which - 1]->raw());
  for (auto& e : before_) e.run();
  main_.run();
  for (auto& e : after_) e.run();
}

static std::vector<LayoutKernel::Arg> plain_args(
    const std::vector<std::pair<int, dnnl::memory::desc>>& args,
    const std::vector<std::pair<int, int>>& bind) {
  std::vector<LayoutKernel::Arg> out;
  for (auto& [id, which] : bind)
    for (auto& [aid, d] : args)
      if (aid == id) out.push_back({id, d, d, which});
  WEFT_ASSERT(out.size() == bind.size(), "a bound oneDNN argument has no descriptor");
  return out;
}

OnednnKernel::OnednnKernel(dnnl::primitive p,
                           const std::vector<std::pair<int, dnnl::memory::desc>>& args,
                           const std::vector<std::pair<int, int>>& bind)
    : LayoutKernel(std::move(p), plain_args(args, bind)) {}

}  // namespace weft
