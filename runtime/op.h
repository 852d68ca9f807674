// The op registry. One registry serves built-in ops and plugins. An op is described in one
// place: its schema (inputs, outputs, typed attributes with defaults and docs), its shape
// rule over symbolic shapes, its kernels keyed by (device, dtype), and its gradient rule,
// which builds graph nodes from other ops so that gradients can be differentiated again.
// A composite op has an expansion into other ops instead of kernels and a gradient.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/shape.h"

namespace weft {

using json = nlohmann::json;

class Builder;
class GradContext;
struct Val;

enum class AttrType {
  Int,        // any integer
  PosInt,     // integer > 0
  NonNegInt,  // integer >= 0
  Float,      // any number
  Bool,
  String,
  Choice,       // one of a list of strings
  Ints,         // list of integers
  ShapeSpec,    // list of positive integers, "B" or -1
  Initializer,  // a parameter initializer (see init.h)
  Pair,         // a non-negative integer or a list of two (height, width)
  Any,
};
const char* attr_type_name(AttrType t);

struct AttrSpec {
  std::string name;
  AttrType type;
  json default_value;  // null and !required: the attribute is optional with no value
  bool required = false;
  std::string doc;
  std::vector<std::string> choices;
};

struct InputSpec {
  std::string name;
  bool optional = false;
  bool variadic = false;  // one or more; only as the last input
};

// What a kernel needs to know, fixed when a plan is compiled.
struct KernelInfo {
  std::string node;
  json attrs;
  std::vector<Dims> in, out;
  DType dtype = DType::f32;
  Device device;
  // --precision bf16: matrix products and convolutions read their inputs rounded to bf16
  // and accumulate and write in dtype (f32); other kernels ignore it.
  bool bf16 = false;
  // --sync-batch-norm: batch norm's statistics are the whole batch's, over every rank of a
  // data-parallel run; other kernels ignore it.
  bool sync_batch_norm = false;
};

// Per-run facts a kernel may read (random ops draw from (seed, step, phase, node)).
struct RunContext {
  uint64_t seed = 0;
  uint64_t step = 0;
  uint64_t phase = 0;
  bool training = true;
  // Which equal shard of the batch this process computes (its rank under mpirun): random ops
  // draw that shard's elements of the stream, so that the ranks draw what one process would.
  uint64_t shard = 0;
};

struct KernelArgs {
  std::vector<const Tensor*> in;
  std::vector<Tensor*> out;
  const RunContext* ctx = nullptr;
  uint64_t node_key = 0;  // a stable hash of the node's name, for random ops
  // Values that change from run to run without a new plan (the optimizers' step sizes).
  const double* scalars = nullptr;
  int n_scalars = 0;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void run(const KernelArgs& args) = 0;
};

// Makes a kernel for one node, or returns null and says why not (a layout, an attribute
// the fast path does not take); the next candidate is then tried.
using KernelMaker = std::function<std::unique_ptr<Kernel>(const KernelInfo&, std::string& why_not)>;

struct KernelEntry {
  int device_kind = 0;
  DType dtype = DType::f32;
  std::string name;  // "onednn", "reference", ...
  KernelMaker make;
  int priority = 0;  // higher is tried first; reference kernels are 0
};

struct ShapeContext {
  const std::vector<Shape>& in;
  const json& attrs;
};
using ShapeRule = std::function<std::vector<Shape>(const ShapeContext&)>;
using GradRule = std::function<std::vector<Val>(GradContext&)>;
using Expansion =
    std::function<std::vector<Val>(Builder&, const std::vector<Val>& in, const json& attrs)>;

// Layer ops (linear, conv2d) own parameters when used as layers: given the input shapes
// and attributes they say which parameters to create.
struct ParamSpec {
  std::string name;  // "weight", "bias"
  Shape shape;
  json init;
  double fan_in = 1, fan_out = 1;
  bool trainable = true;  // false: state such as batch norm's running statistics
};
using ParamRule =
    std::function<std::vector<ParamSpec>(const std::vector<Shape>& in, const json& attrs)>;
using FlopsRule = std::function<double(const KernelInfo&)>;

// How the op sweep tests an op: input shapes per case, attributes, value ranges.
struct OpTest {
  std::vector<std::vector<Dims>> cases;
  json attrs = json::object();
  double low = -2, high = 2;
  double avoid = 0;                               // keep |x| >= avoid (kinks)
  std::vector<std::pair<double, double>> ranges;  // per input, overrides low/high
  int order = 1;                                  // 2: also checked at second order
  std::vector<int> no_grad_inputs;                // inputs not differentiated (index inputs)
  std::vector<std::pair<std::vector<Dims>, json>> extra;  // more cases, each with its attributes
  // The f32 kernel dispatch must pick ("onednn"), so that a fast kernel declining every node
  // does not go unnoticed behind the reference kernel; empty where the reference is the only
  // one. Cases it is known not to take (indices into cases, then extra) are listed apart,
  // and there it must decline.
  std::string expect_kernel;
  std::vector<int> declined_cases;
};

class OpDef {
 public:
  explicit OpDef(std::string name);

  OpDef& doc(std::string text);
  OpDef& input(std::string name);
  OpDef& optional_input(std::string name);
  OpDef& variadic_input(std::string name);
  OpDef& output(std::string name);
  OpDef& attr(std::string name, AttrType type, json default_value, std::string doc);
  OpDef& required(std::string name, AttrType type, std::string doc);
  OpDef& choice(std::string name, std::vector<std::string> choices, std::string default_value,
                std::string doc);
  OpDef& shape(ShapeRule rule);
  OpDef& kernel(int device_kind, DType dtype, std::string name, KernelMaker make, int priority = 0);
  OpDef& kernels(const std::vector<KernelEntry>& entries);
  OpDef& grad(GradRule rule);
  OpDef& expand(Expansion e);
  OpDef& params(ParamRule rule);
  OpDef& flops(FlopsRule rule);
  // The FLOPs of a matrix product or convolution: `weft bench` times these steps alone
  // to give a model's floor (what the step would take if nothing else cost anything).
  OpDef& dense_flops(FlopsRule rule);
  OpDef& test(OpTest t);
  OpDef& alias();  // output 0 is a view of input 0's storage (reshape, stop_gradient)
  // The kernel updates these inputs in place (running statistics); steps that update the
  // same tensor run in plan order.
  OpDef& mutates(std::vector<int> which);
  // Applies a shared piece of schema (the attributes a family of ops has in common).
  OpDef& with(OpDef& (*part)(OpDef&)) { return part(*this); }
  OpDef& internal(std::string why);
  OpDef& source();  // input/param/constant: bound by the planner, no kernel
  OpDef& origin(std::string where);

  // Checks the given attributes against the schema and fills defaults. Throws AttrError.
  json complete_attrs(const json& given) const;
  // Checks the number of inputs. Throws ShapeError.
  void check_arity(size_t n) const;

  std::string name, docs, origin_name = "built-in", internal_why;
  std::vector<InputSpec> inputs;
  std::vector<std::string> outputs;
  std::vector<AttrSpec> attrs;
  ShapeRule shape_rule;
  std::vector<KernelEntry> kernel_list;  // tried in order of priority
  GradRule grad_rule;
  Expansion expansion;
  ParamRule param_rule;
  FlopsRule flops_rule;
  std::unique_ptr<OpTest> test_spec;
  bool is_alias = false, is_source = false, is_dense = false;
  std::vector<int> mutated_inputs;

  OpDef(const OpDef& o);
  OpDef& operator=(const OpDef&) = delete;
};

class Registry {
 public:
  static Registry& get();
  void add(const OpDef& def);                                    // throws Error on a duplicate name
  void add_kernel(const std::string& op, const KernelEntry& k);  // the op must exist
  const OpDef* find(const std::string& name) const;
  std::vector<const OpDef*> all() const;  // sorted by name

 private:
  friend class ScopedOp;
  void remove(const std::string& name);
  std::map<std::string, std::unique_ptr<OpDef>> ops_;
};

// Registers an op for its own lifetime and removes it again, so that a test leaves the
// registry as it found it. Graphs and plans that use the op must be gone before it is.
class ScopedOp {
 public:
  explicit ScopedOp(const OpDef& def);
  ~ScopedOp();
  ScopedOp(const ScopedOp&) = delete;
  ScopedOp& operator=(const ScopedOp&) = delete;
  const OpDef& def() const;

 private:
  std::string name_;
};

struct OpRegistrar {
  OpRegistrar(const OpDef& def);  // NOLINT: used as `static OpRegistrar r = OpDef(...)...`
};

std::string op_signature(const OpDef& d);  // one line: name(inputs) -> outputs

}  // namespace weft

#define WEFT_CAT_(a, b) a##b
#define WEFT_CAT(a, b) WEFT_CAT_(a, b)
#define WEFT_OP(name) \
  static const ::weft::OpRegistrar WEFT_CAT(weft_op_registrar_, __LINE__) = ::weft::OpDef(#name)
