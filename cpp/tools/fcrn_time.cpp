// fcrn_time: the time and peak memory of a net's forward, or forward and
// backward, pass: `caffe time` without the per-layer timers (each of which
// synchronises the GPU), plus memory and the switches the benchmarks compare.
//
//   fcrn_time -model train.prototxt [-gpu 0] [-forward_only] [-phase TEST]
//             [-iterations 5] [-warmup 2] [-engine CAFFE|CUDNN] [-tf32=false]
//             [-share_memory]
//
// Prints one JSON object on standard output. Memory is the peak above what the
// process held before the net was made. On a GPU: device memory in use
// (cudaMemGetInfo: total - free) after the timed iterations, less the same
// reading once the CUDA context was made; it counts Caffe's blobs and cuDNN's
// and cuBLAS's handles and workspaces, and Caffe frees nothing while it runs,
// so the last reading is the peak (scripts/bench_torch.py measures PyTorch
// the same way). On the CPU: the resident set's high-water mark (VmHWM).
// With cuDNN, the algorithms chosen for each convolution configuration are
// listed too. Inputs of Input layers are filled with Gaussian noise, those
// named *label* with zeros (class 0).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "caffe/caffe.hpp"
#include "caffe/util/upgrade_proto.hpp"
#ifdef USE_CUDNN
#include "caffe/util/cudnn_conv.hpp"
#endif
#include "tool_common.hpp"

DEFINE_string(model, "", "The net to time (prototxt).");
DEFINE_int32(gpu, -1, "GPU device to run on; -1 runs on the CPU.");
DEFINE_string(phase, "TRAIN", "Phase the net is made in: TRAIN or TEST.");
DEFINE_bool(forward_only, false, "Time Forward alone, not Forward+Backward.");
DEFINE_int32(iterations, 5, "Timed iterations.");
DEFINE_int32(warmup, 2, "Untimed iterations first (allocation, cuDNN setup).");
DEFINE_string(engine, "", "Engine for every (de)convolution: CAFFE or CUDNN; "
    "empty keeps the net's.");
DEFINE_bool(tf32, true, "Let float GEMMs and cuDNN convolutions use TF32.");
DEFINE_bool(share_memory, false, "Set the net's share_memory (blobs whose "
    "lifetimes do not overlap share memory: data in TEST, diffs in TRAIN).");

namespace {

using caffe::Blob;
using caffe::Caffe;
using caffe::Net;
using caffe::NetParameter;

// A /proc/self/status field in bytes (VmRSS, VmHWM).
double ProcStatusBytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string key;
  double kb;
  while (status >> key) {
    if (key == field + ":" && status >> kb) return kb * 1024;
    status.ignore(1 << 10, '\n');
  }
  return 0;
}

void FillInputs(Net<float>* net) {
  caffe::FillerParameter noise;
  noise.set_std(1);
  caffe::GaussianFiller<float> filler(noise);
  for (int i = 0; i < net->layers().size(); ++i) {
    if (std::string(net->layers()[i]->type()) != "Input") continue;
    for (int j = 0; j < net->top_vecs()[i].size(); ++j) {
      Blob<float>* blob = net->top_vecs()[i][j];
      if (net->blob_names()[net->top_ids(i)[j]].find("label") !=
          std::string::npos) {
        caffe::caffe_set(blob->count(), 0.f, blob->mutable_cpu_data());
      } else {
        filler.Fill(blob);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Warnings and errors to stderr, no log files; stdout is for the JSON.
  FLAGS_logtostderr = 1;
  FLAGS_minloglevel = 1;
  gflags::SetUsageMessage("time and peak memory of a net\n"
      "usage: fcrn_time -model NET.prototxt [-gpu N] [-forward_only] ...");
  caffe::GlobalInit(&argc, &argv);
  if (FLAGS_model.empty() || FLAGS_iterations < 1 || FLAGS_warmup < 0 ||
      (FLAGS_phase != "TRAIN" && FLAGS_phase != "TEST") ||
      (!FLAGS_engine.empty() && FLAGS_engine != "CAFFE" &&
       FLAGS_engine != "CUDNN")) {
    gflags::ShowUsageWithFlagsRestrict(argv[0], "fcrn_time");
    return 2;
  }
  Caffe::set_tf32(FLAGS_tf32);
  fcrn::UseDevice(FLAGS_gpu);
  const double baseline = FLAGS_gpu >= 0 ? fcrn::DeviceUsedBytes() :
      ProcStatusBytes("VmRSS");

  NetParameter param;
  caffe::ReadNetParamsFromTextFileOrDie(FLAGS_model, &param);
  param.mutable_state()->set_phase(FLAGS_phase == "TRAIN" ? caffe::TRAIN :
      caffe::TEST);
  // Set either way: a net that leaves it unset shares when it can.
  param.set_share_memory(FLAGS_share_memory);
  for (int i = 0; i < param.layer_size(); ++i) {
    caffe::LayerParameter* layer = param.mutable_layer(i);
    if (!FLAGS_engine.empty() && (layer->type() == "Convolution" ||
        layer->type() == "Deconvolution")) {
      layer->mutable_convolution_param()->set_engine(FLAGS_engine == "CAFFE" ?
          caffe::ConvolutionParameter_Engine_CAFFE :
          caffe::ConvolutionParameter_Engine_CUDNN);
    }
  }
  Net<float> net(param);
  FillInputs(&net);

  std::vector<double> ms;
  for (int i = 0; i < FLAGS_warmup + FLAGS_iterations; ++i) {
    fcrn::Synchronize();
    const std::chrono::steady_clock::time_point start =
        std::chrono::steady_clock::now();
    if (FLAGS_forward_only) {
      net.Forward();
    } else {
      net.ForwardBackward();
    }
    fcrn::Synchronize();
    if (i >= FLAGS_warmup) {
      ms.push_back(std::chrono::duration<double, std::milli>(
          std::chrono::steady_clock::now() - start).count());
    }
  }
  const double peak = FLAGS_gpu >= 0 ? fcrn::DeviceUsedBytes() - baseline :
      ProcStatusBytes("VmHWM") - baseline;
  std::vector<double> sorted(ms);
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted.size() % 2 ? sorted[sorted.size() / 2] :
      (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]) / 2;

  printf("{\"model\": \"%s\", \"device\": \"%s\", \"phase\": \"%s\", "
      "\"pass\": \"%s\", \"engine\": \"%s\", \"tf32\": %s, "
      "\"share_memory\": %s, "
      "\"median_ms\": %.3f, \"ms\": [", FLAGS_model.c_str(),
      FLAGS_gpu >= 0 ? "gpu" : "cpu", FLAGS_phase.c_str(),
      FLAGS_forward_only ? "forward" : "forward+backward",
      FLAGS_engine.empty() ? "net" : FLAGS_engine.c_str(),
      FLAGS_tf32 ? "true" : "false", FLAGS_share_memory ? "true" : "false",
      median);
  for (int i = 0; i < ms.size(); ++i) printf("%s%.3f", i ? ", " : "", ms[i]);
  printf("], \"peak_bytes\": %.0f, \"memory\": \"%s\", "
      "\"cudnn_algorithms\": [", peak, FLAGS_gpu >= 0 ?
      "device memory in use after the timed iterations, above the CUDA "
      "context (cudaMemGetInfo)" : "peak resident set above the start");
#ifdef USE_CUDNN
  const std::vector<std::string> algorithms =
      caffe::cudnn::ChosenAlgorithms();
  for (int i = 0; i < algorithms.size(); ++i) {
    printf("%s\"%s\"", i ? ", " : "", algorithms[i].c_str());
  }
#endif
  printf("]}\n");
  return 0;
}
