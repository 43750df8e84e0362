// The project's oneDNN convolution (cpp/patches/0013): what the layer factory
// makes, and its results against the CAFFE engine (im2col + GEMM) on the same
// weights and inputs, in the cases where oneDNN's layouts and padding rules
// differ from Caffe's: strides that leave input rows unused, dilation,
// groups, 1x1 kernels, several bottoms, a reshape between passes; dilated
// convolutions on a padded copy and in phases; 1x1 forward passes in oneDNN
// with backward passes on the BLAS.
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layer_factory.hpp"
#include "caffe/layers/conv_layer.hpp"
#include "caffe/util/parallel.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"
#include "conv_engines.hpp"

#ifdef USE_DNNL
#include "caffe/layers/dnnl_conv_layer.hpp"
#endif

namespace caffe {

#ifdef USE_DNNL

class DnnlConvolutionTest : public ::testing::Test {
 protected:
  DnnlConvolutionTest() { Caffe::set_mode(Caffe::CPU); }

  static shared_ptr<Layer<float> > Make(const ConvCase& c,
      ConvolutionParameter_Engine engine) {
    return LayerRegistry<float>::CreateLayer(ConvParam(c, engine));
  }
  static bool IsDnnl(const shared_ptr<Layer<float> >& layer) {
    return dynamic_cast<DnnlConvolutionLayer<float>*>(layer.get()) != NULL;
  }
};

TEST_F(DnnlConvolutionTest, TestFactory) {
  const ConvCase c = {"Convolution", 3, 1, 1, 1, 1, true};
  EXPECT_TRUE(IsDnnl(Make(c, ConvolutionParameter_Engine_DEFAULT)));
  EXPECT_FALSE(IsDnnl(Make(c, ConvolutionParameter_Engine_CAFFE)));
  setenv("FCRN_NO_DNNL", "1", 1);
  EXPECT_FALSE(IsDnnl(Make(c, ConvolutionParameter_Engine_DEFAULT)));
  unsetenv("FCRN_NO_DNNL");
  // Double and 3-D convolutions keep im2col inside the layer.
  Blob<float> bottom2d(1, 2, 5, 5), top;
  Blob<float> bottom3d(vector<int>{1, 2, 5, 5, 5});
  vector<Blob<float>*> top_vec(1, &top);
  shared_ptr<Layer<float> > layer = Make(c, ConvolutionParameter_Engine_DEFAULT);
  layer->SetUp(vector<Blob<float>*>(1, &bottom2d), top_vec);
  EXPECT_TRUE(static_cast<DnnlConvolutionLayer<float>*>(layer.get())->uses_dnnl());
  layer = Make(c, ConvolutionParameter_Engine_DEFAULT);
  layer->SetUp(vector<Blob<float>*>(1, &bottom3d), top_vec);
  EXPECT_FALSE(static_cast<DnnlConvolutionLayer<float>*>(layer.get())->uses_dnnl());
  LayerParameter param = ConvParam(c, ConvolutionParameter_Engine_DEFAULT);
  shared_ptr<Layer<double> > layer64 = LayerRegistry<double>::CreateLayer(param);
  Blob<double> bottom64(1, 2, 5, 5), top64;
  layer64->SetUp(vector<Blob<double>*>(1, &bottom64),
                 vector<Blob<double>*>(1, &top64));
  EXPECT_FALSE(static_cast<DnnlConvolutionLayer<double>*>(layer64.get())->uses_dnnl());
}

TEST_F(DnnlConvolutionTest, TestMatchesCaffeEngine) {
  const ConvCase cases[] = {
    {"Convolution", 3, 1, 1, 1, 1, true},
    {"Convolution", 3, 2, 1, 2, 1, false},
    {"Convolution", 3, 4, 1, 4, 2, true},
    {"Convolution", 3, 1, 2, 1, 1, true},   // 12 rows: last one unused
    {"Convolution", 1, 0, 1, 1, 1, false},
    {"Convolution", 1, 0, 2, 1, 1, true},   // even input: last row unused
    {"Convolution", 7, 3, 2, 1, 1, true},   // a ResNet stem
    {"Convolution", 5, 0, 3, 1, 2, false},  // no padding, wide stride
    {"Convolution", 3, 12, 1, 12, 1, true}, // dilation beyond the input
  };
  const vector<vector<int> > shapes = {{2, 4, 12, 10}, {1, 4, 13, 11}};
  for (const ConvCase& c : cases) {
    for (const vector<int>& shape : shapes) {
      shared_ptr<Layer<float> > reference =
          Make(c, ConvolutionParameter_Engine_CAFFE);
      shared_ptr<Layer<float> > layer =
          Make(c, ConvolutionParameter_Engine_DEFAULT);
      ASSERT_TRUE(IsDnnl(layer));
      ExpectSameAsReference(reference.get(), layer.get(), shape, 1e-5,
          c.Name() + " on " + std::to_string(shape[2]) + "x" +
          std::to_string(shape[3]));
    }
  }
}

// Two bottoms share the weights: their weight gradients add up.
TEST_F(DnnlConvolutionTest, TestTwoBottomsAndReshape) {
  const ConvCase c = {"Convolution", 3, 2, 2, 2, 1, true};
  shared_ptr<Layer<float> > reference =
      Make(c, ConvolutionParameter_Engine_CAFFE);
  shared_ptr<Layer<float> > layer = Make(c, ConvolutionParameter_Engine_DEFAULT);
  FillerParameter filler_param;
  GaussianFiller<float> filler(filler_param);
  Blob<float> a(2, 4, 9, 8), b(2, 4, 9, 8), a_ref, b_ref, t1, t2, t1_ref,
      t2_ref;
  vector<Blob<float>*> bottom = {&a, &b}, bottom_ref = {&a_ref, &b_ref},
      top = {&t1, &t2}, top_ref = {&t1_ref, &t2_ref};
  for (int size = 9; size <= 16; size += 7) {  // then a larger input
    a.Reshape(2, 4, size, size - 1);
    b.Reshape(2, 4, size, size - 1);
    filler.Fill(&a);
    filler.Fill(&b);
    a_ref.CopyFrom(a, false, true);
    b_ref.CopyFrom(b, false, true);
    if (size == 9) {
      reference->SetUp(bottom_ref, top_ref);
      layer->SetUp(bottom, top);
      for (int i = 0; i < 2; ++i) {
        layer->blobs()[i]->CopyFrom(*reference->blobs()[i]);
      }
    } else {
      reference->Reshape(bottom_ref, top_ref);
      layer->Reshape(bottom, top);
    }
    for (int i = 0; i < 2; ++i) {
      caffe_set(layer->blobs()[i]->count(), 0.f,
                layer->blobs()[i]->mutable_cpu_diff());
      caffe_set(reference->blobs()[i]->count(), 0.f,
                reference->blobs()[i]->mutable_cpu_diff());
    }
    reference->Forward(bottom_ref, top_ref);
    layer->Forward(bottom, top);
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(top[i]->shape() == top_ref[i]->shape());
      EXPECT_LT(RelativeError(top_ref[i]->cpu_data(), top[i]->cpu_data(),
          top[i]->count()), 1e-5) << "top " << i << " at " << size;
      filler.Fill(top_ref[i]);
      caffe_copy(top[i]->count(), top_ref[i]->cpu_data(),
                 top_ref[i]->mutable_cpu_diff());
      caffe_copy(top[i]->count(), top_ref[i]->cpu_data(),
                 top[i]->mutable_cpu_diff());
    }
    // The second bottom's gradient is not asked for: it stays as it was.
    caffe_set(b.count(), 7.f, b.mutable_cpu_diff());
    const vector<bool> propagate_down = {true, false};
    reference->Backward(top_ref, propagate_down, bottom_ref);
    layer->Backward(top, propagate_down, bottom);
    EXPECT_LT(RelativeError(a_ref.cpu_diff(), a.cpu_diff(), a.count()), 1e-5);
    for (int i = 0; i < b.count(); ++i) ASSERT_EQ(b.cpu_diff()[i], 7.f);
    for (int i = 0; i < 2; ++i) {
      EXPECT_LT(RelativeError(reference->blobs()[i]->cpu_diff(),
          layer->blobs()[i]->cpu_diff(), layer->blobs()[i]->count()), 1e-5)
          << "parameter " << i << " at " << size;
    }
  }
}

TEST_F(DnnlConvolutionTest, TestGradient) {
  const ConvCase c = {"Convolution", 3, 2, 2, 2, 1, true};
  LayerParameter param = ConvParam(c, ConvolutionParameter_Engine_DEFAULT);
  DnnlConvolutionLayer<float> layer(param);
  Blob<float> bottom(2, 3, 8, 7), top;
  FillerParameter filler_param;
  GaussianFiller<float> filler(filler_param);
  filler.Fill(&bottom);
  vector<Blob<float>*> bottom_vec(1, &bottom), top_vec(1, &top);
  GradientChecker<float> checker(1e-2, 1e-3);
  checker.CheckGradientExhaustive(&layer, bottom_vec, top_vec);
}

// Dilated convolutions that keep their input's size, on a padded copy and in
// phases (forced by FCRN_DNNL_DILATED, since a CPU with direct kernels for
// dilation would not choose them): the same results as im2col, including
// inputs whose rows and columns do not divide into the phases evenly, and a
// dilation beyond the input (phases of one pixel, for which oneDNN may keep
// no direct kernel). A padded copy serves the forward pass only: the first
// backward pass moves both to phases.
TEST_F(DnnlConvolutionTest, TestDilatedPathsMatchCaffeEngine) {
  const ConvCase cases[] = {
    {"Convolution", 3, 2, 1, 2, 1, true},
    {"Convolution", 3, 4, 1, 4, 2, false},
    {"Convolution", 5, 4, 1, 2, 1, true},
    {"Convolution", 3, 12, 1, 12, 1, true},
  };
  const vector<vector<int> > shapes = {{2, 16, 12, 10}, {1, 16, 13, 11}};
  for (const std::string path : {"padded", "phases"}) {
    setenv("FCRN_DNNL_DILATED", path.c_str(), 1);
    for (const ConvCase& c : cases) {
      for (const vector<int>& shape : shapes) {
        const std::string name = path + ": " + c.Name() + " on " +
            std::to_string(shape[2]) + "x" + std::to_string(shape[3]);
        shared_ptr<Layer<float> > reference =
            LayerRegistry<float>::CreateLayer(
                ConvParam(c, ConvolutionParameter_Engine_CAFFE, 16));
        shared_ptr<Layer<float> > layer = LayerRegistry<float>::CreateLayer(
            ConvParam(c, ConvolutionParameter_Engine_DEFAULT, 16));
        const DnnlConvolutionLayer<float>* dnnl =
            static_cast<DnnlConvolutionLayer<float>*>(layer.get());
        const bool within = c.dilation <= shape[3];
        Blob<float> bottom(shape), top;
        layer->SetUp(vector<Blob<float>*>(1, &bottom),
                     vector<Blob<float>*>(1, &top));
        EXPECT_TRUE(!within ||
            (path == "padded" ? dnnl->uses_padded_copy()
                              : dnnl->uses_phases())) << name;
        ExpectSameAsReference(reference.get(), layer.get(), shape, 1e-5, name);
        EXPECT_TRUE(!within || dnnl->uses_phases()) << name << ": backward";
      }
    }
  }
  unsetenv("FCRN_DNNL_DILATED");
}

// A padded copy or phases only where they equal the convolution: stride 1,
// the output as large as the input, more outputs than kn2row takes; and
// never with FCRN_DNNL_DILATED=as-is.
TEST_F(DnnlConvolutionTest, TestDilatedPathsApply) {
  struct Expectation {
    ConvCase conv;
    int num_output;
    const char* setting;
    bool rewritten;  // on a padded copy (setting "padded"), else in phases
  };
  const Expectation expectations[] = {
    {{"Convolution", 3, 2, 1, 2, 1, true}, 6, "phases", true},
    {{"Convolution", 3, 2, 1, 2, 1, true}, 6, "padded", true},
    {{"Convolution", 3, 2, 1, 2, 1, true}, 6, "as-is", false},
    {{"Convolution", 3, 2, 2, 2, 1, true}, 6, "phases", false},  // stride 2
    {{"Convolution", 3, 2, 2, 2, 1, true}, 6, "padded", false},
    {{"Convolution", 3, 1, 1, 2, 1, true}, 6, "phases", false},  // shrinks
    {{"Convolution", 3, 3, 1, 2, 1, true}, 6, "padded", false},  // grows
    {{"Convolution", 3, 1, 1, 1, 1, true}, 6, "phases", false},  // undilated
    {{"Convolution", 3, 1, 1, 1, 1, true}, 6, "padded", false},
    {{"Convolution", 3, 2, 1, 2, 1, true}, 2, "phases", false},  // kn2row
  };
  Blob<float> bottom(1, 4, 12, 10), top;
  vector<Blob<float>*> bottom_vec(1, &bottom), top_vec(1, &top);
  for (const Expectation& e : expectations) {
    setenv("FCRN_DNNL_DILATED", e.setting, 1);
    shared_ptr<Layer<float> > layer = LayerRegistry<float>::CreateLayer(
        ConvParam(e.conv, ConvolutionParameter_Engine_DEFAULT, e.num_output));
    layer->SetUp(bottom_vec, top_vec);
    const DnnlConvolutionLayer<float>* dnnl =
        static_cast<DnnlConvolutionLayer<float>*>(layer.get());
    EXPECT_EQ(e.rewritten, std::string(e.setting) == "padded" ?
        dnnl->uses_padded_copy() : dnnl->uses_phases())
        << e.conv.Name() << ", " << e.num_output << " outputs, "
        << "FCRN_DNNL_DILATED=" << e.setting;
  }
  unsetenv("FCRN_DNNL_DILATED");
}

TEST_F(DnnlConvolutionTest, TestPhasesGradient) {
  const ConvCase c = {"Convolution", 3, 2, 1, 2, 1, true};
  setenv("FCRN_DNNL_DILATED", "phases", 1);
  LayerParameter param = ConvParam(c, ConvolutionParameter_Engine_DEFAULT);
  DnnlConvolutionLayer<float> layer(param);
  Blob<float> bottom(2, 3, 7, 6), top;
  FillerParameter filler_param;
  GaussianFiller<float> filler(filler_param);
  filler.Fill(&bottom);
  vector<Blob<float>*> bottom_vec(1, &bottom), top_vec(1, &top);
  GradientChecker<float> checker(1e-2, 1e-3);
  checker.CheckGradientExhaustive(&layer, bottom_vec, top_vec);
  EXPECT_TRUE(layer.uses_phases());
  unsetenv("FCRN_DNNL_DILATED");
}

// A 1x1 convolution beside OpenBLAS's OpenMP build runs its backward pass
// on the BLAS, its forward pass where FCRN_DNNL_1X1 says (by default in
// oneDNN on AVX-512); beside the pthreads build, both in oneDNN. Each way
// gives the CAFFE engine's results.
TEST_F(DnnlConvolutionTest, TestOneByOnePasses) {
  const ConvCase cases[] = {
    {"Convolution", 1, 0, 1, 1, 1, false},
    {"Convolution", 1, 0, 1, 1, 2, true},
  };
  const bool blas_backward = BlasSharesOpenMPThreads();
  for (const char* setting : {"dnnl", "blas"}) {
    setenv("FCRN_DNNL_1X1", setting, 1);
    for (const ConvCase& c : cases) {
      const std::string name = c.Name() + ", FCRN_DNNL_1X1=" + setting;
      shared_ptr<Layer<float> > reference =
          Make(c, ConvolutionParameter_Engine_CAFFE);
      shared_ptr<Layer<float> > layer =
          Make(c, ConvolutionParameter_Engine_DEFAULT);
      ASSERT_TRUE(IsDnnl(layer));
      ExpectSameAsReference(reference.get(), layer.get(), {2, 4, 7, 6}, 1e-5,
                            name);
      const DnnlConvolutionLayer<float>* dnnl =
          static_cast<DnnlConvolutionLayer<float>*>(layer.get());
      const bool in_dnnl = !blas_backward || !strcmp(setting, "dnnl");
      EXPECT_EQ(blas_backward, dnnl->uses_blas_backward()) << name;
      EXPECT_EQ(in_dnnl, dnnl->uses_dnnl()) << name;
      // oneDNN's GEMM on the blobs, not Caffe's code behind its back.
      if (c.group == 1) EXPECT_EQ(in_dnnl, dnnl->uses_dnnl_forward()) << name;
    }
  }
  unsetenv("FCRN_DNNL_1X1");
  // A strided 1x1 convolution is not one GEMM on the blobs: oneDNN runs it.
  const ConvCase strided = {"Convolution", 1, 0, 2, 1, 1, true};
  shared_ptr<Layer<float> > layer =
      Make(strided, ConvolutionParameter_Engine_DEFAULT);
  Blob<float> bottom(1, 4, 8, 8), top;
  layer->SetUp(vector<Blob<float>*>(1, &bottom), vector<Blob<float>*>(1, &top));
  EXPECT_TRUE(static_cast<DnnlConvolutionLayer<float>*>(layer.get())
              ->uses_dnnl());
  EXPECT_FALSE(static_cast<DnnlConvolutionLayer<float>*>(layer.get())
               ->uses_blas_backward());
}

// The shared im2col buffer grows when a pass uses it, not when a layer that
// never does (its passes run in oneDNN) is set up: here it ends as large as
// the small im2col layer needs. A thread of its own starts with no buffer.
TEST_F(DnnlConvolutionTest, TestSharedColBufferGrowsOnUse) {
  size_t bytes = 0;
  std::thread([&bytes] {
    const ConvCase c = {"Convolution", 3, 1, 1, 1, 1, true};
    Blob<float> large(1, 16, 32, 32), small(1, 4, 8, 8), top;
    vector<Blob<float>*> top_vec(1, &top);
    shared_ptr<Layer<float> > dnnl = LayerRegistry<float>::CreateLayer(
        ConvParam(c, ConvolutionParameter_Engine_DEFAULT, 16));
    const vector<Blob<float>*> large_vec(1, &large), small_vec(1, &small);
    dnnl->SetUp(large_vec, top_vec);
    dnnl->Forward(large_vec, top_vec);
    ASSERT_TRUE(static_cast<DnnlConvolutionLayer<float>*>(dnnl.get())
                ->uses_dnnl());
    shared_ptr<Layer<float> > im2col =
        Make(c, ConvolutionParameter_Engine_CAFFE);
    im2col->SetUp(small_vec, top_vec);
    im2col->Forward(small_vec, top_vec);
    bytes = BaseConvolutionLayer<float>::SharedColBufferBytes();
  }).join();
  EXPECT_EQ(4 * 3 * 3 * 8 * 8 * sizeof(float), bytes);
}

// A 1x1 convolution's gradient goes straight into the input's diff: its
// backward pass through the BLAS leaves the shared im2col buffer as it is
// (empty, on a thread of its own), with either engine.
TEST_F(DnnlConvolutionTest, TestOneByOneBackwardTakesNoColBuffer) {
  for (ConvolutionParameter_Engine engine :
       {ConvolutionParameter_Engine_CAFFE, ConvolutionParameter_Engine_DEFAULT}) {
    size_t bytes = 1;
    std::thread([&bytes, engine] {
      setenv("FCRN_DNNL_1X1", "blas", 1);
      const ConvCase c = {"Convolution", 1, 0, 1, 1, 1, true};
      shared_ptr<Layer<float> > layer = Make(c, engine);
      Blob<float> bottom(2, 8, 9, 9), top;
      FillerParameter filler_param;
      GaussianFiller<float> filler(filler_param);
      filler.Fill(&bottom);
      const vector<Blob<float>*> bottom_vec(1, &bottom), top_vec(1, &top);
      layer->SetUp(bottom_vec, top_vec);
      layer->Forward(bottom_vec, top_vec);
      filler.Fill(&top);
      caffe_copy(top.count(), top.cpu_data(), top.mutable_cpu_diff());
      layer->Backward(top_vec, vector<bool>(1, true), bottom_vec);
      bytes = BaseConvolutionLayer<float>::SharedColBufferBytes();
      unsetenv("FCRN_DNNL_1X1");
    }).join();
    EXPECT_EQ(0, bytes) << "engine " << engine;
  }
}

#endif  // USE_DNNL

}  // namespace caffe
