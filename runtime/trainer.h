// Training a model: a Session holds the parameters, one compiled plan per phase and the
// optimizers; a step runs each phase (its plan on fresh inputs, then its optimizer).
// run_training adds what a person watches: progress, metrics, samples, checkpoints.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dataset.h"
#include "runtime/executor.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"

namespace weft {

// How a session runs. What it trains (batch, seed, steps) is the model's train section, with
// the command line's overrides already applied (apply_overrides).
struct SessionOptions {
  DType dtype = DType::f32;
  bool bf16 = false;  // --precision bf16: matrix products and convolutions on bf16 inputs
  bool parallel = false;
  std::string data_dir;         // "": default_data_dir()
  bool check_numerics = false;  // check every step's outputs and parameters for NaN and Inf
  // Where the plans run and the parameters, optimizer state and buffers live (--device).
  // On a plugin device a step copies in only its inputs (the batch, the noise) and copies
  // back only the scalars it logs; checkpoints and outputs come back when written.
  Device device;
  // Under mpirun: batch norm's statistics over the whole batch, every rank's shard, instead of
  // each rank's own (PyTorch's SyncBatchNorm).
  bool sync_batch_norm = false;
};

// A compiled plan with the input tensors bound to it.
struct BoundPlan {
  std::unique_ptr<Plan> plan;
  std::map<std::string, Tensor> inputs;   // on the plan's device
  std::map<std::string, Tensor> staging;  // filled on the host; the inputs themselves on the CPU
  // Noise inputs a plugin device draws itself (its kernels for noise_normal, noise_uniform).
  std::map<std::string, std::unique_ptr<Kernel>> noise;
  std::vector<std::string> used;  // inputs the plan reads
};

class Session {
 public:
  Session(const Model& m, SessionOptions opt);

  Model model;  // a copy: autodiff adds the backward nodes to its graph
  SessionOptions opt;
  std::map<std::string, Tensor> params;
  int64_t step = 0;
  int stopped_by = 0;                 // the signal that stopped run_training, or 0
  double samples_per_s = 0;           // run_training's latest measure
  std::vector<std::string> warnings;  // what run_training warned about, in order

  // Seconds spent filling inputs and in optimizers, summed over steps (for weft bench).
  double input_seconds = 0, optimizer_seconds = 0;

  // One training step: every phase, `repeat` times; returns each phase's last loss, then
  // the values of train.log (each computed by the first phase whose loss depends on it),
  // then each phase's last gradient norm (global L2, before clipping). A phase outside its
  // steps gives NaN.
  std::vector<double> train_step(StepTimes* times = nullptr);
  // The named output for `n` examples in inference mode: noise drawn from a fixed stream,
  // data (if needed) from `split`, examples [first, first + n).
  Tensor evaluate(const std::string& output, int64_t n, const std::string& split, int64_t first);
  // The same for any values of the graph; `draw` picks another fixed noise stream (0 is the
  // one evaluate uses), so successive batches of an evaluation see fresh noise.
  // `classes`, when given (n entries), are the labels the data.labels and data.onehot inputs
  // read instead of the split's (a conditional generator asked for those classes; the
  // images are then zeros).
  std::vector<Tensor> evaluate_values(const std::vector<ValueId>& values, int64_t n,
                                      const std::string& split, int64_t first, uint64_t draw = 0,
                                      const std::vector<uint8_t>* classes = nullptr);

  // Whether computing `output` reads the dataset's examples (an autoencoder's
  // reconstructions do, a generator's samples do not), and whether it reads their labels (a
  // conditional generator's samples do).
  bool output_reads_data(const std::string& output);
  bool output_reads_labels(const std::string& output);
  // Makes `d` the split named `split` (generated images a classifier is to read).
  void use_dataset(const std::string& split, Dataset d);

  void save_checkpoint(const std::string& path) const;
  // to_continue: the run goes on training, so batch and seed must match the checkpoint's.
  void load_checkpoint(const std::string& path, bool to_continue = true);

  // Bytes each rank sent to the allreduce, summed over steps (weft bench, the README's
  // scaling estimate).
  double allreduce_bytes = 0;

  // Every parameter, optimizer state and the step made rank 0's on every rank (after a
  // checkpoint was loaded on rank 0). Free in a run of one rank.
  void take_state_of_rank0();

  struct Phase {
    PhaseSpec spec;
    std::vector<ValueId> grads;
    BoundPlan bound;
    std::unique_ptr<Optimizer> opt;
    std::vector<Tensor> param_tensors;
    std::vector<const Tensor*> grad_tensors;      // the plan's gradient targets
    std::vector<std::pair<size_t, size_t>> logs;  // (index in train.log, plan target)
    // Under mpirun: the targets packed for the allreduce, and host copies of a device's.
    Tensor rank_flat;
    std::vector<Tensor> rank_sums;
  };
  std::vector<Phase> phases;
  const Dataset* dataset(const std::string& split);
  bool reads_data(const BoundPlan& b) const;

 private:
  std::vector<std::string> inputs_of(const std::vector<ValueId>& targets) const;  // by name
  std::vector<std::string> output_sources(const std::string& output) const;       // of its inputs
  BoundPlan bind_plan(const std::vector<ValueId>& targets, int64_t batch);
  BoundPlan& eval_plan(const std::vector<ValueId>& values, int64_t n);
  void run_checked(Phase& ph, size_t pi, const RunContext& ctx);
  void check_params(const Phase& ph, size_t pi) const;
  // `shard`: the rank's shard of a training batch (its noise starts at that shard's first
  // element of the stream); 0 for evaluation, which one process runs whole.
  void fill_inputs(BoundPlan& b, uint64_t noise_key, const std::vector<int64_t>* examples,
                   const Dataset* d, uint64_t shard = 0);
  void average_over_ranks(Phase& ph);
  std::map<std::string, std::unique_ptr<Dataset>> data_;
  // evaluate_values(): a plan per list of values and batch size, compiled once.
  std::map<std::pair<std::vector<ValueId>, int64_t>, BoundPlan> eval_plans_;
  std::unique_ptr<Batcher> batcher_;
  int data_draws_per_step_ = 0;
  int64_t local_batch_ = 1;              // this rank's share of the batch
  std::vector<int64_t> shard_examples_;  // this rank's share of a step's examples
};

struct TrainOptions {
  std::string out_dir = "runs/default";
  bool resume = false;
  bool overwrite = false;  // replace a run already in out_dir
  bool quiet = false;
  // Called (on rank 0) once the run folder is made, after every checkpoint and at the end
  // (`finished`): where the runner writes its report.
  std::function<void(const Session&, bool finished)> on_progress;
};

// Trains, writing DIR/metrics.csv, DIR/samples.png (and per-step grids) and
// DIR/checkpoint.safetensors. Returns the session at the end. SIGINT or SIGTERM stops the
// run at the end of the current step with its checkpoint and metrics written;
// `stopped_by` then holds the signal's number.
std::unique_ptr<Session> run_training(const Model& m, const SessionOptions& so,
                                      const TrainOptions& to);

// Writes a PNG grid of an image-shaped output (784 values per row, say): `n` examples of a
// batch-shaped one, every row of a fixed one (a dictionary's atoms). `normalize` scales
// each image by its own largest magnitude instead of the data's range. False if the model
// has no such output.
// A conditional generator's grid (one whose output reads the labels) shows class k in row k,
// 10 samples each, or n samples of class `cls` when it is 0 or more.
// For a graph whose samples are reconstructions of the test split's first examples (an
// autoencoder): those inputs as a grid, the same way. False for other graphs.
bool write_sample_inputs(Session& s, int64_t n, const std::string& path);

bool write_samples(Session& s, int64_t n, const std::string& path,
                   const std::string& output = "samples", bool normalize = false, int cls = -1);

}  // namespace weft
