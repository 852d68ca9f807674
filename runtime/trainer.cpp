#include "runtime/trainer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <type_traits>

#include "runtime/autodiff.h"
#include "runtime/device.h"
#include "runtime/distributed.h"
#include "runtime/files.h"
#include "runtime/init.h"
#include "runtime/kernels.h"
#include "runtime/rng.h"
#include "runtime/run_folder.h"
#include "runtime/sources.h"

namespace weft {

namespace {
uint64_t name_key(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}
constexpr uint64_t kSampleStream = 0x5a3b1e;

// Refuses a run whose parameters and inputs cannot fit in memory at its batch, before
// any of them is allocated (the plans check their buffers when compiled).
void check_session_memory(const Model& m, int64_t batch, DType dtype) {
  int64_t params = 0, inputs = 0;
  std::optional<int64_t> total;
  const int64_t size = int64_t(dtype_size(dtype));
  try {
    for (const ModelParam& p : m.params)
      params = checked_add(params, checked_mul(checked_numel(bind_batch(p.shape, 1)), size));
    for (const ModelInput& in : m.inputs)
      inputs = checked_add(inputs, checked_mul(checked_numel(bind_batch(in.shape, batch)), size));
    total = checked_add(params, inputs);
  } catch (const ShapeError&) {
  }
  try {
    check_memory(total, total ? fmt::format("training at batch {} (parameters {}, inputs {})",
                                            batch, bytes_str(params), bytes_str(inputs))
                              : fmt::format("training at batch {}", batch));
  } catch (const Error& e) {
    throw Error(m.file, "", e.message());
  }
}
}  // namespace

Session::Session(const Model& m, SessionOptions o) : model(m), opt(std::move(o)) {
  std::string isa;
  if (opt.bf16 && !cpu_has_bf16(isa))
    throw Error("", "",
                fmt::format("--precision bf16 needs a CPU whose oneDNN runs bf16 natively (AVX-512 "
                            "BF16 or AMX); this one offers {}",
                            isa));
  check_session_memory(model, model.train.batch, opt.dtype);
  // Under mpirun each rank computes an equal share of the global batch.
  const Ranks& r = ranks();
  if (model.train.batch % r.size != 0)
    throw Error(model.file, "/train/batch",
                fmt::format("batch {} does not divide among the {} ranks of this run: each rank "
                            "computes an equal share of the batch (use a batch that {} divides, "
                            "or another -np)",
                            model.train.batch, r.size, r.size));
  local_batch_ = model.train.batch / r.size;
  if (r.size > 1) {
    // A collective reached by some ranks only would wait for ever: every rank must have
    // loaded the same graph with the same seed, batch and steps.
    std::string what = fmt::format("{}|{}|{}|{}|{}", model.name, model.train.seed,
                                   model.train.batch, model.train.steps, model.graph.nodes.size());
    for (const ModelParam& p : model.params) what += "|" + p.name + shape_str(p.shape);
    if (!same_on_all_ranks(std::hash<std::string>{}(what)))
      throw Error(model.file, "",
                  "the ranks of this run loaded different graphs, seeds, batches or steps: every "
                  "rank must run the same command");
  }
  for (const ModelParam& p : model.params) {
    Tensor t(opt.dtype, bind_batch(p.shape, 1));
    initialize(t, p.init, p.fan_in, p.fan_out, model.train.seed, p.name);
    if (opt.device.kind != 0) {
      Tensor d = zeros_on(opt.device, t.dtype(), t.shape());
      upload(t, d);
      t = d;
    }
    params[p.name] = t;
  }
  // Each train.log value is computed by the first phase whose loss depends on it, with the
  // parameters as that phase sees them; a value that no loss depends on (a diagnostic such
  // as a gradient norm or an accuracy) is computed by the first phase, before any update.
  std::vector<size_t> log_phase(model.train.log.size(), 0);
  for (size_t li = 0; li < model.train.log.size(); ++li)
    for (size_t pi = model.train.phases.size(); pi-- > 0;) {
      auto needed = model.graph.ancestors({model.train.phases[pi].loss});
      if (std::binary_search(needed.begin(), needed.end(), model.train.log[li].second.node))
        log_phase[li] = pi;
    }
  Builder b(model.graph);
  for (const PhaseSpec& ps : model.train.phases) {
    Phase ph;
    ph.spec = ps;
    std::vector<ValueId> wrt;
    for (auto& name : ps.params) {
      wrt.push_back(model.param(name)->id);
      ph.param_tensors.push_back(params.at(name));
    }
    try {
      ph.grads = gradients(b, ps.loss, wrt);
    } catch (const ShapeError& e) {
      throw Error(model.file, ps.where, e.what());
    }
    std::vector<ValueId> targets{ps.loss};
    targets.insert(targets.end(), ph.grads.begin(), ph.grads.end());
    for (size_t li = 0; li < model.train.log.size(); ++li)
      if (log_phase[li] == phases.size()) {
        ph.logs.push_back({li, targets.size()});
        targets.push_back(model.train.log[li].second);
      }
    ph.bound = bind_plan(targets, local_batch_);
    for (size_t k = 0; k < ph.grads.size(); ++k)
      ph.grad_tensors.push_back(&ph.bound.plan->target(1 + k));
    ph.opt = make_optimizer(ps.optimizer, ph.param_tensors, ps.params);
    phases.push_back(std::move(ph));
  }
  for (auto& ph : phases)
    if (reads_data(ph.bound)) data_draws_per_step_ += ph.spec.repeat;
  take_state_of_rank0();  // initialized from the same seed already; this makes it certain
}

namespace {
// Rank 0's values of `t` on every rank.
void broadcast_tensor(Tensor& t) {
  if (t.device().kind == 0) {
    broadcast(t.raw(), t.bytes());
    return;
  }
  Tensor h = on_host(t);
  broadcast(h.raw(), h.bytes());
  upload(h, t);
}
}  // namespace

void Session::take_state_of_rank0() {
  if (ranks().size == 1) return;
  for (auto& [name, t] : params) broadcast_tensor(t);
  for (auto& ph : phases)
    for (auto& [name, t] : ph.opt->state()) broadcast_tensor(t);
  broadcast(&step, sizeof step);
}

// The phase's targets (its loss, gradients and logged values) summed over the ranks and
// divided by their number, in one allreduce over one flat buffer. Each rank's loss is the
// mean over its equal share of the batch, so the average of the ranks' gradients is the
// gradient of the mean over the whole batch: what one process with the whole batch computes,
// up to the order of the additions.
void Session::average_over_ranks(Phase& ph) {
  Plan& plan = *ph.bound.plan;
  const size_t n = plan.targets.size();
  const bool host = opt.device.kind == 0;
  if (!ph.rank_flat.defined()) {  // made once: the flat buffer, and host copies of a device's
    int64_t total = 0;
    for (size_t t = 0; t < n; ++t) total += plan.target(t).numel();
    ph.rank_flat = Tensor(opt.dtype, {total});
    for (size_t t = 0; t < n && !host; ++t)
      ph.rank_sums.emplace_back(plan.target(t).dtype(), plan.target(t).shape());
  }
  if (!host) {
    for (size_t t = 0; t < n; ++t) download_async(plan.target(t), ph.rank_sums[t]);
    sync_device(opt.device);
  }
  auto target_memory = [&](size_t t) {
    return host ? plan.target(t).raw() : ph.rank_sums[t].raw();
  };
  char* flat = static_cast<char*>(ph.rank_flat.raw());
  for (size_t t = 0, at = 0; t < n; at += plan.target(t).bytes(), ++t)
    std::memcpy(flat + at, target_memory(t), plan.target(t).bytes());
  auto reduce = [&](auto* values) {
    using T = std::remove_pointer_t<decltype(values)>;
    const int64_t count = ph.rank_flat.numel();
    allreduce_sum(values, size_t(count));
    allreduce_bytes += double(ph.rank_flat.bytes());
    const T scale = T(1) / T(ranks().size);
    for (int64_t i = 0; i < count; ++i) values[i] *= scale;
  };
  if (opt.dtype == DType::f32)
    reduce(ph.rank_flat.data<float>());
  else
    reduce(ph.rank_flat.data<double>());
  for (size_t t = 0, at = 0; t < n; at += plan.target(t).bytes(), ++t) {
    std::memcpy(target_memory(t), flat + at, plan.target(t).bytes());
    if (!host) upload(ph.rank_sums[t], plan.target(t));
  }
}

bool Session::reads_data(const BoundPlan& b) const {
  for (auto& name : b.used)
    for (auto& in : model.inputs)
      if (in.name == name && in.source.rfind("data.", 0) == 0) return true;
  return false;
}

const Dataset* Session::dataset(const std::string& split) {
  auto& d = data_[split];
  if (!d)
    d = std::make_unique<Dataset>(
        is_mixture(model.data.dataset)
            ? make_mixture(model.data.dataset, split)
            : load_fashion_mnist(opt.data_dir.empty() ? default_data_dir() : opt.data_dir, split));
  return d.get();
}

std::vector<std::string> Session::inputs_of(const std::vector<ValueId>& targets) const {
  std::vector<std::string> used;
  for (int i : model.graph.ancestors(targets)) {
    const Node& n = model.graph.nodes[i];
    if (n.op() == "input") used.push_back(n.attrs.at("name"));
  }
  return used;
}

BoundPlan Session::bind_plan(const std::vector<ValueId>& targets, int64_t batch) {
  check_session_memory(model, batch, opt.dtype);  // before the inputs are allocated
  BoundPlan b;
  PlanOptions po;
  po.batch = batch;
  po.dtype = opt.dtype;
  po.bf16 = opt.bf16;
  po.device = opt.device;
  po.sync_batch_norm = opt.sync_batch_norm;
  for (auto& [name, t] : params) po.bindings[name] = t;
  for (auto& in : model.inputs) {
    Tensor t(opt.dtype, bind_batch(in.shape, batch));
    b.staging[in.name] = t;
    if (opt.device.kind != 0) {
      t = zeros_on(opt.device, t.dtype(), t.shape());
      // Noise the device can draw is drawn there, with the values the host would draw.
      const OpDef* noise = Registry::get().find("noise_" + in.source);
      if (noise && has_kernel(*noise, opt.device, opt.dtype)) {
        KernelInfo info{in.name,   json{{"a", in.a}, {"b", in.b}}, {}, {t.shape()}, opt.dtype,
                        opt.device};
        std::string kernel_name;
        b.noise[in.name] = make_kernel(*noise, info, kernel_name, "/inputs/" + in.name);
      }
    }
    b.inputs[in.name] = t;
    po.bindings[in.name] = t;
  }
  b.used = inputs_of(targets);
  try {
    b.plan = compile_plan(model.graph, targets, po);
  } catch (const Error& e) {
    throw Error(model.file, e.where(), e.message());
  }
  return b;
}

void Session::fill_inputs(BoundPlan& b, uint64_t noise_key, const std::vector<int64_t>* examples,
                          const Dataset* d, uint64_t shard) {
  for (auto& name : b.used) {
    const ModelInput* in = nullptr;
    for (auto& x : model.inputs)
      if (x.name == name) in = &x;
    WEFT_ASSERT(in, "unknown input " + name);
    const InputSource* src = find_input_source(in->source);
    WEFT_ASSERT(src, "input " + name + " has an unknown source " + in->source);
    const uint64_t key = stream_key(noise_key, name_key(name));
    // A batch-shaped noise input's shard starts at the shard's first element of the stream.
    const uint64_t offset =
        !in->shape.empty() && in->shape[0].batch ? shard * uint64_t(b.inputs.at(name).numel()) : 0;
    if (auto k = b.noise.find(name); k != b.noise.end()) {
      static const RunContext drawn;  // the stream is all the kernel reads
      const double first = double(offset);
      KernelArgs a;
      a.out = {&b.inputs.at(name)};
      a.ctx = &drawn;
      a.node_key = key;
      a.scalars = &first;
      a.n_scalars = 1;
      k->second->run(a);
      continue;
    }
    SourceFill f{d, examples, model.data.low, model.data.high, in->a, in->b, key, offset};
    Tensor& host = b.staging.at(name);
    src->fill(host, f);
    if (opt.device.kind != 0) upload(host, b.inputs.at(name));
  }
}

// --check-numerics: the first plan step whose output is not finite, named with its op and
// the place in the graph file that defined it.
void Session::run_checked(Phase& ph, size_t pi, const RunContext& ctx) {
  try {
    run_plan_checked(*ph.bound.plan, ctx);
  } catch (const NonFinite& e) {
    int id = model.graph.find(e.node);
    std::string at = id >= 0 ? model.graph.nodes[size_t(id)].where : "";
    throw Error(
        model.file, at.empty() ? ph.spec.where : at,
        fmt::format("step {}, phase {} (minimize {}): node '{}' ({}) is the first whose "
                    "output is not finite: element {} of output {} is {}; every value "
                    "it reads is finite",
                    step + 1, pi, ph.spec.loss_name, e.node, e.op, e.element, e.output, e.value));
  }
}

void Session::check_params(const Phase& ph, size_t pi) const {
  for (size_t k = 0; k < ph.param_tensors.size(); ++k) {
    const Tensor host = on_host(ph.param_tensors[k]);
    const int64_t bad = first_non_finite(host);
    if (bad < 0) continue;
    const ModelParam* p = model.param(ph.spec.params[k]);
    throw Error(model.file, ph.spec.where,
                fmt::format("step {}, phase {} (minimize {}): parameter '{}' is {} at element {} "
                            "after the optimizer's update, though its gradient was finite",
                            step + 1, pi, ph.spec.loss_name, p ? p->name : ph.spec.params[k],
                            host.at(bad), bad));
  }
}

std::vector<double> Session::train_step(StepTimes* times) {
  int draw = 0;
  const Dataset* d = data_draws_per_step_ > 0 ? dataset(model.data.split) : nullptr;
  if (d && !batcher_) batcher_ = std::make_unique<Batcher>(*d, model.train.batch, model.train.seed);
  for (size_t pi = 0; pi < phases.size(); ++pi) {
    Phase& ph = phases[pi];
    if (!ph.spec.active_at(step)) continue;  // outside its steps: no update, no loss
    const bool uses_data = reads_data(ph.bound);
    for (int r = 0; r < ph.spec.repeat; ++r) {
      const std::vector<int64_t>* examples = nullptr;
      const uint64_t rank = uint64_t(ranks().rank);
      if (uses_data) {
        examples = &batcher_->indices(step * data_draws_per_step_ + draw++);
        if (ranks().size > 1) {  // this rank's share of the step's examples
          shard_examples_.assign(examples->begin() + int64_t(rank) * local_batch_,
                                 examples->begin() + int64_t(rank + 1) * local_batch_);
          examples = &shard_examples_;
        }
      }
      const uint64_t where = uint64_t(pi) * 1024 + uint64_t(r);
      auto t0 = std::chrono::steady_clock::now();
      fill_inputs(ph.bound, stream_key(model.train.seed, uint64_t(step), where), examples, d, rank);
      auto t1 = std::chrono::steady_clock::now();
      RunContext ctx{model.train.seed, uint64_t(step), where, true, rank};
      if (opt.check_numerics)
        run_checked(ph, pi, ctx);
      else
        run_plan(*ph.bound.plan, ctx, opt.parallel, times);
      if (ranks().size > 1) average_over_ranks(ph);
      auto t2 = std::chrono::steady_clock::now();
      ph.opt->update(ph.grad_tensors);
      auto t3 = std::chrono::steady_clock::now();
      if (opt.check_numerics) check_params(ph, pi);
      input_seconds += std::chrono::duration<double>(t1 - t0).count();
      optimizer_seconds += std::chrono::duration<double>(t3 - t2).count();
    }
  }
  // The step's scalars (each phase's loss, the logged values, each phase's gradient norm)
  // come back together, with one wait for the device.
  std::vector<std::pair<const Tensor*, double*>> wanted;
  std::vector<double> losses(phases.size(), std::nan("")),
      logged(model.train.log.size(), std::nan("")), norms(phases.size(), std::nan(""));
  for (size_t pi = 0; pi < phases.size(); ++pi) {
    Phase& ph = phases[pi];
    if (!ph.spec.active_at(step)) continue;
    wanted.push_back({&ph.bound.plan->target(0), &losses[pi]});
    for (auto& [li, t] : ph.logs) wanted.push_back({&ph.bound.plan->target(t), &logged[li]});
    wanted.push_back({&ph.opt->sum_of_squares(), &norms[pi]});
  }
  // On the CPU they are read where they are; a device's are copied back together.
  std::vector<std::pair<Tensor, double*>> copies;
  copies.reserve(wanted.size());  // the copies are in flight: their tensors must not move
  for (auto& [t, into] : wanted) {
    if (t->device().kind == 0) {
      *into = t->at(0);
      continue;
    }
    copies.emplace_back(Tensor(t->dtype(), t->shape()), into);
    download_async(*t, copies.back().first);
  }
  if (!copies.empty()) sync_device(opt.device);
  for (auto& [h, into] : copies) *into = h.at(0);
  for (double& n : norms) n = std::sqrt(n);  // NaN stays NaN
  losses.insert(losses.end(), logged.begin(), logged.end());
  losses.insert(losses.end(), norms.begin(), norms.end());
  ++step;
  return losses;
}

Tensor Session::evaluate(const std::string& output, int64_t n, const std::string& split,
                         int64_t first) {
  auto it = model.outputs.find(output);
  if (it == model.outputs.end())
    throw Error(model.file, "/outputs", fmt::format("the graph names no output \"{}\"", output));
  return evaluate_values({it->second}, n, split, first).at(0);
}

BoundPlan& Session::eval_plan(const std::vector<ValueId>& values, int64_t n) {
  auto cached = eval_plans_.find({values, n});
  if (cached == eval_plans_.end())
    cached = eval_plans_.emplace(std::pair{values, n}, bind_plan(values, n)).first;
  return cached->second;
}

std::vector<std::string> Session::output_sources(const std::string& output) const {
  auto it = model.outputs.find(output);
  if (it == model.outputs.end())
    throw Error(model.file, "/outputs", fmt::format("the graph names no output \"{}\"", output));
  std::vector<std::string> sources;
  for (auto& name : inputs_of({it->second}))  // no plan is compiled: only the inputs matter
    for (auto& in : model.inputs)
      if (in.name == name) sources.push_back(in.source);
  return sources;
}

static bool is_label_source(const std::string& s) {
  return s == "data.labels" || s == "data.onehot";
}

bool Session::output_reads_data(const std::string& output) {
  for (auto& s : output_sources(output))
    if (s.rfind("data.", 0) == 0 && !is_label_source(s)) return true;
  return false;
}

bool Session::output_reads_labels(const std::string& output) {
  for (auto& s : output_sources(output))
    if (is_label_source(s)) return true;
  return false;
}

void Session::use_dataset(const std::string& split, Dataset d) {
  data_[split] = std::make_unique<Dataset>(std::move(d));
}

std::vector<Tensor> Session::evaluate_values(const std::vector<ValueId>& values, int64_t n,
                                             const std::string& split, int64_t first, uint64_t draw,
                                             const std::vector<uint8_t>* classes) {
  BoundPlan& b = eval_plan(values, n);
  std::vector<int64_t> examples;
  const Dataset* d = reads_data(b) ? dataset(split) : nullptr;
  Dataset asked;  // the classes asked for, with blank images
  if (d && classes) {
    WEFT_ASSERT(int64_t(classes->size()) == n, "one class per example");
    asked.n = n;
    asked.rows = d->rows;
    asked.cols = d->cols;
    asked.images.assign(size_t(n * d->rows * d->cols), 0);
    asked.points.assign(size_t(2 * n), 0.0f);
    asked.labels = *classes;
    d = &asked;
    first = 0;
  }
  if (d) {
    if (first + n > d->n)
      throw Error(fmt::format("examples {}..{} are past the end of the {} split ({})", first,
                              first + n, split, d->n));
    for (int64_t i = 0; i < n; ++i) examples.push_back(first + i);
  }
  fill_inputs(b, stream_key(model.train.seed, kSampleStream, draw), &examples, d);
  RunContext ctx{model.train.seed, 0, 0, false};
  run_plan(*b.plan, ctx, opt.parallel);
  std::vector<Tensor> out;
  for (size_t i = 0; i < values.size(); ++i)
    out.push_back(on_host(b.plan->target(i)).to(opt.dtype));
  return out;
}

void Session::save_checkpoint(const std::string& path) const {
  NamedTensors t;
  for (auto& [name, p] : params) t.push_back({"param/" + name, on_host(p)});
  for (size_t pi = 0; pi < phases.size(); ++pi)
    for (auto& [name, s] : phases[pi].opt->state())
      t.push_back({fmt::format("opt/{}/{}", pi, name), on_host(s)});
  std::map<std::string, std::string> meta = {
      {"format", "weft-checkpoint-1"},
      {"graph", model.name},
      {"step", std::to_string(step)},
      {"seed", std::to_string(model.train.seed)},
      {"batch", std::to_string(model.train.batch)},
      {"dtype", dtype_name(opt.dtype)},
      // Every draw is a function of (seed, step, phase, node): this is the whole RNG state.
      {"rng", fmt::format("counter-based; seed {} at step {}", model.train.seed, step)}};
  save_safetensors(path, t, meta);
}

void Session::load_checkpoint(const std::string& path, bool to_continue) {
  // Everything is checked before anything is copied: a refused checkpoint leaves the
  // session as it was.
  SafetensorsFile f = load_safetensors(path);
  auto meta = [&](const std::string& k) {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end())
      throw Error(path, "__metadata__", "not a weft checkpoint (no \"" + k + "\" in its metadata)");
    return it->second;
  };
  // A whole decimal integer in [low, high]: "1e3", "50abc", " 7" and "+7" are refused.
  auto integer = [&](const std::string& k, auto low, auto high) {
    const std::string v = meta(k);
    decltype(low) x{};
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (v.empty() || ec != std::errc() || end != v.data() + v.size() || x < low || x > high)
      throw Error(path, "__metadata__/" + k,
                  fmt::format("expected a whole number from {} to {}, got \"{}\"", low, high, v));
    return x;
  };
  if (meta("format") != "weft-checkpoint-1")
    throw Error(
        path, "__metadata__/format",
        "unknown checkpoint format \"" + meta("format") + "\" (expected weft-checkpoint-1)");
  const int64_t ck_step = integer("step", int64_t(0), INT64_MAX);
  const uint64_t ck_seed = integer("seed", uint64_t(0), UINT64_MAX);
  const int64_t ck_batch = integer("batch", int64_t(1), INT64_MAX);
  if (to_continue && ck_batch != model.train.batch)
    throw Error(path, "__metadata__/batch",
                fmt::format("the checkpoint was trained with batch {}, this run uses {}", ck_batch,
                            model.train.batch));
  if (to_continue && ck_seed != model.train.seed)
    throw Error(path, "__metadata__/seed",
                fmt::format("the checkpoint was trained with seed {}, this run uses {}", ck_seed,
                            model.train.seed));

  // What the graph needs, against what the file holds: every difference is listed.
  std::vector<std::pair<std::string, Tensor>> wanted;
  for (auto& [name, p] : params) wanted.push_back({"param/" + name, p});
  for (size_t pi = 0; pi < phases.size(); ++pi)
    for (auto& [name, st] : phases[pi].opt->state())
      wanted.push_back({fmt::format("opt/{}/{}", pi, name), st});
  std::vector<std::string> problems;
  for (auto& [key, dst] : wanted) {
    auto it = f.tensors.find(key);
    if (it == f.tensors.end()) {
      problems.push_back(fmt::format("missing tensor '{}' ({} {})", key, dtype_name(dst.dtype()),
                                     dims_str(dst.shape())));
      continue;
    }
    const Tensor& src = it->second;
    if (src.dtype() != dst.dtype() || src.shape() != dst.shape())
      problems.push_back(
          fmt::format("tensor '{}' is {} {} in the checkpoint, the graph needs {} {}", key,
                      dtype_name(src.dtype()), dims_str(src.shape()), dtype_name(dst.dtype()),
                      dims_str(dst.shape())));
  }
  for (auto& [key, t] : f.tensors)
    if (std::none_of(wanted.begin(), wanted.end(), [&](auto& w) { return w.first == key; }))
      problems.push_back(fmt::format("unexpected tensor '{}' ({} {})", key, dtype_name(t.dtype()),
                                     dims_str(t.shape())));
  if (!problems.empty())
    throw Error(path, "",
                fmt::format("does not fit graph '{}' (was it made from another graph?):\n  {}",
                            model.name, fmt::join(problems, "\n  ")));
  for (auto& [key, dst] : wanted) {
    const Tensor& src = f.tensors.at(key);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < src.numel(); ++i)
      if (!std::isfinite(src.at(i)) && bad++ == 0) first = i;
    if (bad > 0)
      problems.push_back(
          fmt::format("tensor '{}' element {} is {} ({} of its {} elements are not "
                      "finite)",
                      key, first, src.at(first), bad, src.numel()));
  }
  if (!problems.empty())
    throw Error(
        path, "",
        fmt::format("holds values that are not finite:\n  {}", fmt::join(problems, "\n  ")));

  for (auto& [key, dst] : wanted) {
    if (dst.device().kind == 0)
      dst.copy_from(f.tensors.at(key));
    else
      upload(f.tensors.at(key), dst);
  }
  sync_device(opt.device);
  step = ck_step;
}

bool write_sample_inputs(Session& s, int64_t n, const std::string& path) {
  if (!s.model.outputs.count("samples") || !s.output_reads_data("samples") ||
      is_mixture(s.model.data.dataset))
    return false;
  const Dataset* d = s.dataset("test");
  const int64_t side = d->rows, count = std::min(n, d->n), per = d->rows * d->cols;
  Tensor img(DType::f32, {count, per});
  for (int64_t i = 0; i < count * per; ++i) img.set(i, double(d->images[size_t(i)]) / 255.0);
  save_png_grid(path, img, side, d->cols, 0, 1);
  return true;
}

bool write_samples(Session& s, int64_t n, const std::string& path, const std::string& output,
                   bool normalize, int cls) {
  auto it = s.model.outputs.find(output);
  if (it == s.model.outputs.end()) return false;
  Shape shape = s.model.graph.shape(it->second);
  if (shape.empty()) return false;
  Dim per = shape_numel(Shape(shape.begin() + 1, shape.end()));
  if (per == Dim(2) && shape[0].batch && is_mixture(s.model.data.dataset)) {
    // Points of a 2-D mixture: a scatter plot over the modes, of enough points to show
    // which modes are covered.
    const Dataset* d = s.dataset("test");
    const int64_t count = std::max<int64_t>(n, 1000);
    Tensor xy = s.evaluate(output, count, "test", 0).to(DType::f32);
    double extent = 0;
    for (auto& [x, y] : d->modes) extent = std::max({extent, std::abs(x), std::abs(y)});
    save_scatter_png(path, xy.data<float>(), count, d->modes, 3 * d->mode_std, extent + 1);
    return true;
  }
  int64_t side = int64_t(std::lround(std::sqrt(double(per.n))));
  if (per.batch || side * side != per.n || side < 4) return false;
  // A batch-shaped output gives n images; a fixed one (weights, atoms) all of its rows.
  std::vector<uint8_t> classes;
  if (s.output_reads_labels(output)) {
    if (cls < 0) n = 100;
    for (int64_t i = 0; i < n; ++i) classes.push_back(uint8_t(cls >= 0 ? cls : i / 10));
  }
  Tensor img = s.evaluate_values({s.model.outputs.at(output)}, n, "test", 0, 0,
                                 classes.empty() ? nullptr : &classes)[0]
                   .to(DType::f32);
  const int64_t count = img.numel() / per.n;
  double low = s.model.data.low, high = s.model.data.high;
  if (normalize) {  // each image to [-1, 1] by its largest magnitude: 0 is mid-gray
    float* p = img.data<float>();
    for (int64_t i = 0; i < count; ++i) {
      float m = 0;
      for (int64_t j = 0; j < per.n; ++j) m = std::max(m, std::abs(p[i * per.n + j]));
      for (int64_t j = 0; j < per.n; ++j) p[i * per.n + j] /= m > 0 ? m : 1.0f;
    }
    low = -1, high = 1;
  }
  save_png_grid(path, img.view({count, per.n}), side, side, low, high);
  return true;
}

namespace {

// SIGINT and SIGTERM ask the training loop to stop after the current step. The first signal
// restores the default action (SA_RESETHAND), so a second one ends the process at once. The
// handler runs on an alternate stack: the main thread may be inside oneDNN's JIT GEMM,
// whose stack pointer points into the heap (see runtime/threading.cpp); the other threads
// block these signals.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    // Room for the largest signal frame (AVX-512 and AMX state), with a margin.
    stack_.resize(std::max<size_t>(size_t(sysconf(_SC_SIGSTKSZ)), 1 << 16) * 4);
    stack_t ss{};
    ss.ss_sp = stack_.data();
    ss.ss_size = stack_.size();
    WEFT_ASSERT(sigaltstack(&ss, &old_stack_) == 0, "sigaltstack");
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_ONSTACK | SA_RESETHAND | SA_RESTART;
    sigaction(SIGINT, nullptr, &old_int_);
    // A job started in the background by a shell has SIGINT ignored, so that the terminal's
    // Ctrl-C is not for it; it stays ignored.
    if (old_int_.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaltstack(&old_stack_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int received() const { return int(g_stop_signal); }

 private:
  std::vector<char> stack_;
  stack_t old_stack_{};
  struct sigaction old_int_ {
  }, old_term_{};
};

// Sample grids show this many samples.
constexpr int64_t kGridSamples = 64;

// A loss that grows this many times beyond its first value (or beyond 1 when that is
// smaller) is worth a warning: the run is likely diverging, long before it overflows.
constexpr double kDivergence = 1e6;

}  // namespace

// A rank other than 0 trains its share of each batch and writes nothing: rank 0 keeps the
// folder, the metrics, the grids and the checkpoints. Its collectives come in rank 0's
// order: the session's, rank 0's state after a resume, then per step the stop vote and the
// phases' averages.
static std::unique_ptr<Session> train_as_worker(const Model& m, const SessionOptions& so,
                                                bool resume) {
  auto s = std::make_unique<Session>(m, so);  // takes rank 0's initial state
  if (resume) s->take_state_of_rank0();
  StopSignals stop;
  while (s->step < m.train.steps && !on_any_rank(stop.received())) s->train_step();
  s->stopped_by = stop.received();
  return s;
}

std::unique_ptr<Session> run_training(const Model& m, const SessionOptions& so,
                                      const TrainOptions& to) {
  if (m.train.phases.empty())  // before anything is written
    throw Error(m.file, "/train",
                "the graph has no \"train\" section with phases: nothing to train");
  if (!ranks().root()) return train_as_worker(m, so, to.resume);
  RunFolder folder(to.out_dir, to.resume      ? RunFolder::Mode::resume
                               : to.overwrite ? RunFolder::Mode::overwrite
                                              : RunFolder::Mode::fresh);
  const std::string ckpt = folder.path("checkpoint.safetensors"),
                    metrics = folder.path("metrics.csv");
  // Everything that can fail on the user's input (plans, data, the checkpoint) is done
  // before the first byte is written into the folder.
  auto s = std::make_unique<Session>(m, so);
  for (auto& ph : s->phases) {
    if (!s->reads_data(ph.bound)) continue;
    const Dataset* d = s->dataset(m.data.split);
    if (m.train.batch > d->n)
      throw Error(m.file, "/train/batch",
                  fmt::format("batch {} is larger than the {} split ({} examples)", m.train.batch,
                              m.data.split, d->n));
  }
  if (m.outputs.count("samples"))  // its plan and the test split it may read, now
    s->evaluate("samples", kGridSamples, "test", 0);
  if (to.resume) {
    s->load_checkpoint(ckpt);
    s->take_state_of_rank0();  // the other ranks continue from what rank 0 loaded
  }
  const int64_t steps = m.train.steps, log_every = m.train.log_every,
                sample_every = m.train.sample_every, ckpt_every = m.train.checkpoint_every;

  // Metrics: a resumed run keeps the rows up to its checkpoint.
  std::vector<std::string> names;
  for (auto& ph : s->phases) names.push_back(ph.spec.loss_name);
  for (auto& [name, v] : m.train.log) names.push_back(name);
  for (auto& ph : s->phases) names.push_back("grad_norm." + ph.spec.loss_name);
  std::string header = fmt::format("step,{},samples_per_s", fmt::join(names, ","));
  std::string kept = header + "\n";
  if (to.resume) {
    std::ifstream old(metrics);
    std::string line;
    std::getline(old, line);
    if (old && line != header)  // rows of other columns would make a ragged table
      throw Error(metrics, "line 1",
                  fmt::format("the run's metrics have the columns \"{}\", this graph and weft "
                              "write \"{}\": continue it with the weft that started it, or "
                              "start a new run (--overwrite)",
                              line, header));
    while (std::getline(old, line)) {
      if (line.empty()) continue;
      const std::string first = line.substr(0, line.find(','));
      char* end = nullptr;
      const long long row = std::strtoll(first.c_str(), &end, 10);
      if (end == first.c_str() || *end) continue;  // a torn last row of a killed run
      if (row <= s->step) kept += line + "\n";
    }
  }
  if (to.overwrite) folder.clear_previous_run();
  folder.keep();
  write_atomic(metrics, kept);
  std::ofstream out(metrics, std::ios::app);
  write_sample_inputs(*s, kGridSamples, folder.path("inputs.png"));
  if (to.on_progress) to.on_progress(*s, false);

  const bool tty = isatty(2) && !to.quiet;
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now(), tlast = t0;
  const int64_t start = s->step;
  int64_t since = 0, last_ckpt = to.resume ? s->step : -1;
  double rate = 0;
  std::vector<double> first_loss(s->phases.size(), std::nan(""));
  std::vector<bool> warned(s->phases.size(), false), warned_norm(s->phases.size(), false);
  std::vector<double> first_norm(s->phases.size(), std::nan(""));
  const size_t norms_at = s->phases.size() + m.train.log.size();
  StopSignals stop;
  // Every rank stops after the same step: a stop is voted on (mpirun forwards a signal to
  // every rank, but not necessarily between the same two steps).
  bool stopping = false;
  while (s->step < steps && !(stopping = on_any_rank(stop.received()))) {
    std::vector<double> losses = s->train_step();
    const int64_t st = s->step;
    for (size_t i = 0; i < s->phases.size(); ++i) {
      if (!s->phases[i].spec.active_at(st - 1)) continue;  // outside its steps: no loss
      if (!std::isfinite(losses[i])) {
        out.flush();
        throw Error(
            m.file, s->phases[i].spec.where,
            fmt::format("loss '{}' is {} at step {}; the run stopped. {}Run again with "
                        "--check-numerics to find the first node whose value is not finite.",
                        names[i], losses[i], st,
                        last_ckpt >= 0 ? fmt::format("The checkpoint of step {} in {} is kept. ",
                                                     last_ckpt, ckpt)
                                       : "No checkpoint was written. "));
      }
      if (std::isnan(first_loss[i])) first_loss[i] = losses[i];
      const double bound = kDivergence * std::max(1.0, std::abs(first_loss[i]));
      if (!warned[i] && std::abs(losses[i]) > bound) {
        warned[i] = true;
        s->warnings.push_back(fmt::format(
            "loss '{}' is {:.3g} at step {}, more than {:g} times its first value ({:.3g}): the "
            "run is probably diverging (learning rate too high?)",
            names[i], losses[i], st, kDivergence, first_loss[i]));
        fmt::print(stderr, "{}weft: warning: {}\n", tty ? "\n" : "", s->warnings.back());
      }
      // The gradient norm running away (or vanishing into NaN) warns too, once per phase.
      const double norm = losses[norms_at + i];
      if (std::isnan(first_norm[i]) && std::isfinite(norm) && norm > 0) first_norm[i] = norm;
      if (!warned_norm[i] && std::isfinite(first_norm[i]) &&
          !(norm <= kDivergence * first_norm[i])) {
        warned_norm[i] = true;
        s->warnings.push_back(
            fmt::format("the gradient norm of '{}' is {:.3g} at step {}, more than {:g} times its "
                        "first value ({:.3g}): the run is probably diverging (learning rate too "
                        "high? clip_norm bounds it)",
                        names[i], norm, st, kDivergence, first_norm[i]));
        fmt::print(stderr, "{}weft: warning: {}\n", tty ? "\n" : "", s->warnings.back());
      }
    }
    ++since;
    auto now = clock::now();
    double dt = std::chrono::duration<double>(now - tlast).count();
    if (dt > 0.5 || st == steps) {
      rate = double(since * s->model.train.batch) / dt;
      s->samples_per_s = rate;
      since = 0;
      tlast = now;
    }
    out << st;
    for (size_t i = 0; i < losses.size(); ++i) {
      // A phase outside its steps leaves its field empty.
      const size_t phases = s->phases.size(), first_norm_col = phases + m.train.log.size();
      const bool none =
          (i < phases && !s->phases[i].spec.active_at(st - 1)) ||
          (i >= first_norm_col && !s->phases[i - first_norm_col].spec.active_at(st - 1));
      out << ',';
      if (!none) out << fmt::format("{:.6g}", losses[i]);
    }
    out << ',' << fmt::format("{:.1f}", rate) << '\n';
    out.flush();  // a row per step, so the metrics can be followed as they come (tail -f)
    if (tty || (!to.quiet && (st % log_every == 0 || st == steps))) {
      double elapsed = std::chrono::duration<double>(now - t0).count();
      double eta = double(steps - st) * elapsed / double(std::max<int64_t>(1, st - start));
      std::string line = fmt::format("step {}/{}", st, steps);
      for (size_t i = 0; i < s->phases.size() + m.train.log.size(); ++i)  // not the norms
        if (i >= s->phases.size() || s->phases[i].spec.active_at(st - 1))
          line += fmt::format("  {} {:.4f}", names[i], losses[i]);
      line += fmt::format("  {:.0f} samples/s  ETA {}:{:02d}", rate, int(eta) / 60, int(eta) % 60);
      if (tty)
        fmt::print(stderr, "\r{}\x1b[K", line);
      else
        fmt::print(stderr, "{}\n", line);
    }
    if (st % sample_every == 0 && st != steps && !stop.received()) {
      write_samples(*s, kGridSamples, fmt::format("{}/samples_step{:06d}.png", to.out_dir, st));
      out.flush();
      save_loss_plot(metrics, folder.path("losses.svg"));
    }
    if (st % ckpt_every == 0 && st != steps && !stop.received()) {
      out.flush();
      s->save_checkpoint(ckpt);
      last_ckpt = st;
      if (to.on_progress) to.on_progress(*s, false);
    }
  }
  if (tty) fmt::print(stderr, "\n");
  out.flush();
  s->stopped_by = stop.received() ? stop.received() : stopping ? SIGTERM : 0;
  if (write_samples(*s, kGridSamples, folder.path("samples.png")) && !to.quiet && !s->stopped_by)
    fmt::print("samples: {}/samples.png\n", to.out_dir);
  s->save_checkpoint(ckpt);
  save_loss_plot(metrics, folder.path("losses.svg"));
  if (to.on_progress) to.on_progress(*s, true);
  if (s->stopped_by) {
    fmt::print(stderr,
               "weft: stopped by {} after step {} of {}; the checkpoint and metrics are written "
               "in {}.\nTo continue, run the same command with --resume.\n",
               s->stopped_by == SIGINT ? "SIGINT" : "SIGTERM", s->step, steps, to.out_dir);
  } else if (!to.quiet) {
    fmt::print("checkpoint: {}\nmetrics: {} (plotted in {}/losses.svg)\n", ckpt, metrics,
               to.out_dir);
  }
  return s;
}

}  // namespace weft
