// The runner. Subcommands sit in one table; each is a small function. A user's mistake
// (weft::Error) prints the file, the JSON pointer and what was expected, and exits 2.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "runtime/device.h"
#include "runtime/distributed.h"
#include "runtime/files.h"
#include "runtime/format.h"
#include "runtime/gradcheck.h"
#include "runtime/model.h"
#include "runtime/plugin.h"
#include "runtime/probe.h"
#include "runtime/quality.h"
#include "runtime/threading.h"
#include "runtime/trainer.h"
#include "tools/commands.h"

using namespace weft;

namespace {

std::string g_command_line;  // for the run report

struct Common {
  std::string graph, data;
  std::vector<std::string> plugins;
  int threads = 0;
  bool parallel = false;
  // Unset unless given: the graph's value then stands (apply_overrides decides).
  static constexpr int64_t kUnset = std::numeric_limits<int64_t>::min();
  int64_t seed = kUnset, batch = kUnset;
  std::string precision = "f32";
  std::string device = "cpu";
};

std::optional<int64_t> given(int64_t v) {
  return v == Common::kUnset ? std::nullopt : std::optional<int64_t>(v);
}

void add_plugin_option(CLI::App* c, std::vector<std::string>& plugins) {
  c->add_option("--plugin", plugins,
                "load an op plugin (a shared library); repeatable; WEFT_PLUGIN_PATH lists more");
}

void add_common(CLI::App* c, Common& o, bool graph = true) {
  if (graph) c->add_option("graph", o.graph, "the model's JSON file")->required();
  c->add_option(
      "--data", o.data,
      "folder of Fashion-MNIST's or MNIST's IDX files (default /usr/share/datasets/fashion-mnist)");
  c->add_option("--threads", o.threads, "threads (default: all cores)");
  c->add_flag("--parallel", o.parallel, "run independent steps side by side on TBB");
  c->add_option("--seed", o.seed, "random seed (default: the graph's train.seed)");
  c->add_option("--batch", o.batch, "batch size (default: the graph's train.batch)");
  c->add_option("--precision", o.precision,
                "f32, or bf16: matrix products and convolutions read bf16 inputs and accumulate "
                "in f32 (weights, gradients and optimizer state stay f32)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  c->add_option("--device", o.device,
                "where the plans run and the parameters live: cpu, or a device a loaded plugin "
                "registers (`weft ops` lists them)")
      ->capture_default_str();
  add_plugin_option(c, o.plugins);
}

// Loads the graph and settles, once, every value the command line may override.
Model load(const Common& o, TrainOverrides t = {}) {
  Model m = load_model(o.graph);
  t.batch = given(o.batch);
  t.seed = given(o.seed);
  apply_overrides(m, t);
  return m;
}

SessionOptions session_options(const Common& o) {
  apply_threads({o.threads, o.parallel});
  SessionOptions so;
  so.parallel = o.parallel;
  so.data_dir = o.data;
  so.bf16 = o.precision == "bf16";
  so.device = device_named(o.device);
  if (so.device.kind != 0 && so.bf16)
    throw Error("", "",
                "--precision bf16 is for the CPU's oneDNN kernels; on a plugin device use f32");
  return so;
}

// ---- train --------------------------------------------------------------------------
int cmd_train(const Common& o, const TrainOverrides& t, const TrainOptions& to, bool check_numerics,
              bool sync_batch_norm) {
  // A resumed run continues with the seed and batch it was trained with, unless the
  // command line names them (and then the checkpoint must agree: load_checkpoint says so).
  Common resumed = o;
  const std::filesystem::path ckpt = std::filesystem::path(to.out_dir) / "checkpoint.safetensors";
  std::error_code ec;
  if (to.resume && (o.seed == Common::kUnset || o.batch == Common::kUnset) &&
      std::filesystem::exists(ckpt, ec)) {
    const std::map<std::string, std::string> meta = load_safetensors(ckpt.string()).metadata;
    auto number = [&](const char* key, int64_t& into, int64_t least) {
      const auto it = meta.find(key);
      if (into != Common::kUnset || it == meta.end()) return;
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(it->second.c_str(), &end, 10);
      if (errno == 0 && end && *end == 0 && v >= least) into = v;  // else load_checkpoint's error
    };
    number("seed", resumed.seed, 0);
    number("batch", resumed.batch, 1);
  }
  Model m = load(resumed, t);
  SessionOptions so = session_options(o);
  so.check_numerics = check_numerics;
  so.sync_batch_norm = sync_batch_norm;
  // Its collectives are called from inside the plan: every rank must run it in the same order.
  if (sync_batch_norm && so.parallel)
    throw Error("--sync-batch-norm runs each plan in order on every rank; leave out --parallel");
  if (sync_batch_norm && so.device.kind != 0)
    throw Error("--sync-batch-norm is for the CPU's kernels; a plugin device has its own");
  TrainOptions with_report = to;
  json run = {{"graph", o.graph},
              {"name", m.name},
              {"command", g_command_line},
              {"seed", m.train.seed},
              {"batch", m.train.batch},
              {"steps", m.train.steps},
              {"threads", o.threads > 0 ? o.threads : usable_cores()},
              {"device", o.device},
              {"ranks", ranks().size},
              {"version", WEFT_VERSION},
              {"finished", false}};
  if (!m.doc.empty()) run["doc"] = m.doc;
  for (auto& ph : m.train.phases) run["losses"].push_back(ph.loss_name);
  const auto started = std::chrono::steady_clock::now();
  const std::string dir = to.out_dir;
  bool reported = false;
  auto report = [&, dir] {
    write_atomic(dir + "/run.json", run.dump(2) + "\n");
    write_report(dir);
  };
  with_report.on_progress = [&](const Session& s, bool finished) {
    if (!reported) {  // the first time: the folder exists now
      const std::time_t now = std::time(nullptr);
      char when[64];
      std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
      run["started"] = when;
      if (dot_can_render())
        write_atomic(dir + "/graph.svg", render_svg(graph_to_dot(m, so, "", false, false)));
      else
        run["graph_drawing"] =
            "weft was built without Graphviz's library (libgraphviz-dev), so the report has no "
            "drawing of the graph; `weft dot GRAPH | dot -Tsvg` draws it.";
      reported = true;
    }
    run["step"] = s.step;
    run["finished"] = finished;
    run["stopped"] = s.stopped_by == SIGINT ? "SIGINT" : s.stopped_by ? "SIGTERM" : "";
    run["wall_seconds"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    run["samples_per_s"] = std::round(s.samples_per_s);
    run["warnings"] = s.warnings;
    report();
  };
  try {
    auto s = run_training(m, so, with_report);
    return s->stopped_by ? 128 + s->stopped_by : 0;  // the shell's convention for a signal
  } catch (const Error& e) {
    if (reported) {  // the run had started: its report says how it ended
      run["error"] = e.what();
      run["finished"] = true;
      report();
    }
    throw;
  }
}

// ---- check --------------------------------------------------------------------------
std::string source_str(const ModelInput& in) {
  if (in.source == "normal") return fmt::format("normal(mean {}, std {})", in.a, in.b);
  if (in.source == "uniform") return fmt::format("uniform({}, {})", in.a, in.b);
  return in.source;
}

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v), r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) r += ',';
    r += s[i];
  }
  return r;
}

int cmd_check(const Common& o) {
  Model m = load(o);
  // The training plans are compiled before anything is printed: a graph that loads but
  // cannot be planned (or would not fit in memory) is not valid.
  std::unique_ptr<Session> s;
  if (!m.train.phases.empty()) s = std::make_unique<Session>(m, session_options(o));
  fmt::print("{}: graph \"{}\" is valid\n\ninputs\n", o.graph, m.name);
  for (auto& in : m.inputs)
    fmt::print("  {:<24} {:<16} {}\n", in.name, shape_str(in.shape), source_str(in));
  fmt::print("\nnodes\n");
  for (auto& n : m.graph.nodes) {
    if (n.def->is_source) continue;
    std::vector<std::string> shapes;
    for (auto& shape : n.shapes) shapes.push_back(shape_str(shape));
    fmt::print("  {:<32} {:<18} {}\n", n.name, n.op(), fmt::join(shapes, " "));
  }
  // Trainable parameters apart from state the optimizers never touch (batch norm's running
  // statistics), as Keras and PyTorch summaries count them.
  struct Count {
    int64_t trainable = 0, state = 0;
    int tensors = 0;
  };
  std::map<std::string, Count> per_net;
  Count total;
  for (auto& p : m.params) {
    int64_t n = numel(bind_batch(p.shape, 1));
    for (Count* c : {&per_net[p.net.empty() ? "(free)" : p.net], &total}) {
      (p.trainable ? c->trainable : c->state) += n;
      c->tensors++;
    }
  }
  fmt::print("\nparameters\n  {:<12} {:>12} {:>14} {:>8}\n", "net", "trainable", "non-trainable",
             "tensors");
  for (auto& [net, c] : per_net)
    fmt::print("  {:<12} {:>12} {:>14} {:>8}\n", net, with_commas(c.trainable),
               with_commas(c.state), c.tensors);
  fmt::print("  {:<12} {:>12} {:>14} {:>8}\n", "total", with_commas(total.trainable),
             with_commas(total.state), total.tensors);
  if (s) {
    fmt::print("\ntraining step at batch {} (forward + backward, after fusion)\n",
               s->model.train.batch);
    double all = 0;
    for (auto& ph : s->phases) {
      double f = 0;
      for (auto& st : ph.bound.plan->steps) f += st.flops;
      f *= ph.spec.repeat;
      all += f;
      fmt::print(
          "  minimize {:<16} {:>10.2f} MFLOP  ({} steps, {} fused, {:.1f} MiB buffers, {:.1f} MiB "
          "without reuse)\n",
          ph.spec.loss_name, f / 1e6, ph.bound.plan->steps.size(), ph.bound.plan->fusions,
          double(ph.bound.plan->buffer_bytes) / (1 << 20),
          double(ph.bound.plan->naive_bytes) / (1 << 20));
    }
    fmt::print("  {:<25} {:>10.2f} MFLOP\n", "total", all / 1e6);
    // What each rank sends to the allreduce per step under mpirun: every phase's gradients,
    // loss and logged values, once per run of the phase.
    double reduced = 0;
    for (auto& ph : s->phases)
      for (size_t t = 0; t < ph.bound.plan->targets.size(); ++t)
        reduced += double(ph.spec.repeat) * double(ph.bound.plan->target(t).bytes());
    fmt::print("  allreduced per step under mpirun: {:.2f} MiB\n", reduced / (1 << 20));
    // Where each step runs: a plan is placed whole on one device, so copies happen only at
    // its edges (the inputs in, the logged scalars out).
    fmt::print(
        "\nplacement on {} (a plan runs wholly on one device; WEFT_VERBOSE=dispatch "
        "names each node's kernel)\n",
        device_name(s->opt.device));
    for (auto& ph : s->phases) {
      std::map<std::string, int> kernels;
      for (auto& st : ph.bound.plan->steps) kernels[st.kernel_name]++;
      std::vector<std::string> parts;
      for (auto& [k, n] : kernels) parts.push_back(fmt::format("{} {}", k, n));
      fmt::print("  minimize {:<16} kernels: {}\n", ph.spec.loss_name, fmt::join(parts, ", "));
      if (s->opt.device.kind == 0) continue;
      std::vector<std::string> copied, drawn;
      for (auto& name : ph.bound.used)
        (ph.bound.noise.count(name) ? drawn : copied).push_back(name);
      fmt::print(
          "  {:<25} copies in per run: {}; drawn there: {}; out per step: the loss, logged "
          "values and gradient norm\n",
          "", copied.empty() ? "nothing" : fmt::format("{}", fmt::join(copied, ", ")),
          drawn.empty() ? "nothing" : fmt::format("{}", fmt::join(drawn, ", ")));
    }
  }
  return 0;
}

// ---- ops ----------------------------------------------------------------------------
int cmd_ops(bool all) {
  for (const OpDef* d : Registry::get().all()) {
    if (d->is_source || (!all && !d->internal_why.empty())) continue;
    std::set<std::string> ks;
    for (auto& k : d->kernel_list)
      ks.insert(k.device_kind == 0 ? fmt::format("{}/{}", k.name, dtype_name(k.dtype))
                                   : fmt::format("{}/{} on {}", k.name, dtype_name(k.dtype),
                                                 device_name(Device{k.device_kind, 0})));
    std::string kind = d->expansion ? "composite" : d->grad_rule ? "differentiable" : "no gradient";
    std::string origin = d->origin_name;
    for (auto& p : loaded_plugins())
      if (origin == "plugin " + p.name) origin += " " + p.version + ", " + p.path;
    fmt::print("{}  [{}; {}]\n    {}\n", op_signature(*d), origin, kind, d->docs);
    for (auto& a : d->attrs)
      fmt::print("    {} ({}{}): {}\n", a.name, attr_type_name(a.type),
                 a.required                  ? ", required"
                 : a.default_value.is_null() ? ""
                                             : ", default " + a.default_value.dump(),
                 a.doc);
    if (!ks.empty()) fmt::print("    kernels: {}\n", fmt::join(ks, ", "));
    if (!d->internal_why.empty()) fmt::print("    internal: {}\n", d->internal_why);
  }
  fmt::print("\ndevices (--device): cpu (built in)");
  for (const DeviceDef& d : devices()) fmt::print(", {} (plugin {})", d.name, d.plugin);
  fmt::print("\n");
  return 0;
}

// ---- sample / encode ----------------------------------------------------------------
int cmd_sample(const Common& o, const std::string& ckpt, int64_t n, const std::string& png,
               const std::string& npy, const std::string& output, bool normalize, int cls) {
  if (png.empty() && npy.empty())
    throw Error("weft sample writes nothing without --out grid.png or --npy FILE");
  if (n <= 0) throw Error(fmt::format("--n: expected a positive number of samples, got {}", n));
  Model m = load(o);
  Session s(m, session_options(o));
  if (!m.outputs.count(output))
    throw Error(o.graph, "/outputs", fmt::format("the graph names no \"{}\" output", output));
  if (cls != -1 && !s.output_reads_labels(output))
    throw Error(o.graph, "/outputs/" + output,
                fmt::format("--class {}: the {} output reads no class label (data.labels or "
                            "data.onehot), so it cannot be asked for one",
                            cls, output));
  if (cls != -1 && is_mixture(m.data.dataset))
    throw Error(o.graph, "/data/dataset",
                "--class asks an image generator for a Fashion-MNIST class; this graph draws "
                "2-D points");
  if (cls < -1 || cls > 9)
    throw Error(fmt::format("--class: expected a class from 0 to 9, got {}", cls));
  s.load_checkpoint(ckpt, false);
  if (!png.empty() && !write_samples(s, n, png, output, normalize, cls))
    throw Error(o.graph, "/outputs/" + output,
                fmt::format("the {} output is not image-shaped (n x h x w, h = w)", output));
  std::vector<uint8_t> classes(size_t(n), uint8_t(std::max(cls, 0)));
  if (!npy.empty())
    save_npy(npy, s.evaluate_values({m.outputs.at(output)}, n, "test", 0, 0,
                                    cls >= 0 ? &classes : nullptr)[0]);
  if (!png.empty()) fmt::print("{}: {}\n", output, png);
  if (!npy.empty()) fmt::print("array: {}\n", npy);
  return 0;
}

// Where `weft encode` puts the labels of FEATS.npy, and `weft probe` finds them.
std::string labels_path(const std::string& features) {
  const bool npy = features.size() > 4 && features.substr(features.size() - 4) == ".npy";
  return (npy ? features.substr(0, features.size() - 4) : features) + ".labels.npy";
}

int cmd_encode(const Common& o, const std::string& ckpt, const std::string& out,
               const std::string& output, const std::string& split) {
  Model m = load(o);
  Session s(m, session_options(o));
  s.load_checkpoint(ckpt, false);
  const Dataset* d = s.dataset(split);
  const int64_t chunk = 500;
  std::vector<Tensor> parts;
  int64_t per = -1;
  for (int64_t first = 0; first < d->n; first += chunk) {
    int64_t n = std::min(chunk, d->n - first);
    Tensor t = s.evaluate(output, n, split, first);
    per = t.numel() / n;
    parts.push_back(t.to(DType::f32));
  }
  Tensor all(DType::f32, {d->n, per});
  int64_t at = 0;
  for (auto& p : parts) {
    std::memcpy(all.data<float>() + at, p.raw(), p.bytes());
    at += p.numel();
  }
  const std::string labels = labels_path(out);
  save_npy(out, all);
  save_npy_u8(labels, d->labels, {d->n});
  fmt::print("features: {} ({} x {})\nlabels: {}\n", out, d->n, per, labels);
  return 0;
}

// ---- eval --------------------------------------------------------------------------
// Every phase's loss and every train.log value, averaged over a whole split in inference
// mode (batch norm by its running statistics, no dropout), in batches of the training size
// so that batch statistics (a sparsity penalty's mean activation) mean what they meant in
// training. Each batch draws its own fixed noise. An autoencoder's reconstructions (the
// "reconstructions" output, or a "samples" output computed from the data, one value per
// pixel) are also scored against the images and drawn beside them; a generator's samples
// are drawn as a grid. The table goes to stdout and, as JSON, beside the checkpoint.
// Generated images measured by a classifier of real ones (graphs/fmnist_classifier.json):
// its penultimate features ("features") of 10,000 samples against those of the 10,000 test
// images (a Frechet distance), and its classes ("logits") of the samples. A conditional
// generator is asked for each class in turn. A generator of images larger than the
// classifier's (the source articles pad 28x28 to 32x32 in their graphs) is measured on the
// centre its graph padded, when the user names that border with --crop: the inverse of the
// data's padding, not a resampling.
struct Classifier {
  std::string graph, checkpoint;
  int crop = 0;  // pixels removed from each side of a sample before it is classified
};

json sample_quality(Session& gen, const Common& o, const Classifier& c) {
  const Model& gm = gen.model;
  if (!gm.outputs.count("samples"))
    throw Error(o.graph, "/outputs", "--classifier measures samples: the graph has no \"samples\"");
  const Model cm = load_model(c.graph);
  for (const char* out : {"features", "logits"})
    if (!cm.outputs.count(out))
      throw Error(c.graph, "/outputs",
                  fmt::format("a classifier for --classifier names \"{}\" among its outputs", out));
  SessionOptions so = session_options(o);
  // The yardstick measures on the CPU in f32, whatever device and precision made the samples.
  so.bf16 = false;
  so.device = Device::cpu();
  Session cs(cm, so);
  cs.load_checkpoint(c.checkpoint, false);
  const Dataset* test = cs.dataset("test");
  const int64_t n = test->n, chunk = 500;
  const bool conditional = gen.output_reads_labels("samples");
  Dataset made;
  made.split = "generated";
  made.n = n;
  made.rows = test->rows;
  made.cols = test->cols;
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t k = std::min(chunk, n - first);
    std::vector<uint8_t> classes;
    for (int64_t i = 0; i < k; ++i) classes.push_back(uint8_t((first + i) % 10));
    // Fresh noise for every chunk, apart from the streams eval's other passes use.
    const Tensor t = gen.evaluate_values({gm.outputs.at("samples")}, k, "test", first,
                                         uint64_t(1 << 20) + uint64_t(first / chunk),
                                         conditional ? &classes : nullptr)[0]
                         .to(DType::f64);
    // One channel of h x w: the last two dimensions of an image output, or a square for a
    // flat one (an MLP generator's rows of pixels).
    const Dims& sh = t.shape();
    const int64_t per = t.numel() / k, b = c.crop;
    int64_t h = sh.size() >= 3 ? sh[sh.size() - 2] : std::llround(std::sqrt(double(per)));
    int64_t w = sh.size() >= 3 ? sh.back() : h;
    if (h * w != per) h = w = 0;  // several channels, or a flat output that is not square
    if (h - 2 * b != test->rows || w - 2 * b != test->cols)
      throw Error(
          o.graph, "/outputs/samples",
          fmt::format(
              "--classifier reads {}x{} images; the samples are {}{}", test->rows, test->cols,
              h ? fmt::format("{}x{}", h, w) : fmt::format("{} values", per),
              b && h ? fmt::format(", {}x{} after --crop {}", h - 2 * b, w - 2 * b, b)
              : h > test->rows && (h - test->rows) % 2 == 0 && w - test->cols == h - test->rows
                  ? fmt::format(" (--crop {} measures their centre)", (h - test->rows) / 2)
                  : ""));
    const double* d = t.data<double>();
    for (int64_t i = 0; i < k; ++i)
      for (int64_t y = b; y < h - b; ++y)
        for (int64_t x = b; x < w - b; ++x) {  // as a PNG would store them
          const double p = d[i * per + y * w + x];
          if (!std::isfinite(p))
            throw Error(o.graph, "/outputs/samples",
                        fmt::format("sample {} holds {}: the generator's output is not finite",
                                    first + i, p));
          const double v = (p - gm.data.low) / (gm.data.high - gm.data.low);
          made.images.push_back(uint8_t(std::lround(255 * std::clamp(v, 0.0, 1.0))));
        }
    for (uint8_t cl : classes) made.labels.push_back(conditional ? cl : 0);
  }
  const std::vector<uint8_t> asked = made.labels;
  cs.use_dataset("generated", std::move(made));
  const ValueId feats = cm.outputs.at("features"), logits = cm.outputs.at("logits");
  int64_t width = 0;
  auto run = [&](const std::string& split, int64_t count, std::vector<float>& f,
                 std::vector<float>* l) {
    for (int64_t first = 0; first < count; first += chunk) {
      const int64_t k = std::min(chunk, count - first);
      const std::vector<Tensor> t = cs.evaluate_values({feats, logits}, k, split, first);
      const Tensor a = t[0].to(DType::f32), b = t[1].to(DType::f32);
      width = a.numel() / k;
      f.insert(f.end(), a.data<float>(), a.data<float>() + a.numel());
      if (l) l->insert(l->end(), b.data<float>(), b.data<float>() + b.numel());
    }
  };
  std::vector<float> fg, lg, fr, ft;
  run("generated", n, fg, &lg);
  run("test", n, fr, nullptr);
  run("train", n, ft, nullptr);  // real against real: the distance's floor at this size
  std::vector<int> asked_int;
  if (conditional) asked_int.assign(asked.begin(), asked.end());
  const ClassStats cl = class_stats(lg, n, int64_t(lg.size()) / n, asked_int);
  json q = {{"classifier", c.graph},
            {"classifier_checkpoint", c.checkpoint},
            {"crop", c.crop},
            {"samples", n},
            {"frechet_distance", frechet_distance(fg, n, fr, n, width)},
            {"frechet_distance_train_vs_test", frechet_distance(ft, n, fr, n, width)},
            {"class_histogram", cl.histogram},
            {"classes_covered", cl.covered},
            {"inception_score", cl.inception_score}};
  if (conditional) q["asked_class_accuracy"] = cl.asked;
  return q;
}

int cmd_eval(const Common& o, const std::string& ckpt, const std::string& split,
             const Classifier& classifier) {
  Model m = load(o);
  Session s(m, session_options(o));
  s.load_checkpoint(ckpt, false);
  std::vector<std::string> names;
  std::vector<ValueId> values;
  for (auto& ph : m.train.phases)
    if (std::find(names.begin(), names.end(), ph.loss_name) == names.end()) {
      names.push_back(ph.loss_name);
      values.push_back(ph.loss);
    }
  for (auto& [name, v] : m.train.log) {
    names.push_back(name);
    values.push_back(v);
  }
  if (values.empty()) throw Error(o.graph, "/train", "nothing to evaluate: no phases and no log");
  const Dataset* d = s.dataset(split);
  const int64_t batch = m.train.batch, batches = d->n / batch, used = batches * batch;
  if (batches == 0)
    throw Error(
        o.graph, "/train/batch",
        fmt::format("batch {} is larger than the {} split ({} examples)", batch, split, d->n));
  // The reconstructions: the "reconstructions" output, else "samples" when it is one. They
  // are computed in the same pass as the values, by the same plan.
  const int64_t pixels = d->rows * d->cols;
  auto reconstructs = [&](const std::string& name) {
    auto it = m.outputs.find(name);
    if (it == m.outputs.end()) return false;
    const Shape shape = s.model.graph.shape(it->second);
    const Dim per = shape_numel(Shape(shape.begin() + 1, shape.end()));
    return !per.batch && per.n == pixels && s.output_reads_data(name);
  };
  const std::string rec = reconstructs("reconstructions") ? "reconstructions"
                          : reconstructs("samples")       ? "samples"
                                                          : "";
  std::vector<ValueId> targets = values;
  if (!rec.empty()) targets.push_back(m.outputs.at(rec));
  std::vector<double> sum(values.size(), 0.0);
  double se = 0;  // the reconstructions' squared error, summed over pixels and images
  Tensor x(DType::f64, {batch, pixels});
  std::vector<int64_t> idx(size_t(batch), 0);
  for (int64_t k = 0; k < batches; ++k) {
    std::vector<Tensor> t = s.evaluate_values(targets, batch, split, k * batch, uint64_t(k));
    for (size_t i = 0; i < values.size(); ++i) sum[i] += t[i].to(DType::f64).data<double>()[0];
    if (rec.empty()) continue;
    const Tensor r = t.back().to(DType::f64);
    for (int64_t i = 0; i < batch; ++i) idx[size_t(i)] = k * batch + i;
    fill_images(*d, idx, x, m.data.low, m.data.high);
    for (int64_t i = 0; i < batch * pixels; ++i) {
      const double e = r.data<double>()[i] - x.data<double>()[i];
      se += e * e;
    }
  }
  json report = {{"graph", m.name},  {"file", o.graph}, {"checkpoint", ckpt},      {"split", split},
                 {"examples", used}, {"batch", batch},  {"values", json::object()}};
  for (size_t i = 0; i < names.size(); ++i) report["values"][names[i]] = sum[i] / double(batches);

  const std::string dir = std::filesystem::path(ckpt).parent_path().string();
  auto beside = [&](const std::string& name) { return (dir.empty() ? "" : dir + "/") + name; };
  if (!rec.empty()) {
    // The squared error per image, summed over its pixels, in the data's range; and the
    // first 32 test images, each followed by its reconstruction.
    report["reconstruction_error"] = se / double(used);
    const int64_t pairs = std::min<int64_t>(32, d->n);
    Tensor r = s.evaluate(rec, pairs, split, 0).to(DType::f64);
    Tensor both(DType::f64, {2 * pairs, pixels});
    std::vector<int64_t> first(static_cast<size_t>(pairs));
    for (int64_t i = 0; i < pairs; ++i) first[size_t(i)] = i;
    Tensor xs(DType::f64, {pairs, pixels});
    fill_images(*d, first, xs, m.data.low, m.data.high);
    for (int64_t i = 0; i < pairs; ++i) {
      std::memcpy(both.data<double>() + 2 * i * pixels, xs.data<double>() + i * pixels,
                  size_t(pixels) * sizeof(double));
      std::memcpy(both.data<double>() + (2 * i + 1) * pixels, r.data<double>() + i * pixels,
                  size_t(pixels) * sizeof(double));
    }
    const std::string png = beside(fmt::format("eval_{}_reconstructions.png", split));
    save_png_grid(png, both, d->rows, d->cols, m.data.low, m.data.high);
    report["reconstructions_png"] = png;
  }
  // A 2-D mixture's samples: how many modes they cover and how many are of high quality,
  // from 2,500 samples as VEEGAN and PacGAN count, drawn over the modes.
  const int64_t kModeSamples = 2500;
  if (is_mixture(m.data.dataset) && m.outputs.count("samples")) {
    const Tensor xy = s.evaluate("samples", kModeSamples, split, 0).to(DType::f32);
    if (xy.numel() != 2 * kModeSamples)
      throw Error(o.graph, "/outputs/samples", "expected 2-D points (x, y) as the samples");
    const ModeCoverage c = count_modes(*d, xy.data<float>(), kModeSamples);
    report["modes"] = {{"samples", kModeSamples},
                       {"modes", c.modes},
                       {"covered", c.covered},
                       {"high_quality", c.high_quality},
                       {"per_mode", c.per_mode}};
  }
  const int64_t shown = is_mixture(m.data.dataset) ? kModeSamples : 64;
  if (m.outputs.count("samples") && rec != "samples" &&
      write_samples(s, shown, beside("eval_samples.png")))
    report["samples_png"] = beside("eval_samples.png");
  if (!classifier.checkpoint.empty()) report["quality"] = sample_quality(s, o, classifier);
  const std::string out = beside(fmt::format("eval_{}.json", split));
  write_atomic(out, report.dump(2) + "\n");
  // The numbers again, one line per evaluation, by the checkpoint's step: the run report
  // draws them over the run.
  json line = {{"step", s.step}, {"split", split}};
  for (auto& [k, v] : report.items()) {
    if (v.is_number() && k != "batch" && k != "examples") line[k] = v;
    if (v.is_object())
      for (auto& [k2, v2] : v.items())
        if (v2.is_number()) line[k + "." + k2] = v2;
  }
  std::ofstream(beside("eval_history.jsonl"), std::ios::app) << line.dump() << "\n";
  // In a run folder, the run's report shows them.
  const std::filesystem::path folder = std::filesystem::path(beside("x")).parent_path();
  if (std::filesystem::exists(folder / "metrics.csv")) write_report(folder.string());

  fmt::print("{} split: {} batches of {} ({} examples{})\n", split, batches, batch, used,
             d->n % batch ? fmt::format("; the last {} left out", d->n % batch) : std::string());
  size_t width = std::string("reconstruction_error").size();
  for (auto& nm : names) width = std::max(width, nm.size());
  for (size_t i = 0; i < names.size(); ++i)
    fmt::print("{:<{}}  {:.6g}\n", names[i], width, sum[i] / double(batches));
  if (report.contains("reconstruction_error"))
    fmt::print("{:<{}}  {:.6g}  (squared error per image, summed over its pixels)\n",
               "reconstruction_error", width, report["reconstruction_error"].get<double>());
  if (report.contains("modes")) {
    const json& c = report["modes"];
    fmt::print("{:<{}}  {} of {}  (a high-quality sample nearest; from {} samples)\n",
               "modes_covered", width, c["covered"].get<int>(), c["modes"].get<int>(),
               kModeSamples);
    fmt::print("{:<{}}  {:.4f}  (within 3 standard deviations of a mode)\n", "high_quality", width,
               c["high_quality"].get<double>());
  }
  if (report.contains("quality")) {
    const json& q = report["quality"];
    fmt::print("samples measured by {} ({} samples, {} test images):\n",
               q["classifier"].get<std::string>(), q["samples"].get<int64_t>(),
               q["samples"].get<int64_t>());
    fmt::print(
        "  frechet_distance     {:.3f}  (real training images against the test images: {:.3f})\n",
        q["frechet_distance"].get<double>(), q["frechet_distance_train_vs_test"].get<double>());
    fmt::print("  classes_covered      {} of 10  (a class holds at least 5% of the samples)\n",
               q["classes_covered"].get<int>());
    fmt::print("  class_histogram      {}\n", q["class_histogram"].dump());
    fmt::print("  inception_score      {:.3f}  (10 is the most for 10 classes)\n",
               q["inception_score"].get<double>());
    if (q.contains("asked_class_accuracy"))
      fmt::print(
          "  asked_class_accuracy {:.4f}  (samples classified as the class they were asked for)\n",
          q["asked_class_accuracy"].get<double>());
  }
  for (const char* k : {"reconstructions_png", "samples_png"})
    if (report.contains(k)) fmt::print("picture: {}\n", report[k].get<std::string>());
  fmt::print("report: {}\n", out);
  return 0;
}

// ---- gradcheck ----------------------------------------------------------------------
// ---- probe --------------------------------------------------------------------------
// A representation's worth by one fixed recipe: a linear probe trained on the training
// split's features and scored on the test split's, and k-means on the test features.
Features read_features(const std::string& path) {
  Dims shape, lshape;
  const std::vector<double> x = load_npy(path, shape);
  if (shape.size() < 2 || shape[0] == 0)
    throw Error(path, "", "expected features of shape [examples, ...], got " + dims_str(shape));
  const std::string labels = labels_path(path);
  const std::vector<double> l = load_npy(labels, lshape);
  if (lshape != Dims{shape[0]})
    throw Error(labels, "",
                fmt::format("expected {} labels (one per row of {}), got shape {}", shape[0], path,
                            dims_str(lshape)));
  Features f;
  f.n = shape[0];
  f.d = int64_t(x.size()) / f.n;
  if (f.d == 0) throw Error(path, "", "expected at least one feature per example, got none");
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]))
      throw Error(
          path, fmt::format("row {}", int64_t(i) / f.d),
          fmt::format("feature {} is {}: a probe needs finite features", int64_t(i) % f.d, x[i]));
  f.x.assign(x.begin(), x.end());
  for (double v : l) {
    if (v != std::floor(v) || v < 0 || v > 9)
      throw Error(labels, "", fmt::format("expected class labels 0 to 9, found {}", v));
    f.labels.push_back(int(v));
  }
  return f;
}

Features pixel_features(const std::string& dir, const std::string& split) {
  const Dataset d = load_fashion_mnist(dir.empty() ? default_data_dir() : dir, split);
  Features f;
  f.n = d.n;
  f.d = d.rows * d.cols;
  f.x.resize(d.images.size());
  for (size_t i = 0; i < d.images.size(); ++i) f.x[i] = float(d.images[i]) / 255.0f;
  f.labels.assign(d.labels.begin(), d.labels.end());
  return f;
}

int cmd_probe(const Common& o, const std::vector<std::string>& files, bool pixels,
              const ProbeOptions& po, const std::string& out) {
  if (pixels != files.empty())
    throw Error(
        "weft probe takes TRAIN.npy TEST.npy (from weft encode --split train/test), or "
        "--pixels");
  if (!pixels && files.size() != 2)
    throw Error(fmt::format("weft probe takes two feature files, TRAIN.npy TEST.npy; got {}",
                            files.size()));
  if (po.epochs <= 0)
    throw Error(fmt::format("--epochs: expected a positive number, got {}", po.epochs));
  apply_threads({o.threads, false});
  Features train = pixels ? pixel_features(o.data, "train") : read_features(files[0]);
  Features test = pixels ? pixel_features(o.data, "test") : read_features(files[1]);
  if (train.d != test.d)
    throw Error(files[1], "",
                fmt::format("{} values per example, but the training features ({}) have {}", test.d,
                            files[0], train.d));
  standardize(train, test);
  const ProbeResult p = linear_probe(train, test, 10, po);
  const KMeansResult km = kmeans(test, 10, 4, po.seed);
  const double nmi = normalized_mutual_information(test.labels, km.assignment);
  const std::string what = pixels ? "raw pixels" : files[1];
  fmt::print("{}: {} features\n", what, test.d);
  fmt::print(
      "  linear probe ({} epochs)   test accuracy {:.2f}%  (train {:.2f}%, test loss {:.4f})\n",
      po.epochs, 100 * p.test_accuracy, 100 * p.train_accuracy, p.test_loss);
  fmt::print("  k-means, 10 clusters      NMI {:.4f}  ({} iterations)\n", nmi, km.iterations);
  if (!out.empty()) {
    json r = {{"features", pixels ? json("pixels") : json(files)},
              {"dimensions", test.d},
              {"probe",
               {{"epochs", po.epochs},
                {"test_accuracy", p.test_accuracy},
                {"train_accuracy", p.train_accuracy},
                {"test_loss", p.test_loss}}},
              {"kmeans", {{"clusters", 10}, {"nmi", nmi}, {"inertia", km.inertia}}}};
    write_atomic(out, r.dump(2) + "\n");
    fmt::print("report: {}\n", out);
  }
  return 0;
}

// Every op with a kernel on `device` (or the one named) against the f64 reference on the CPU.
int cmd_device_check(const std::string& op, const std::string& device_name_given) {
  const Device dev = device_named(device_name_given);
  if (dev.kind == 0)
    throw Error("--device checks a plugin device's kernels; the CPU's are checked without it");
  std::vector<const OpDef*> ops;
  if (!op.empty()) {
    const OpDef* d = Registry::get().find(op);
    if (!d) throw Error("", "", fmt::format("unknown op '{}' (weft ops lists them)", op));
    if (!has_kernel(*d, dev, DType::f32))
      throw Error("", "", fmt::format("op {} has no f32 kernel on {}", op, device_name(dev)));
    ops.push_back(d);
  } else {
    for (const OpDef* d : Registry::get().all())
      if (has_kernel(*d, dev, DType::f32)) ops.push_back(d);
  }
  int failed = 0, checked = 0, declined = 0, untested = 0;
  for (const OpDef* d : ops) {
    if (!d->test_spec) {
      if (d->internal_why != "run by the trainer's optimizers" &&
          d->internal_why != "drawn by the trainer for a noise input") {
        fmt::print("--   {}: no test spec to draw inputs from\n", d->name);
        ++untested;
      }
      continue;
    }
    for (auto& r : check_device(*d, dev)) {
      ++checked;
      if (!r.declined.empty()) {
        ++declined;
        fmt::print("--   {} {}: declined: {}\n", d->name, r.what, r.declined);
      } else if (!r.problem.empty()) {
        ++failed;
        fmt::print("FAIL {} {}: {}\n", d->name, r.what, r.problem);
      } else {
        failed += !r.ok();
        fmt::print("{:<4} {} {}: worst relative error {:.2e} (tolerance {:.0e})\n",
                   r.ok() ? "ok" : "FAIL", d->name, r.what, r.worst, r.tolerance);
      }
    }
  }
  // The optimizers' updates and the noise draws have no graph to test them in: the trainer's
  // own use of them is checked instead.
  for (auto& r : check_device_trainer_ops(dev)) {
    if (!op.empty() && r.op != op) continue;
    ++checked;
    failed += !r.ok();
    fmt::print("{:<4} {} {}: worst relative error {:.2e} (tolerance {:.0e})\n",
               r.ok() ? "ok" : "FAIL", r.op, r.what, r.worst, r.tolerance);
  }
  fmt::print("{} cases of {} ops on {}: {} failed, {} declined; {} ops without a test spec\n",
             checked, ops.size(), device_name(dev), failed, declined, untested);
  return failed ? 1 : 0;
}

int cmd_gradcheck(const std::string& op, const std::vector<std::string>& shapes) {
  const OpDef* d = Registry::get().find(op);
  if (!d) throw Error("", "", fmt::format("unknown op '{}' (weft ops lists them)", op));
  if (!d->test_spec)
    throw Error("", "", fmt::format("op {} has no test spec to draw inputs from", op));
  std::vector<Dims> dims;
  for (auto& s : shapes) {
    Dims x;
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, ',')) {
      int64_t v = 0;
      auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
      if (ec != std::errc() || end != part.data() + part.size() || v <= 0 || v > 4096)
        throw Error(
            fmt::format("--shape {}: expected positive sizes up to 4096 separated by "
                        "commas, like 4,7",
                        s));
      x.push_back(v);
    }
    dims.push_back(x);
  }
  bool ok = true;
  for (auto& r : check_gradients(*d, dims)) {
    std::vector<std::string> e;
    for (double v : r.per_input) e.push_back(fmt::format("{:.2e}", v));
    fmt::print("{:<4} {} {}: worst relative error per input [{}] (tolerance {:.0e})\n",
               r.ok() ? "ok" : "FAIL", op, r.what, fmt::join(e, ", "), r.tolerance);
    ok = ok && r.ok();
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Before OpenMP starts (runtime/threading.h); only the commands that train or run a model.
  const std::set<std::string> computes = {"train", "bench", "sample", "encode", "eval", "probe"};
  if (argc > 1 && computes.count(argv[1])) choose_openmp_wait_policy(argv);
  start_ranks(&argc, &argv);  // under mpirun (runtime/distributed.h)
  for (int i = 0; i < argc; ++i) g_command_line += (i ? " " : "") + std::string(argv[i]);
  CLI::App app{"weft: train generative models written as JSON graphs"};
  app.require_subcommand(1);
  Common o;
  TrainOptions to;
  TrainOverrides overrides;
  std::string ckpt, out, npy, output = "features", split = "test", op;
  int64_t n = 64, steps = 20, warmup = 3;
  bool all_ops = false;
  std::vector<std::string> shapes;

  std::map<std::string, std::function<int()>> table;
  auto* train = app.add_subcommand("train", "train a graph on its data");
  add_common(train, o);
  train->add_option("--steps", overrides.steps, "train up to this many steps in total");
  train->add_option("--out", to.out_dir, "run folder: metrics, samples, checkpoint")
      ->capture_default_str();
  train->add_flag("--resume", to.resume, "continue from the run folder's checkpoint");
  train->add_flag("--overwrite", to.overwrite, "replace the run already in the run folder")
      ->excludes(train->get_option("--resume"));
  bool sync_batch_norm = false;
  train->add_flag("--sync-batch-norm", sync_batch_norm,
                  "under mpirun: batch norm's statistics over the whole batch (every rank's "
                  "shard), not each rank's own");
  bool check_numerics = false;
  train->add_flag("--check-numerics", check_numerics,
                  "check every node's output for NaN and Inf; name the first that is not finite");
  train->add_option("--sample-every", overrides.sample_every, "write a sample grid every N steps");
  train->add_option("--checkpoint-every", overrides.checkpoint_every,
                    "write a checkpoint every N steps");
  train->add_option("--log-every", overrides.log_every,
                    "print progress every N steps (when not a terminal)");
  train->add_flag("--quiet", to.quiet, "print nothing but errors");
  table["train"] = [&] { return cmd_train(o, overrides, to, check_numerics, sync_batch_norm); };

  auto* check = app.add_subcommand("check", "validate a graph; print shapes, parameters and FLOPs");
  add_common(check, o);
  table["check"] = [&] { return cmd_check(o); };

  auto* ops = app.add_subcommand("ops", "list the registered ops with their schemas");
  ops->add_flag("--all", all_ops, "include internal ops (made by passes)");
  add_plugin_option(ops, o.plugins);
  table["ops"] = [&] { return cmd_ops(all_ops); };

  auto* sample = app.add_subcommand("sample", "generate samples from a checkpoint");
  add_common(sample, o);
  sample->add_option("--checkpoint", ckpt, "a checkpoint of this graph")->required();
  sample->add_option("--n", n, "how many samples")->capture_default_str();
  sample->add_option("--out", out, "PNG grid to write");
  sample->add_option("--npy", npy, "also write the samples as .npy");
  std::string sample_output = "samples";
  bool normalize = false;
  sample
      ->add_option(
          "--output", sample_output,
          "which entry of \"outputs\" (a fixed-shape one, such as weights, gives all its rows)")
      ->capture_default_str();
  sample->add_flag("--normalize", normalize,
                   "scale each image by its own largest magnitude (0 is mid-gray), for weights");
  int cls = -1;
  sample->add_option(
      "--class", cls,
      "a conditional generator's class, 0-9 (default: a grid with class k in row k)");
  table["sample"] = [&] { return cmd_sample(o, ckpt, n, out, npy, sample_output, normalize, cls); };

  auto* encode = app.add_subcommand("encode", "write an output's features for a whole split");
  add_common(encode, o);
  encode->add_option("--checkpoint", ckpt, "a checkpoint of this graph")->required();
  encode->add_option("--out", out, "FEATS.npy (labels go to FEATS.labels.npy)")->required();
  encode->add_option("--output", output, "which entry of \"outputs\"")->capture_default_str();
  encode->add_option("--split", split, "train or test")->capture_default_str();
  table["encode"] = [&] { return cmd_encode(o, ckpt, out, output, split); };

  auto* eval = app.add_subcommand(
      "eval", "a checkpoint's losses and logged values, averaged over a whole split");
  add_common(eval, o);
  eval->add_option("--checkpoint", ckpt, "a checkpoint of this graph")->required();
  eval->add_option("--split", split, "train or test")->capture_default_str();
  Classifier classifier{"graphs/fmnist_classifier.json", ""};
  eval->add_option("--classifier", classifier.checkpoint,
                   "a trained classifier's checkpoint: measure the samples by it (Frechet "
                   "distance, classes, inception-style score)");
  eval->add_option("--classifier-graph", classifier.graph, "the classifier's graph")
      ->capture_default_str();
  eval->add_option("--crop", classifier.crop,
                   "remove N pixels from each side of a sample before the classifier reads it "
                   "(a generator of padded images)")
      ->check(CLI::NonNegativeNumber)
      ->needs("--classifier");
  table["eval"] = [&] { return cmd_eval(o, ckpt, split, classifier); };

  auto* probe = app.add_subcommand(
      "probe", "linear probe accuracy and k-means NMI of features from weft encode");
  std::vector<std::string> feature_files;
  bool pixels = false;
  ProbeOptions po;
  probe->add_option("features", feature_files, "TRAIN.npy TEST.npy (labels beside each)");
  probe->add_flag("--pixels", pixels, "probe the raw pixels instead");
  probe->add_option("--epochs", po.epochs, "training epochs of the probe")->capture_default_str();
  probe->add_option("--data", o.data, "Fashion-MNIST or MNIST folder (for --pixels)");
  probe->add_option("--threads", o.threads, "threads (default: all cores)");
  probe->add_option("--out", out, "also write the result as JSON");
  table["probe"] = [&] { return cmd_probe(o, feature_files, pixels, po, out); };

  auto* bench = app.add_subcommand("bench", "training throughput and time per op");
  add_common(bench, o);
  bench->add_option("--steps", steps, "timed steps")->capture_default_str();
  bench->add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  int nodes = 0;
  bench->add_option("--nodes", nodes, "also list the N slowest plan steps");
  table["bench"] = [&] {
    Model m = load(o);
    return run_bench(m, session_options(o), steps, warmup, nodes);
  };

  auto* report = app.add_subcommand(
      "report", "write RUN_DIR/report.html from a run folder (weft train writes it too)");
  std::string report_dir;
  report->add_option("run_dir", report_dir, "the run folder")->required();
  table["report"] = [&] {
    if (!std::filesystem::exists(std::filesystem::path(report_dir) / "metrics.csv"))
      throw Error(report_dir, "",
                  "not a run folder: it has no metrics.csv (weft train writes one)");
    write_report(report_dir);
    fmt::print("report: {}/report.html\n", report_dir);
    return 0;
  };

  auto* dot = app.add_subcommand("dot", "draw a graph in Graphviz's DOT language (or as SVG)");
  add_common(dot, o);
  std::string dot_phase, dot_out;
  bool dot_grads = false, dot_plan = false, dot_svg = false;
  dot->add_option("--phase", dot_phase, "the phase (by the loss it minimizes) for --grads, --plan");
  dot->add_flag("--grads", dot_grads, "with the gradient nodes autodiff adds for training");
  dot->add_flag("--plan", dot_plan, "the phase's plan: its fused steps and their kernels");
  dot->add_flag("--svg", dot_svg, "render it as SVG with Graphviz's library");
  dot->add_option("--out", dot_out, "write to this file instead of standard output");
  table["dot"] = [&] {
    Model m = load(o);
    std::string text = graph_to_dot(m, session_options(o), dot_phase, dot_grads, dot_plan);
    if (dot_svg) text = render_svg(text);
    if (dot_out.empty())
      fmt::print("{}", text);
    else
      write_atomic(dot_out, text);
    return 0;
  };

  auto* schema = app.add_subcommand(
      "schema", "print the JSON Schema of graph files (with the ops of loaded plugins)");
  add_plugin_option(schema, o.plugins);
  table["schema"] = [&] {
    fmt::print("{}\n", graph_schema().dump(2));
    return 0;
  };

  auto* grad =
      app.add_subcommand("gradcheck", "check an op's gradient against finite differences (f64)");
  grad->add_option("--op", op, "the op (with --device: every op with a kernel there if omitted)");
  grad->add_option("--shape", shapes, "input shapes, one --shape per input: 4,7");
  std::string check_device_name;
  grad->add_option("--device", check_device_name,
                   "check a plugin device's f32 kernels against the f64 reference on the CPU, "
                   "on each op's test cases, instead of gradients");
  add_plugin_option(grad, o.plugins);
  table["gradcheck"] = [&] {
    if (!check_device_name.empty()) return cmd_device_check(op, check_device_name);
    if (op.empty()) throw Error("weft gradcheck needs --op NAME (or --device NAME)");
    return cmd_gradcheck(op, shapes);
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help, or the mistake with a hint
    return rc == 0 ? 0 : 2;      // a mistake on the command line is the user's: status 2
  }
  // An error on one rank ends every rank: the others would wait for it in a collective.
  auto fail = [](const std::string& what, int code) {
    const Ranks& r = ranks();
    const std::string msg =
        fmt::format("weft: {}{}\n", r.size > 1 ? fmt::format("rank {}: ", r.rank) : "", what);
    if (r.size > 1) abort_all_ranks(msg, code);
    fmt::print(stderr, "{}", msg);
    return code;
  };
  try {
    load_plugins(o.plugins);
    for (auto* sub : app.get_subcommands()) {
      if (ranks().size > 1 && sub->get_name() != "train")
        throw Error(
            fmt::format("weft {} runs in one process: under mpirun only weft train "
                        "divides its work among the ranks",
                        sub->get_name()));
      const int rc = table.at(sub->get_name())();
      finish_ranks();
      return rc;
    }
  } catch (const Error& e) {
    return fail(e.what(), 2);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  return 0;
}
