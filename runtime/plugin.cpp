#include "runtime/plugin.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "runtime/autodiff.h"
#include "runtime/device.h"
#include "runtime/kernels.h"
#include "runtime/plan.h"

namespace weft {

namespace {

std::vector<LoadedPlugin>& plugin_list() {
  static std::vector<LoadedPlugin> v;
  return v;
}
std::vector<DeviceDef>& device_list() {
  static std::vector<DeviceDef> d;
  return d;
}

// --- the host table -------------------------------------------------------------------

void* host_alloc(size_t n) {
  size_t rounded = (n + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (p) std::memset(p, 0, rounded ? rounded : 64);
  return p;
}
void host_free(void* p) { std::free(p); }
void host_log(const char* plugin, const char* message) {
  fmt::print(stderr, "[{}] {}\n", plugin ? plugin : "plugin", message ? message : "");
}
void host_report(const weft_call* call, const char* message) {
  if (call && call->host_data)
    *static_cast<std::string*>(call->host_data) = message ? message : "(no message)";
}
// --- weft's CPU kernels, lent to a device whose memory the host can address ----------

// A CPU kernel made for a node, run on whatever pointers each call brings: its tensors
// are made on the first call (their dtypes come with the call) over storage it does not
// own, and each call points them at the call's memory.
struct Borrowed {
  std::unique_ptr<Kernel> kernel;
  std::vector<std::shared_ptr<Storage>> in_storage, out_storage;
  std::vector<Tensor> in, out;
  KernelInfo info;
};

void write_why(char* why, size_t size, const std::string& text) {
  if (why && size) std::snprintf(why, size, "%s", text.c_str());
}

KernelInfo info_from_setup(const weft_kernel_setup& s) {
  KernelInfo info;
  info.node = s.node ? s.node : "";
  info.attrs = s.attrs ? json::parse(s.attrs) : json::object();
  info.dtype = s.dtype == WEFT_F64 ? DType::f64 : DType::f32;
  for (int i = 0; i < s.n_in; ++i)
    info.in.emplace_back(s.in_shape[i], s.in_shape[i] + s.in_ndim[i]);
  for (int i = 0; i < s.n_out; ++i)
    info.out.emplace_back(s.out_shape[i], s.out_shape[i] + s.out_ndim[i]);
  return info;
}

int cpu_kernel_create(const weft_kernel_setup* s, void** kernel, char* why, size_t why_size) {
  try {
    const OpDef* def = s && s->op ? Registry::get().find(s->op) : nullptr;
    if (!def) {
      write_why(why, why_size, fmt::format("no op named '{}'", s && s->op ? s->op : ""));
      return 1;
    }
    auto b = std::make_unique<Borrowed>();
    b->info = info_from_setup(*s);
    std::string name;
    b->kernel = make_kernel(*def, b->info, name, "");
    *kernel = b.release();
    return 0;
  } catch (const std::exception& e) {
    write_why(why, why_size, e.what());
    return 1;
  }
}

void point(std::vector<std::shared_ptr<Storage>>& storage, std::vector<Tensor>& tensors,
           const weft_tensor* t, int32_t n) {
  if (storage.empty())
    for (int32_t i = 0; i < n; ++i) {
      const DType dt = t[i].dtype == WEFT_F64 ? DType::f64 : DType::f32;
      Dims shape(t[i].shape, t[i].shape + t[i].ndim);
      storage.push_back(std::make_shared<Storage>(nullptr, size_t(numel(shape)) * dtype_size(dt),
                                                  Device::cpu(), nullptr));
      tensors.push_back(Tensor::over(storage.back(), dt, shape));
    }
  for (int32_t i = 0; i < n; ++i) storage[size_t(i)]->data = t[i].data;
}

int cpu_kernel_run(void* kernel, const weft_call* call, const weft_tensor* in, int32_t n_in,
                   weft_tensor* out, int32_t n_out) {
  auto* b = static_cast<Borrowed*>(kernel);
  try {
    WEFT_ASSERT(size_t(n_in) == b->info.in.size() && size_t(n_out) == b->info.out.size(),
                "a lent CPU kernel called with other tensors than it was made for");
    point(b->in_storage, b->in, in, n_in);
    point(b->out_storage, b->out, out, n_out);
    RunContext ctx{call->seed, call->step, call->phase, call->training != 0, call->shard};
    KernelArgs a;
    for (auto& t : b->in) a.in.push_back(&t);
    for (auto& t : b->out) a.out.push_back(&t);
    a.ctx = &ctx;
    a.node_key = call->node_key;
    a.scalars = call->scalars;
    a.n_scalars = call->n_scalars;
    b->kernel->run(a);
    return 0;
  } catch (const std::exception& e) {
    host_report(call, e.what());
    return 1;
  }
}

void cpu_kernel_destroy(void* kernel) { delete static_cast<Borrowed*>(kernel); }

const weft_host kHost = {
    WEFT_PLUGIN_ABI_VERSION, sizeof(weft_host), host_alloc,        host_free, host_log, host_report,
    cpu_kernel_create,       cpu_kernel_run,    cpu_kernel_destroy};

// --- kernels --------------------------------------------------------------------------

weft_tensor describe(const Dims& d, DType dtype, Device device) {
  weft_tensor t{};
  t.dtype = dtype == DType::f32 ? WEFT_F32 : WEFT_F64;
  t.device = device.kind;
  t.ndim = int32_t(d.size());
  for (size_t i = 0; i < d.size(); ++i) t.shape[i] = d[i];
  return t;
}

// A plugin's kernel for one node: what its `create` made when the plan was compiled (the
// state, a workspace on the kernel's device), released with the plan.
class PluginKernel : public Kernel {
 public:
  PluginKernel(const KernelInfo& info, const weft_kernel_def& def, std::string label, void* state,
               size_t workspace_bytes)
      : fn_(def.run),
        destroy_(def.destroy),
        state_(state),
        attrs_(info.attrs.dump()),
        label_(std::move(label)),
        node_(info.node),
        context_(device_context(info.device)),
        stream_(device_stream(info.device)) {
    for (auto& d : info.in) in_.push_back(describe(d, info.dtype, info.device));
    for (auto& d : info.out) out_.push_back(describe(d, info.dtype, info.device));
    if (workspace_bytes)
      workspace_ = zeros_on(info.device, DType::f32, {int64_t((workspace_bytes + 3) / 4)});
  }
  ~PluginKernel() override {
    if (destroy_ && state_) destroy_(state_);
  }
  void run(const KernelArgs& a) override {
    for (size_t i = 0; i < in_.size(); ++i) {
      in_[i].data = a.in[i]->raw();
      in_[i].dtype = a.in[i]->dtype() == DType::f32 ? WEFT_F32 : WEFT_F64;
    }
    for (size_t i = 0; i < out_.size(); ++i) {
      out_[i].data = a.out[i]->raw();
      out_[i].dtype = a.out[i]->dtype() == DType::f32 ? WEFT_F32 : WEFT_F64;
    }
    std::string message;
    weft_call call{};
    call.size = sizeof call;
    call.host = &kHost;
    call.host_data = &message;
    call.attrs = attrs_.c_str();
    call.seed = a.ctx->seed;
    call.step = a.ctx->step;
    call.phase = a.ctx->phase;
    call.node_key = a.node_key;
    call.shard = a.ctx->shard;
    call.training = a.ctx->training ? 1 : 0;
    call.state = state_;
    call.device_context = context_;
    call.stream = stream_;
    call.workspace = workspace_.raw();
    call.workspace_bytes = workspace_.bytes();
    call.scalars = a.scalars;
    call.n_scalars = a.n_scalars;
    if (fn_(&call, in_.data(), int32_t(in_.size()), out_.data(), int32_t(out_.size())) != 0)
      throw Error(fmt::format("node '{}': {} failed: {}", node_, label_,
                              message.empty() ? "(no message)" : message));
  }

 private:
  weft_kernel_fn fn_;
  weft_kernel_destroy_fn destroy_;
  void* state_;
  std::string attrs_, label_, node_;
  void *context_, *stream_;
  Tensor workspace_;
  std::vector<weft_tensor> in_, out_;
};

// Asks the kernel's `create` (when it has one) to take the node: null and the reason when
// it declines.
std::unique_ptr<Kernel> make_plugin_kernel(const weft_kernel_def& def, const std::string& label,
                                           const KernelInfo& info, std::string& why_not) {
  void* state = nullptr;
  size_t workspace = 0;
  if (def.create) {
    std::vector<int32_t> in_ndim, out_ndim;
    std::vector<std::array<int64_t, WEFT_MAX_DIMS>> in_shape, out_shape;
    for (auto& d : info.in) {
      in_ndim.push_back(int32_t(d.size()));
      in_shape.push_back({});
      std::copy(d.begin(), d.end(), in_shape.back().begin());
    }
    for (auto& d : info.out) {
      out_ndim.push_back(int32_t(d.size()));
      out_shape.push_back({});
      std::copy(d.begin(), d.end(), out_shape.back().begin());
    }
    const std::string attrs = info.attrs.dump();
    weft_kernel_setup setup{};
    setup.size = sizeof setup;
    setup.op = def.op;
    setup.node = info.node.c_str();
    setup.attrs = attrs.c_str();
    setup.dtype = info.dtype == DType::f32 ? WEFT_F32 : WEFT_F64;
    setup.device = info.device.kind;
    setup.device_context = device_context(info.device);
    setup.n_in = int32_t(info.in.size());
    setup.n_out = int32_t(info.out.size());
    setup.in_ndim = in_ndim.data();
    setup.in_shape = reinterpret_cast<const int64_t(*)[WEFT_MAX_DIMS]>(in_shape.data());
    setup.out_ndim = out_ndim.data();
    setup.out_shape = reinterpret_cast<const int64_t(*)[WEFT_MAX_DIMS]>(out_shape.data());
    char why[512] = {0};
    if (def.create(&setup, &state, &workspace, why, sizeof why) != 0) {
      why_not = why[0] ? why : "declined (no reason given)";
      return nullptr;
    }
  }
  return std::make_unique<PluginKernel>(info, def, label, state, workspace);
}

// --- schema, shapes, gradients ----------------------------------------------------------

std::vector<std::string> split_names(const char* s) {
  std::vector<std::string> r;
  if (!s) return r;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ',');) {
    part.erase(0, part.find_first_not_of(' '));
    part.erase(part.find_last_not_of(' ') + 1);
    r.push_back(part);
  }
  return r;
}

bool good_name(const std::string& n) {
  if (n.empty() || !(std::islower(static_cast<unsigned char>(n[0])))) return false;
  for (char c : n)
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '_'))
      return false;
  return true;
}

}  // namespace

// The registrar's state while a plugin's init runs: everything is staged, then committed.
struct Staging {
  std::string path, plugin;
  std::string error;
  std::vector<OpDef> ops;
  std::vector<std::pair<std::string, KernelEntry>> kernels;  // op, kernel
  std::vector<DeviceDef> devices;

  const OpDef* find_op(const std::string& name) const {
    if (const OpDef* d = Registry::get().find(name)) return d;
    for (auto& o : ops)
      if (o.name == name) return &o;
    return nullptr;
  }
  int refuse(const std::string& why) {
    if (error.empty()) error = why;
    return 1;
  }
};

namespace {

Staging* staging(weft_registrar* r) { return static_cast<Staging*>(r->host_data); }

ShapeRule make_shape_rule(weft_shape_fn fn, size_t n_out) {
  return [fn, n_out](const ShapeContext& c) {
    const size_t n_in = c.in.size();
    std::vector<int32_t> in_ndim(n_in), out_ndim(n_out, -1);
    std::vector<std::array<int64_t, WEFT_MAX_DIMS>> in_shape(n_in), out_shape(n_out);
    for (size_t i = 0; i < n_in; ++i) {
      if (c.in[i].size() > WEFT_MAX_DIMS) throw ShapeError("more than 8 dimensions");
      in_ndim[i] = int32_t(c.in[i].size());
      for (size_t k = 0; k < c.in[i].size(); ++k)
        in_shape[i][k] = c.in[i][k].batch ? -c.in[i][k].n : c.in[i][k].n;
    }
    char error[512] = {0};
    std::string attrs = c.attrs.dump();
    weft_shape_call call{attrs.c_str(),
                         int32_t(n_in),
                         in_ndim.data(),
                         reinterpret_cast<const int64_t(*)[WEFT_MAX_DIMS]>(in_shape.data()),
                         int32_t(n_out),
                         out_ndim.data(),
                         reinterpret_cast<int64_t(*)[WEFT_MAX_DIMS]>(out_shape.data()),
                         error,
                         sizeof error};
    if (fn(&call) != 0)
      throw ShapeError(error[0] ? error : "the plugin's shape rule refused the inputs");
    std::vector<Shape> out(n_out);
    for (size_t o = 0; o < n_out; ++o) {
      if (out_ndim[o] < 0 || out_ndim[o] > WEFT_MAX_DIMS)
        throw ShapeError("the plugin's shape rule gave no shape");
      for (int k = 0; k < out_ndim[o]; ++k) {
        int64_t d = out_shape[o][k];
        out[o].push_back(d < 0 ? Dim::B(-d) : Dim(d));
      }
    }
    return out;
  };
}

std::vector<AttrSpec> parse_attrs(const char* text) {
  std::vector<AttrSpec> out;
  if (!text) return out;
  json list = json::parse(text);  // throws on bad JSON; the caller reports it
  if (!list.is_array()) throw std::runtime_error("attrs must be a JSON list");
  static const std::map<std::string, AttrType> types = {{"int", AttrType::Int},
                                                        {"float", AttrType::Float},
                                                        {"bool", AttrType::Bool},
                                                        {"string", AttrType::String},
                                                        {"ints", AttrType::Ints}};
  for (auto& a : list) {
    if (!a.is_object() || !a.contains("name") || !a["name"].is_string() || !a.contains("type") ||
        !a["type"].is_string())
      throw std::runtime_error("each attribute needs a \"name\" and a \"type\"");
    auto t = types.find(a["type"]);
    if (t == types.end())
      throw std::runtime_error(
          fmt::format("attribute '{}' has type {}; expected int, float, bool, string or ints",
                      a["name"].get<std::string>(), a["type"].dump()));
    AttrSpec s{a["name"],          t->second, a.value("default", json()), !a.contains("default"),
               a.value("doc", ""), {}};
    out.push_back(s);
  }
  return out;
}

// Checks a gradient subgraph against the op's names and the registry; returns the reason
// it is refused, or "".
std::string check_gradient(const json& g, const OpDef& d, const Staging& st) {
  if (!g.is_object() || !g.contains("nodes") || !g["nodes"].is_array() || !g.contains("grads") ||
      !g["grads"].is_object())
    return "a gradient is {\"nodes\": [...], \"grads\": {...}}";
  auto find_attr = [&](const std::string& name) -> const AttrSpec* {
    for (auto& a : d.attrs)
      if (a.name == name) return &a;
    return nullptr;
  };
  std::set<std::string> known;
  for (auto& i : d.inputs) known.insert(i.name);
  for (auto& o : d.outputs) known.insert(o), known.insert("d" + o);
  for (auto& n : g["nodes"]) {
    if (!n.is_object() || !n.contains("id") || !n["id"].is_string() || !n.contains("op") ||
        !n["op"].is_string())
      return "each gradient node needs an \"id\" and an \"op\"";
    std::string op = n["op"];
    if (!st.find_op(op))
      return fmt::format("the gradient of op {} names unknown op '{}'", d.name, op);
    const json in = n.value("in", json::array());
    if (!in.is_array())
      return fmt::format("the gradient of op {}: \"in\" of node '{}' is not a list", d.name,
                         n["id"].get<std::string>());
    for (auto& r : in) {
      if (!r.is_string() && !r.is_number())
        return fmt::format("the gradient of op {} has input {}; expected an id or a number", d.name,
                           r.dump());
      if (r.is_number()) continue;
      const std::string ref = r;
      if (ref.rfind('$', 0) == 0) {  // an attribute's value, made a constant
        const AttrSpec* a = find_attr(ref.substr(1));
        if (!a || (a->type != AttrType::Int && a->type != AttrType::Float))
          return fmt::format("the gradient of op {} uses '{}', which is not a number attribute",
                             d.name, ref);
      } else if (!known.count(ref)) {
        return fmt::format("the gradient of op {} uses unknown id '{}'", d.name, ref);
      }
    }
    for (auto& [k, v] : n.items())
      if (k != "id" && k != "op" && k != "in" && v.is_string() &&
          v.get<std::string>().rfind('$', 0) == 0 && !find_attr(v.get<std::string>().substr(1)))
        return fmt::format("the gradient of op {} uses '{}', which is not an attribute", d.name,
                           v.get<std::string>());
    known.insert(n["id"].get<std::string>());
  }
  for (auto& [input, id] : g["grads"].items()) {
    bool is_input = false;
    for (auto& i : d.inputs) is_input = is_input || i.name == input;
    if (!is_input)
      return fmt::format("the gradient of op {} names '{}', which is not an input", d.name, input);
    if (!id.is_string() || !known.count(id.get<std::string>()))
      return fmt::format("the gradient of op {} gives input '{}' an unknown id", d.name, input);
  }
  return "";
}

GradRule make_grad_rule(json g, std::vector<std::string> in_names,
                        std::vector<std::string> out_names) {
  return [g, in_names, out_names](GradContext& c) {
    std::map<std::string, Val> env;
    for (size_t i = 0; i < in_names.size() && int(i) < c.num_inputs(); ++i)
      env[in_names[i]] = c.input(int(i));
    for (size_t k = 0; k < out_names.size(); ++k) {
      env[out_names[k]] = c.output(int(k));
      Val d = c.grad_output(int(k));
      env["d" + out_names[k]] = d ? d : c.op("zeros_like", {c.output(int(k))});
    }
    for (auto& n : g["nodes"]) {
      std::vector<Val> in;
      for (auto& r : n.value("in", json::array())) {
        if (r.is_number())
          in.push_back(c.b.constant(r.get<double>()));
        else if (r.get<std::string>().rfind('$', 0) == 0)  // an attribute's value as a constant
          in.push_back(c.b.constant(c.attrs().at(r.get<std::string>().substr(1)).get<double>()));
        else
          in.push_back(env.at(r.get<std::string>()));
      }
      json attrs = json::object();
      for (auto& [k, v] : n.items()) {
        if (k == "id" || k == "op" || k == "in") continue;
        attrs[k] = v.is_string() && !v.get<std::string>().empty() && v.get<std::string>()[0] == '$'
                       ? c.attrs().at(v.get<std::string>().substr(1))
                       : v;
      }
      env[n["id"]] = c.op(n["op"], in, attrs);
    }
    std::vector<Val> out(in_names.size());
    for (auto& [input, id] : g["grads"].items())
      for (size_t i = 0; i < in_names.size(); ++i)
        if (in_names[i] == input && c.needs(int(i))) out[i] = env.at(id.get<std::string>());
    return out;
  };
}

// An integer in [low, high]; json's own get<int>() of 1e300 would be undefined behaviour.
int64_t whole(const json& v, const std::string& what, int64_t low, int64_t high) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(high)) ||
      v.get<int64_t>() < low || v.get<int64_t>() > high)
    throw std::runtime_error(
        fmt::format("{} must be an integer from {} to {}, got {}", what, low, high, v.dump()));
  return v.get<int64_t>();
}

OpTest parse_test(const json& t) {
  if (!t.is_object() || !t.contains("cases") || !t["cases"].is_array())
    throw std::runtime_error("a test spec is {\"cases\": [[shape, ...], ...], ...}");
  OpTest o;
  for (auto& c : t["cases"]) {
    if (!c.is_array()) throw std::runtime_error("each case is a list of input shapes");
    std::vector<Dims> shapes;
    for (auto& s : c) {
      if (!s.is_array() || s.size() > WEFT_MAX_DIMS)
        throw std::runtime_error("a shape is a list of at most 8 sizes");
      Dims d;
      for (auto& n : s) d.push_back(whole(n, "a test shape's size", 1, 1 << 16));
      shapes.push_back(d);
    }
    o.cases.push_back(shapes);
  }
  o.attrs = t.value("attrs", json::object());
  o.low = t.value("low", -2.0);
  o.high = t.value("high", 2.0);
  o.order = int(whole(t.value("order", json(1)), "order", 1, 2));
  for (auto& i : t.value("no_grad_inputs", json::array()))
    o.no_grad_inputs.push_back(int(whole(i, "no_grad_inputs", 0, 64)));
  return o;
}

int add_op(weft_registrar* r, const weft_op_def* def) {
  Staging& st = *staging(r);
  if (!def || def->size < sizeof(weft_op_def))
    return st.refuse(fmt::format("an op whose weft_op_def is {} bytes, smaller than ABI {}'s {}",
                                 def ? def->size : 0, WEFT_PLUGIN_ABI_VERSION,
                                 sizeof(weft_op_def)));
  if (!def->name) return st.refuse("an op without a name");
  std::string name = def->name;
  if (!good_name(name)) return st.refuse(fmt::format("op name '{}' is not snake_case", name));
  if (const OpDef* old = st.find_op(name))
    return st.refuse(fmt::format("op '{}' is already defined ({})", name, old->origin_name));
  if (!def->shape) return st.refuse(fmt::format("op {} has no shape rule", name));
  OpDef d(name);
  d.doc(def->doc ? def->doc : "").origin("plugin " + st.plugin);
  for (auto& i : split_names(def->inputs)) {
    if (!good_name(i))
      return st.refuse(fmt::format("op {}: input name '{}' is not snake_case", name, i));
    d.input(i);
  }
  for (auto& o : split_names(def->outputs)) {
    if (!good_name(o))
      return st.refuse(fmt::format("op {}: output name '{}' is not snake_case", name, o));
    d.output(o);
  }
  if (d.outputs.empty()) return st.refuse(fmt::format("op {} has no outputs", name));
  try {
    d.attrs = parse_attrs(def->attrs);
  } catch (const std::exception& e) {
    return st.refuse(
        fmt::format("op {}: its attribute schema does not validate: {}", name, e.what()));
  }
  d.shape(make_shape_rule(def->shape, d.outputs.size()));
  if (def->gradient) {
    json g;
    try {
      g = json::parse(def->gradient);
    } catch (const std::exception& e) {
      return st.refuse(fmt::format("op {}: its gradient is not JSON: {}", name, e.what()));
    }
    std::string why = check_gradient(g, d, st);
    if (!why.empty()) return st.refuse(why);
    std::vector<std::string> ins, outs = d.outputs;
    for (auto& i : d.inputs) ins.push_back(i.name);
    d.grad(make_grad_rule(g, ins, outs));
  }
  if (def->test) {
    try {
      d.test(parse_test(json::parse(def->test)));
    } catch (const std::exception& e) {
      return st.refuse(fmt::format("op {}: its test spec does not validate: {}", name, e.what()));
    }
  }
  st.ops.push_back(d);
  return 0;
}

int add_kernel(weft_registrar* r, const weft_kernel_def* k) {
  Staging& st = *staging(r);
  if (!k || k->size < sizeof(weft_kernel_def))
    return st.refuse(
        fmt::format("a kernel whose weft_kernel_def is {} bytes, smaller than ABI {}'s {}",
                    k ? k->size : 0, WEFT_PLUGIN_ABI_VERSION, sizeof(weft_kernel_def)));
  if (!k->op || !k->run) return st.refuse("a kernel without an op or a function");
  if (!st.find_op(k->op)) return st.refuse(fmt::format("a kernel for unknown op '{}'", k->op));
  bool known_device = k->device == 0;
  for (auto& d : device_list()) known_device = known_device || d.kind == k->device;
  for (auto& d : st.devices) known_device = known_device || d.kind == k->device;
  if (!known_device)
    return st.refuse(fmt::format("a kernel of op {} for unknown device kind {}", k->op, k->device));
  if (k->dtype != WEFT_F32 && k->dtype != WEFT_F64)
    return st.refuse(fmt::format("a kernel of op {} for an unknown dtype", k->op));
  std::string label =
      fmt::format("kernel '{}' of op {} (plugin {})", k->name ? k->name : "", k->op, st.plugin);
  weft_kernel_def def = *k;
  def.name = nullptr;  // the plugin's strings are not kept; the label and op name are
  auto op = std::make_shared<std::string>(k->op);
  KernelEntry e{k->device, k->dtype == WEFT_F32 ? DType::f32 : DType::f64,
                fmt::format("{}:{}", st.plugin, k->name ? k->name : "kernel"),
                [def, op, label](const KernelInfo& info, std::string& why_not) {
                  weft_kernel_def d = def;
                  d.op = op->c_str();
                  return make_plugin_kernel(d, label, info, why_not);
                },
                2};
  st.kernels.push_back({k->op, e});
  return 0;
}

int add_device(weft_registrar* r, const weft_device_def* d, int32_t* kind) {
  Staging& st = *staging(r);
  if (!d || d->size < sizeof(weft_device_def))
    return st.refuse(
        fmt::format("a device whose weft_device_def is {} bytes, smaller than ABI {}'s {}",
                    d ? d->size : 0, WEFT_PLUGIN_ABI_VERSION, sizeof(weft_device_def)));
  if (!d->name || !d->alloc || !d->free || !d->stream_create || !d->copy_to_host ||
      !d->copy_from_host || !d->copy || !d->zero || !d->sync)
    return st.refuse(
        "a device needs a name, alloc, free, stream_create, copy_to_host, copy_from_host, copy, "
        "zero and sync");
  const std::string name = d->name;
  if (name.empty() || name == "cpu")
    return st.refuse(fmt::format("a device may not be named \"{}\"", name));
  for (auto& other : device_list())
    if (other.name == name)
      return st.refuse(
          fmt::format("device \"{}\" is already registered (plugin {})", name, other.plugin));
  int k = 1 + int(device_list().size() + st.devices.size());
  st.devices.push_back({k, name, st.plugin, *d});
  st.devices.back().fns.name = nullptr;  // the string is the plugin's; keep our copy
  if (kind) *kind = k;
  return 0;
}

}  // namespace

const LoadedPlugin& load_plugin(const std::string& path) {
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) throw Error(path, "", fmt::format("cannot load the plugin: {}", dlerror()));
  auto refuse = [&](const std::string& why) {
    dlclose(lib);
    throw Error(path, "", why);
  };
  auto describe =
      reinterpret_cast<const weft_plugin_info* (*)()>(dlsym(lib, "weft_plugin_describe"));
  auto init =
      reinterpret_cast<int (*)(const weft_host*, weft_registrar*)>(dlsym(lib, "weft_plugin_init"));
  if (!describe || !init)
    refuse("not a weft plugin: it does not export weft_plugin_describe and weft_plugin_init");
  const weft_plugin_info* info = describe();
  if (!info || !info->name) refuse("not a weft plugin: weft_plugin_describe returned no name");
  if (info->abi_version != WEFT_PLUGIN_ABI_VERSION)
    refuse(
        fmt::format("plugin '{}' was built for plugin ABI {}, this weft speaks ABI {}: rebuild it "
                    "against this weft's plugins/weft_plugin.h",
                    info->name, info->abi_version, WEFT_PLUGIN_ABI_VERSION));
  if (find_plugin(info->name)) refuse(fmt::format("plugin '{}' is already loaded", info->name));
  Staging st;
  st.path = path;
  st.plugin = info->name;
  weft_registrar reg{&st, add_op, add_kernel, add_device};
  int rc = init(&kHost, &reg);
  if (!st.error.empty()) refuse(fmt::format("plugin '{}' refused: {}", st.plugin, st.error));
  if (rc != 0)
    refuse(fmt::format("plugin '{}' failed to initialise (weft_plugin_init returned {})", st.plugin,
                       rc));
  // Commit: ops, then kernels (onto plugin ops and built-in ones alike), then devices.
  LoadedPlugin lp{info->name, info->version ? info->version : "", path, {}};
  for (auto& op : st.ops) {
    Registry::get().add(op);
    lp.ops.push_back(op.name);
  }
  for (auto& [op, k] : st.kernels) Registry::get().add_kernel(op, k);
  for (auto& d : st.devices) device_list().push_back(d);
  plugin_list().push_back(lp);
  return plugin_list().back();
}

void check_op_def(const weft_op_def& def, const std::string& origin) {
  Staging st;
  st.path = origin;
  st.plugin = origin;
  weft_registrar reg{&st, add_op, add_kernel, add_device};
  add_op(&reg, &def);
  if (!st.error.empty()) throw Error(origin, "", st.error);
}

void load_plugins(const std::vector<std::string>& paths) {
  if (const char* env = std::getenv("WEFT_PLUGIN_PATH")) {
    std::stringstream ss(env);
    for (std::string p; std::getline(ss, p, ':');)
      if (!p.empty()) load_plugin(p);
  }
  for (auto& p : paths) load_plugin(p);
}

const std::vector<LoadedPlugin>& loaded_plugins() { return plugin_list(); }

const LoadedPlugin* find_plugin(const std::string& name) {
  for (auto& p : plugin_list())
    if (p.name == name) return &p;
  return nullptr;
}

const DeviceDef* find_device(int kind) {
  for (auto& d : device_list())
    if (d.kind == kind) return &d;
  return nullptr;
}

const std::vector<DeviceDef>& devices() { return device_list(); }

}  // namespace weft
