// fcrn_output: a net's output for weights and inputs drawn from a seed, the
// same values on every build and device, saved or compared with a saved
// output. The GPU kit's whole-net check: FCRN-101 on the GPU in exact FP32
// and in TF32 against the output of the same binary on the CPU, which the kit
// carries (a few hundred KB) instead of the weights (170 MB).
//
//   fcrn_output -model deploy.prototxt [-blob score] [-seed 1] -save CPU.f32
//   fcrn_output -model deploy.prototxt [-blob score] [-seed 1] -gpu 0
//               -precisions fp32,tf32 -reference CPU.f32
//
// Every value comes from a counter-based generator (SplitMix64 of the seed,
// the layer, the blob and the element), so it does not depend on Caffe's
// random state, the device or the order of filling. Convolution weights are
// uniform with variance 1 / fan-in, biases, means and betas in [-0.1, 0.1),
// variances and gammas in [0.9, 1.1), moving-average factors 1, inputs in
// [-1, 1): the classifier's scores of FCRN-101 then vary over the image about
// half as much as their mean (with gammas of 0.75 they shrank to a tenth of
// it over the ~100 normalisations, leaving mostly the biases to compare).
//
// Runs one timed forward per precision (after an untimed one on a GPU, where
// the first chooses cuDNN's algorithms) and prints one JSON
// object: per precision the time and, with -reference, the relative L2 error
// ||out - ref|| / ||ref||, the largest |out - ref| over the largest |ref|, and
// how many outputs are not finite. Outputs are saved as raw float32.
#include <stdint.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "caffe/caffe.hpp"
#include "caffe/util/upgrade_proto.hpp"
#include "tool_common.hpp"

DEFINE_string(model, "", "The net (prototxt), made in the TEST phase.");
DEFINE_int32(gpu, -1, "GPU device to run on; -1 runs on the CPU.");
DEFINE_string(blob, "", "The blob to save or compare, from the net run "
    "without blob memory sharing; empty: the net's outputs, one after another.");
DEFINE_int32(seed, 1, "Seed of the weights and inputs.");
DEFINE_string(precisions, "fp32", "Comma-separated: fp32 (exact) and/or tf32 "
    "(TF32 tensor cores for float GEMMs and cuDNN convolutions).");
DEFINE_string(save, "", "Write the output (of the last precision) here.");
DEFINE_string(reference, "", "Compare the output with this saved one.");

namespace {

using caffe::Blob;
using caffe::Net;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Fills `blob` uniformly in [low, high) from stream `stream` of the seed.
void FillUniform(Blob<float>* blob, uint64_t stream, double low, double high) {
  const uint64_t base = SplitMix64(SplitMix64(FLAGS_seed) ^ stream);
  float* data = blob->mutable_cpu_data();
  for (int i = 0; i < blob->count(); ++i) {
    const double u = (SplitMix64(base + i) >> 11) * (1.0 / 9007199254740992.0);
    data[i] = static_cast<float>(low + (high - low) * u);
  }
}

// The generator's stream for blob `b` of layer `l`, and for input `i`.
uint64_t ParamStream(int l, int b) { return (uint64_t(l) << 8) + b; }
uint64_t InputStream(int i) { return (uint64_t(1) << 40) + i; }

// Returns false for a layer with parameters of a kind it does not know.
bool FillParameters(const std::string& type,
    const std::vector<boost::shared_ptr<Blob<float> > >& blobs, int layer) {
  for (int b = 0; b < blobs.size(); ++b) {
    Blob<float>* blob = blobs[b].get();
    const uint64_t stream = ParamStream(layer, b);
    if (type == "Convolution" || type == "Deconvolution" ||
        type == "InnerProduct") {
      if (b == 0) {
        const double a = std::sqrt(3.0 * blob->shape(0) / blob->count());
        FillUniform(blob, stream, -a, a);
      } else {
        FillUniform(blob, stream, -0.1, 0.1);  // bias
      }
    } else if (type == "LeanBatchNorm" || type == "BatchNorm" ||
               type == "Scale") {
      // LeanBatchNorm: mean, variance, factor, gamma, beta; BatchNorm the
      // first three; Scale the last two.
      const int role = type == "Scale" ? b + 3 : b;
      const double low[] = {-0.1, 0.9, 1, 0.9, -0.1};
      const double high[] = {0.1, 1.1, 1, 1.1, 0.1};
      if (role > 4) return false;
      FillUniform(blob, stream, low[role], high[role]);
    } else {
      return false;
    }
  }
  return true;
}

// The compared values: `FLAGS_blob`, or the net's outputs.
std::vector<float> Output(const Net<float>& net) {
  std::vector<Blob<float>*> blobs;
  if (FLAGS_blob.empty()) {
    blobs = net.output_blobs();
  } else {
    blobs.push_back(net.blob_by_name(FLAGS_blob).get());
  }
  std::vector<float> values;
  for (int i = 0; i < blobs.size(); ++i) {
    values.insert(values.end(), blobs[i]->cpu_data(),
        blobs[i]->cpu_data() + blobs[i]->count());
  }
  return values;
}

// A JSON number, or null for what JSON cannot hold.
std::string Number(double x) {
  if (!std::isfinite(x)) return "null";
  char text[32];
  snprintf(text, sizeof(text), "%.6g", x);
  return text;
}

int Fail(const std::string& message) {
  fprintf(stderr, "fcrn_output: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  FLAGS_logtostderr = 1;
  FLAGS_minloglevel = 1;
  gflags::SetUsageMessage("a net's output for seeded weights and inputs\n"
      "usage: fcrn_output -model NET.prototxt [-gpu N] [-precisions fp32,tf32]"
      " (-save FILE | -reference FILE)");
  caffe::GlobalInit(&argc, &argv);
  std::vector<std::string> precisions;
  std::stringstream list(FLAGS_precisions);
  for (std::string p; std::getline(list, p, ',');) precisions.push_back(p);
  bool usage_ok = !FLAGS_model.empty() && !precisions.empty() &&
      (FLAGS_save.empty() != FLAGS_reference.empty());
  for (int i = 0; i < precisions.size(); ++i) {
    usage_ok = usage_ok && (precisions[i] == "fp32" || precisions[i] == "tf32");
  }
  if (!usage_ok) {
    gflags::ShowUsageWithFlagsRestrict(argv[0], "fcrn_output");
    return 2;
  }
  fcrn::UseDevice(FLAGS_gpu);

  caffe::NetParameter param;
  caffe::ReadNetParamsFromTextFileOrDie(FLAGS_model, &param);
  param.mutable_state()->set_phase(caffe::TEST);
  // A blob other than an output keeps its values after the pass only in a
  // net that does not share blob memory (patch 0010): a shared one would
  // hold another blob's numbers by then.
  if (!FLAGS_blob.empty()) param.set_share_memory(false);
  Net<float> net(param);
  if (!FLAGS_blob.empty() && !net.has_blob(FLAGS_blob)) {
    return Fail("the net has no blob '" + FLAGS_blob + "'");
  }
  int inputs = 0;
  for (int l = 0; l < net.layers().size(); ++l) {
    const std::string type = net.layers()[l]->type();
    if (type == "Input") {
      for (int t = 0; t < net.top_vecs()[l].size(); ++t) {
        FillUniform(net.top_vecs()[l][t], InputStream(inputs++), -1, 1);
      }
    } else if (!FillParameters(type, net.layers()[l]->blobs(), l)) {
      return Fail("no seeded values for the parameters of layer '" +
          net.layer_names()[l] + "' (" + type + ")");
    }
  }

  std::vector<float> reference;
  if (!FLAGS_reference.empty()) {
    std::ifstream in(FLAGS_reference.c_str(), std::ios::binary);
    if (!in) return Fail("cannot read " + FLAGS_reference);
    in.seekg(0, std::ios::end);
    reference.resize(in.tellg() / sizeof(float));
    in.seekg(0);
    in.read(reinterpret_cast<char*>(reference.data()),
        reference.size() * sizeof(float));
  }

  std::ostringstream runs;
  std::vector<float> output;
  for (int i = 0; i < precisions.size(); ++i) {
    caffe::Caffe::set_tf32(precisions[i] == "tf32");
    if (FLAGS_gpu >= 0) {
      net.Forward();  // cuDNN's algorithms and workspace for this precision
      fcrn::Synchronize();
    }
    const std::chrono::steady_clock::time_point start =
        std::chrono::steady_clock::now();
    net.Forward();
    fcrn::Synchronize();
    const double ms = std::chrono::duration<double, std::milli>(
        std::chrono::steady_clock::now() - start).count();
    output = Output(net);
    runs << (i ? ", " : "") << "{\"precision\": \"" << precisions[i]
        << "\", \"ms\": " << Number(ms);
    if (!FLAGS_reference.empty()) {
      if (reference.size() != output.size()) {
        std::ostringstream message;
        message << FLAGS_reference << " holds " << reference.size()
            << " values, the output " << output.size();
        return Fail(message.str());
      }
      double error2 = 0, reference2 = 0, max_error = 0, max_reference = 0;
      int non_finite = 0;
      for (int k = 0; k < output.size(); ++k) {
        const double d = double(output[k]) - reference[k];
        non_finite += !std::isfinite(output[k]);
        error2 += d * d;
        reference2 += double(reference[k]) * reference[k];
        max_error = std::max(max_error, std::fabs(d));
        max_reference = std::max(max_reference, std::fabs(double(reference[k])));
      }
      runs << ", \"relative_l2\": " << Number(std::sqrt(error2 / reference2))
          << ", \"max_abs_error\": " << Number(max_error)
          << ", \"max_abs_reference\": " << Number(max_reference)
          << ", \"non_finite\": " << non_finite;
    }
    runs << "}";
  }
  if (!FLAGS_save.empty()) {
    std::ofstream out(FLAGS_save.c_str(), std::ios::binary);
    out.write(reinterpret_cast<const char*>(output.data()),
        output.size() * sizeof(float));
    if (!out) return Fail("cannot write " + FLAGS_save);
  }
  printf("{\"model\": \"%s\", \"device\": \"%s\", \"blob\": \"%s\", "
      "\"seed\": %d, \"count\": %zu, \"runs\": [%s]}\n", FLAGS_model.c_str(),
      FLAGS_gpu >= 0 ? "gpu" : "cpu", FLAGS_blob.c_str(), FLAGS_seed,
      output.size(), runs.str().c_str());
  return 0;
}
