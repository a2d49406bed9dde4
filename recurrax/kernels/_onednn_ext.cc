// oneDNN's fused RNN primitives behind XLA's FFI: one recurrent layer, forward and backward.
//
// The math and the choice of path live in Python (recurrax/kernels/_onednn.py); this file only
// moves buffers between XLA and oneDNN. One call runs a whole layer (all T steps, one or both
// directions) as oneDNN's vanilla RNN, LSTM, GRU or LBR-GRU primitive, in float32.
//
// Buffer layouts (L = 1 layer, Dn = 1 or 2 directions, G gates, Gb bias rows):
//   x        (T, N, C) time-major, or (N, T, C) with batch_first      oneDNN tnc / ntc
//   h0, c0   (Dn, N, H)                                                ldnc (L folded)
//   w_x      (Dn, C, G, H)   w_h (Dn, H, G, H)                         ldigo
//   bias     (Dn, Gb, H)                                               ldgo
//   y        like x with Dn·H features (directions concatenated)
//   hT, cT   (Dn, N, H)
//   workspace: bytes oneDNN keeps between forward_training and backward (size from
//   `workspace_bytes`). c0 / cT are read / written for the LSTM only.
//
// Primitives are built once per configuration and cached: building one JIT-compiles oneDNN's
// kernels (milliseconds). The scratchpad is ours (user mode), one buffer per calling thread, so
// one cached primitive can run on several XLA threads at once.

#include <Python.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Cell : int64_t { kTanh = 0, kRelu = 1, kSigmoid = 2, kLstm = 3, kLbrGru = 4, kGru = 5 };

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Config {
  int64_t cell, T, N, C, H, dirs;
  bool batch_first;

  int64_t gates() const { return cell == kLstm ? 4 : (cell == kLbrGru || cell == kGru) ? 3 : 1; }
  int64_t bias_gates() const { return cell == kLbrGru ? 4 : gates(); }
  bool lstm() const { return cell == kLstm; }
  std::string key(const char* prop) const {
    std::ostringstream s;
    s << prop << ':' << cell << ':' << T << ':' << N << ':' << C << ':' << H << ':' << dirs << ':'
      << batch_first;
    return s.str();
  }
};

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using md = dnnl::memory::desc;

struct Descs {
  md src_layer, src_iter, src_iter_c, weights_layer, weights_iter, bias, dst_layer, dst_iter,
      dst_iter_c;
  md user_weights_layer, user_weights_iter;
};

Descs descs(const Config& c, bool any_weights) {
  const tag layer_tag = c.batch_first ? tag::ntc : tag::tnc;
  const int64_t G = c.gates();
  Descs d;
  d.src_layer = md({c.T, c.N, c.C}, dt::f32, layer_tag);
  d.dst_layer = md({c.T, c.N, c.dirs * c.H}, dt::f32, layer_tag);
  d.src_iter = md({1, c.dirs, c.N, c.H}, dt::f32, tag::ldnc);
  d.dst_iter = d.src_iter;
  if (c.lstm()) {
    d.src_iter_c = d.src_iter;
    d.dst_iter_c = d.src_iter;
  }
  d.user_weights_layer = md({1, c.dirs, c.C, G, c.H}, dt::f32, tag::ldigo);
  d.user_weights_iter = md({1, c.dirs, c.H, G, c.H}, dt::f32, tag::ldigo);
  d.weights_layer = any_weights ? md({1, c.dirs, c.C, G, c.H}, dt::f32, tag::any) : d.user_weights_layer;
  d.weights_iter = any_weights ? md({1, c.dirs, c.H, G, c.H}, dt::f32, tag::any) : d.user_weights_iter;
  d.bias = md({1, c.dirs, c.bias_gates(), c.H}, dt::f32, tag::ldgo);
  return d;
}

dnnl::rnn_direction direction(const Config& c, bool reverse) {
  if (c.dirs == 2) return dnnl::rnn_direction::bidirectional_concat;
  return reverse ? dnnl::rnn_direction::unidirectional_right2left
                 : dnnl::rnn_direction::unidirectional_left2right;
}

dnnl::algorithm activation(const Config& c) {
  return c.cell == kRelu ? dnnl::algorithm::eltwise_relu
         : c.cell == kSigmoid ? dnnl::algorithm::eltwise_logistic
                              : dnnl::algorithm::eltwise_tanh;
}

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A forward primitive descriptor of the configured cell (oneDNN has one class per cell).
dnnl::rnn_primitive_desc_base forward_pd(const Config& c, bool reverse, dnnl::prop_kind prop) {
  const Descs d = descs(c, true);
  const auto dir = direction(c, reverse);
  const auto attr = user_scratchpad();
  auto& e = cpu_engine();
  switch (c.cell) {
    case kLstm:
      return dnnl::lstm_forward::primitive_desc(e, prop, dir, d.src_layer, d.src_iter, d.src_iter_c,
                                                d.weights_layer, d.weights_iter, d.bias, d.dst_layer,
                                                d.dst_iter, d.dst_iter_c, attr);
    case kLbrGru:
      return dnnl::lbr_gru_forward::primitive_desc(e, prop, dir, d.src_layer, d.src_iter,
                                                   d.weights_layer, d.weights_iter, d.bias,
                                                   d.dst_layer, d.dst_iter, attr);
    case kGru:
      return dnnl::gru_forward::primitive_desc(e, prop, dir, d.src_layer, d.src_iter, d.weights_layer,
                                               d.weights_iter, d.bias, d.dst_layer, d.dst_iter, attr);
    default:
      return dnnl::vanilla_rnn_forward::primitive_desc(e, prop, activation(c), dir, d.src_layer,
                                                       d.src_iter, d.weights_layer, d.weights_iter,
                                                       d.bias, d.dst_layer, d.dst_iter, attr);
  }
}

dnnl::rnn_primitive_desc_base backward_pd(const Config& c, bool reverse,
                                          const dnnl::rnn_primitive_desc_base& hint) {
  const Descs d = descs(c, true);
  const auto dir = direction(c, reverse);
  const auto attr = user_scratchpad();
  auto& e = cpu_engine();
  const auto bwd = dnnl::prop_kind::backward;
  switch (c.cell) {
    case kLstm:
      return dnnl::lstm_backward::primitive_desc(
          e, bwd, dir, d.src_layer, d.src_iter, d.src_iter_c, d.weights_layer, d.weights_iter, d.bias,
          d.dst_layer, d.dst_iter, d.dst_iter_c, d.src_layer, d.src_iter, d.src_iter_c,
          d.weights_layer, d.weights_iter, d.bias, d.dst_layer, d.dst_iter, d.dst_iter_c,
          dnnl::lstm_forward::primitive_desc(hint.get()), attr);
    case kLbrGru:
      return dnnl::lbr_gru_backward::primitive_desc(
          e, bwd, dir, d.src_layer, d.src_iter, d.weights_layer, d.weights_iter, d.bias, d.dst_layer,
          d.dst_iter, d.src_layer, d.src_iter, d.weights_layer, d.weights_iter, d.bias, d.dst_layer,
          d.dst_iter, dnnl::lbr_gru_forward::primitive_desc(hint.get()), attr);
    case kGru:
      return dnnl::gru_backward::primitive_desc(
          e, bwd, dir, d.src_layer, d.src_iter, d.weights_layer, d.weights_iter, d.bias, d.dst_layer,
          d.dst_iter, d.src_layer, d.src_iter, d.weights_layer, d.weights_iter, d.bias, d.dst_layer,
          d.dst_iter, dnnl::gru_forward::primitive_desc(hint.get()), attr);
    default:
      return dnnl::vanilla_rnn_backward::primitive_desc(
          e, bwd, activation(c), dir, d.src_layer, d.src_iter, d.weights_layer, d.weights_iter,
          d.bias, d.dst_layer, d.dst_iter, d.src_layer, d.src_iter, d.weights_layer, d.weights_iter,
          d.bias, d.dst_layer, d.dst_iter, dnnl::vanilla_rnn_forward::primitive_desc(hint.get()),
          attr);
  }
}

// A cached primitive with its descriptor; `reverse` is folded into the key by the caller.
struct Entry {
  dnnl::rnn_primitive_desc_base pd;
  dnnl::primitive prim;
};

std::mutex cache_mutex;
std::unordered_map<std::string, std::shared_ptr<Entry>> cache;

std::shared_ptr<Entry> cached(const std::string& key, const std::function<dnnl::rnn_primitive_desc_base()>& make) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto entry = std::make_shared<Entry>();
  entry->pd = make();
  entry->prim = dnnl::primitive(entry->pd);
  std::lock_guard<std::mutex> lock(cache_mutex);
  return cache.emplace(key, entry).first->second;
}

std::shared_ptr<Entry> forward_entry(const Config& c, bool reverse, bool training) {
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  return cached(c.key(training ? "fwd_train" : "fwd_infer") + (reverse ? ":r" : ":l"),
                [&] { return forward_pd(c, reverse, prop); });
}

std::shared_ptr<Entry> backward_entry(const Config& c, bool reverse) {
  auto fwd = forward_entry(c, reverse, true);
  return cached(c.key("bwd") + (reverse ? ":r" : ":l"), [&] { return backward_pd(c, reverse, fwd->pd); });
}

// Memory in the primitive's layout `want`, filled from (or, with `to_user`, later written back
// to) the user's buffer when the layouts differ.
struct Staged {
  dnnl::memory user, inner;
  bool reordered;
};

Staged stage(const md& user_desc, const md& want, void* data, dnnl::stream& s, bool fill) {
  Staged st;
  st.user = dnnl::memory(user_desc, cpu_engine(), data);
  st.reordered = want != user_desc;
  if (!st.reordered) {
    st.inner = st.user;
    return st;
  }
  st.inner = dnnl::memory(want, cpu_engine());
  if (fill) dnnl::reorder(st.user, st.inner).execute(s, st.user, st.inner);
  return st;
}

// The scratchpad (tens of MB: every step's gates) is kept per thread and reused: a fresh buffer
// on every call cost as much as the primitive itself (zero-filling and first-touch page faults).
uint8_t* scratchpad(const dnnl::rnn_primitive_desc_base& pd) {
  thread_local std::unique_ptr<uint8_t[]> buffer;
  thread_local size_t capacity = 0;
  const size_t size = pd.scratchpad_desc().get_size();
  if (size > capacity) {
    buffer.reset(new uint8_t[size]);
    capacity = size;
  }
  return buffer.get();
}

ffi::Error check_shapes(const Config& c, ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& w_x,
                        ffi::Buffer<ffi::F32>& w_h, ffi::Buffer<ffi::F32>& bias) {
  const size_t G = c.gates();
  if (x.element_count() != size_t(c.T * c.N * c.C) ||
      w_x.element_count() != size_t(c.dirs * c.C * G * c.H) ||
      w_h.element_count() != size_t(c.dirs * c.H * G * c.H) ||
      bias.element_count() != size_t(c.dirs * c.bias_gates() * c.H)) {
    return ffi::Error::InvalidArgument("recurrax onednn: buffer sizes do not match the configuration");
  }
  return ffi::Error::Success();
}

Config config(int64_t cell, int64_t T, int64_t N, int64_t C, int64_t H, int64_t dirs, bool batch_first) {
  return Config{cell, T, N, C, H, dirs, batch_first};
}

template <typename F>
ffi::Error guarded(F&& body) {
  try {
    return body();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("recurrax onednn: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("recurrax onednn: ") + e.what());
  }
}

// One layer forward, on raw buffers (layouts in the file's header). `workspace` may be null
// for inference.
void forward(const Config& c, bool reverse, bool training, void* x, void* h0, void* c0, void* w_x, void* w_h,
             void* bias, void* y, void* hT, void* cT, void* workspace) {
  auto entry = forward_entry(c, reverse, training);
  const auto& pd = entry->pd;
  const Descs d = descs(c, false);
  auto& e = cpu_engine();
  dnnl::stream s(e);
  Staged wl = stage(d.user_weights_layer, pd.weights_layer_desc(), w_x, s, true);
  Staged wi = stage(d.user_weights_iter, pd.weights_iter_desc(), w_h, s, true);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC_LAYER, dnnl::memory(d.src_layer, e, x)},
      {DNNL_ARG_SRC_ITER, dnnl::memory(d.src_iter, e, h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl.inner},
      {DNNL_ARG_WEIGHTS_ITER, wi.inner},
      {DNNL_ARG_BIAS, dnnl::memory(d.bias, e, bias)},
      {DNNL_ARG_DST_LAYER, dnnl::memory(d.dst_layer, e, y)},
      {DNNL_ARG_DST_ITER, dnnl::memory(d.dst_iter, e, hT)},
      {DNNL_ARG_SCRATCHPAD, dnnl::memory(pd.scratchpad_desc(), e, scratchpad(pd))},
  };
  if (c.lstm()) {
    args[DNNL_ARG_SRC_ITER_C] = dnnl::memory(d.src_iter_c, e, c0);
    args[DNNL_ARG_DST_ITER_C] = dnnl::memory(d.dst_iter_c, e, cT);
  }
  if (training) args[DNNL_ARG_WORKSPACE] = dnnl::memory(pd.workspace_desc(), e, workspace);
  entry->prim.execute(s, args);
  s.wait();
}

// Gradients of one layer from forward_training's results and workspace, on raw buffers.
void backward(const Config& c, bool reverse, void* x, void* h0, void* c0, void* w_x, void* w_h, void* bias,
              void* y, void* hT, void* cT, void* workspace, void* dy, void* dhT, void* dcT, void* dx, void* dh0,
              void* dc0, void* dw_x, void* dw_h, void* dbias) {
  auto entry = backward_entry(c, reverse);
  const auto& pd = entry->pd;
  const Descs d = descs(c, false);
  auto& e = cpu_engine();
  dnnl::stream s(e);
  Staged wl = stage(d.user_weights_layer, pd.weights_layer_desc(), w_x, s, true);
  Staged wi = stage(d.user_weights_iter, pd.weights_iter_desc(), w_h, s, true);
  Staged dwl = stage(d.user_weights_layer, pd.diff_weights_layer_desc(), dw_x, s, false);
  Staged dwi = stage(d.user_weights_iter, pd.diff_weights_iter_desc(), dw_h, s, false);
  // oneDNN accumulates weight and bias gradients into their buffers: start them at zero.
  for (const Staged* st : {&dwl, &dwi}) std::memset(st->inner.get_data_handle(), 0, st->inner.get_desc().get_size());
  std::memset(dbias, 0, d.bias.get_size());
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC_LAYER, dnnl::memory(d.src_layer, e, x)},
      {DNNL_ARG_SRC_ITER, dnnl::memory(d.src_iter, e, h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl.inner},
      {DNNL_ARG_WEIGHTS_ITER, wi.inner},
      {DNNL_ARG_BIAS, dnnl::memory(d.bias, e, bias)},
      {DNNL_ARG_DST_LAYER, dnnl::memory(d.dst_layer, e, y)},
      {DNNL_ARG_DST_ITER, dnnl::memory(d.dst_iter, e, hT)},
      {DNNL_ARG_WORKSPACE, dnnl::memory(pd.workspace_desc(), e, workspace)},
      {DNNL_ARG_DIFF_DST_LAYER, dnnl::memory(d.dst_layer, e, dy)},
      {DNNL_ARG_DIFF_DST_ITER, dnnl::memory(d.dst_iter, e, dhT)},
      {DNNL_ARG_DIFF_SRC_LAYER, dnnl::memory(d.src_layer, e, dx)},
      {DNNL_ARG_DIFF_SRC_ITER, dnnl::memory(d.src_iter, e, dh0)},
      {DNNL_ARG_DIFF_WEIGHTS_LAYER, dwl.inner},
      {DNNL_ARG_DIFF_WEIGHTS_ITER, dwi.inner},
      {DNNL_ARG_DIFF_BIAS, dnnl::memory(d.bias, e, dbias)},
      {DNNL_ARG_SCRATCHPAD, dnnl::memory(pd.scratchpad_desc(), e, scratchpad(pd))},
  };
  if (c.lstm()) {
    args[DNNL_ARG_SRC_ITER_C] = dnnl::memory(d.src_iter_c, e, c0);
    args[DNNL_ARG_DST_ITER_C] = dnnl::memory(d.dst_iter_c, e, cT);
    args[DNNL_ARG_DIFF_DST_ITER_C] = dnnl::memory(d.dst_iter_c, e, dcT);
    args[DNNL_ARG_DIFF_SRC_ITER_C] = dnnl::memory(d.src_iter_c, e, dc0);
  } else {
    std::memset(dc0, 0, d.src_iter.get_size());
  }
  entry->prim.execute(s, args);
  if (dwl.reordered) dnnl::reorder(dwl.inner, dwl.user).execute(s, dwl.inner, dwl.user);
  if (dwi.reordered) dnnl::reorder(dwi.inner, dwi.user).execute(s, dwi.inner, dwi.user);
  s.wait();
}

ffi::Error RnnForward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                      ffi::Buffer<ffi::F32> w_x, ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> bias,
                      ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> hT,
                      ffi::ResultBuffer<ffi::F32> cT, ffi::ResultBuffer<ffi::U8> workspace, int64_t cell,
                      int64_t steps, int64_t batch, int64_t input_size, int64_t hidden_size,
                      int64_t directions, bool reverse, bool batch_first, bool training) {
  return guarded([&]() -> ffi::Error {
    const Config c = config(cell, steps, batch, input_size, hidden_size, directions, batch_first);
    if (auto err = check_shapes(c, x, w_x, w_h, bias); err.failure()) return err;
    if (training && workspace->size_bytes() < forward_entry(c, reverse, true)->pd.workspace_desc().get_size())
      return ffi::Error::InvalidArgument("recurrax onednn: workspace buffer too small");
    forward(c, reverse, training, x.untyped_data(), h0.untyped_data(), c0.untyped_data(), w_x.untyped_data(),
            w_h.untyped_data(), bias.untyped_data(), y->untyped_data(), hT->untyped_data(), cT->untyped_data(),
            workspace->untyped_data());
    return ffi::Error::Success();
  });
}

ffi::Error RnnBackward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                       ffi::Buffer<ffi::F32> w_x, ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> bias,
                       ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> hT, ffi::Buffer<ffi::F32> cT,
                       ffi::Buffer<ffi::U8> workspace, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> dhT,
                       ffi::Buffer<ffi::F32> dcT, ffi::ResultBuffer<ffi::F32> dx,
                       ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dc0,
                       ffi::ResultBuffer<ffi::F32> dw_x, ffi::ResultBuffer<ffi::F32> dw_h,
                       ffi::ResultBuffer<ffi::F32> dbias, int64_t cell, int64_t steps, int64_t batch,
                       int64_t input_size, int64_t hidden_size, int64_t directions, bool reverse,
                       bool batch_first) {
  return guarded([&]() -> ffi::Error {
    const Config c = config(cell, steps, batch, input_size, hidden_size, directions, batch_first);
    if (auto err = check_shapes(c, x, w_x, w_h, bias); err.failure()) return err;
    backward(c, reverse, x.untyped_data(), h0.untyped_data(), c0.untyped_data(), w_x.untyped_data(),
             w_h.untyped_data(), bias.untyped_data(), y.untyped_data(), hT.untyped_data(), cT.untyped_data(),
             workspace.untyped_data(), dy.untyped_data(), dhT.untyped_data(), dcT.untyped_data(),
             dx->untyped_data(), dh0->untyped_data(), dc0->untyped_data(), dw_x->untyped_data(),
             dw_h->untyped_data(), dbias->untyped_data());
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecurraxOnednnRnnForward, RnnForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias
                                  .Ret<ffi::Buffer<ffi::F32>>()  // y
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hT
                                  .Ret<ffi::Buffer<ffi::F32>>()  // cT
                                  .Ret<ffi::Buffer<ffi::U8>>()   // workspace
                                  .Attr<int64_t>("cell")
                                  .Attr<int64_t>("steps")
                                  .Attr<int64_t>("batch")
                                  .Attr<int64_t>("input_size")
                                  .Attr<int64_t>("hidden_size")
                                  .Attr<int64_t>("directions")
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("batch_first")
                                  .Attr<bool>("training"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecurraxOnednnRnnBackward, RnnBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias
                                  .Arg<ffi::Buffer<ffi::F32>>()  // y
                                  .Arg<ffi::Buffer<ffi::F32>>()  // hT
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cT
                                  .Arg<ffi::Buffer<ffi::U8>>()   // workspace
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dy
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dhT
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dcT
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dx
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dh0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dc0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dw_x
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dw_h
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dbias
                                  .Attr<int64_t>("cell")
                                  .Attr<int64_t>("steps")
                                  .Attr<int64_t>("batch")
                                  .Attr<int64_t>("input_size")
                                  .Attr<int64_t>("hidden_size")
                                  .Attr<int64_t>("directions")
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("batch_first"));

// ----------------------------------------------------------------------------- Python module

namespace {

PyObject* capsule(void* fn) { return PyCapsule_New(fn, nullptr, nullptr); }

PyObject* py_registrations(PyObject*, PyObject*) {
  PyObject* dict = PyDict_New();
  PyObject* fwd = capsule(reinterpret_cast<void*>(RecurraxOnednnRnnForward));
  PyObject* bwd = capsule(reinterpret_cast<void*>(RecurraxOnednnRnnBackward));
  PyDict_SetItemString(dict, "recurrax_onednn_rnn_forward", fwd);
  PyDict_SetItemString(dict, "recurrax_onednn_rnn_backward", bwd);
  Py_DECREF(fwd);
  Py_DECREF(bwd);
  return dict;
}

// workspace_bytes(cell, T, N, C, H, directions, reverse, batch_first) -> int: the size of
// forward_training's workspace, which XLA allocates as an output of the forward call. Raises
// RuntimeError when oneDNN has no implementation for the configuration.
PyObject* py_workspace_bytes(PyObject*, PyObject* args) {
  long long cell, T, N, C, H, dirs;
  int reverse, batch_first;
  if (!PyArg_ParseTuple(args, "LLLLLLpp", &cell, &T, &N, &C, &H, &dirs, &reverse, &batch_first))
    return nullptr;
  try {
    const Config c = config(cell, T, N, C, H, dirs, batch_first);
    auto entry = forward_entry(c, reverse, true);
    backward_entry(c, reverse);  // fail here, at trace time, if the backward is not implemented
    return PyLong_FromSize_t(entry->pd.workspace_desc().get_size());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

// time_primitive(cell, T, N, C, H, directions, batch_first, repeats) -> (inference_ms, training_ms):
// this file's forward (inference) and forward (training) + backward on buffers of its own,
// without XLA: oneDNN's primitives with the weight reorders and scratchpad every call makes,
// so that the cost of the FFI call around them shows beside `rnn`'s time.
PyObject* py_time_primitive(PyObject*, PyObject* args) {
  long long cell, T, N, C, H, dirs, repeats;
  int batch_first;
  if (!PyArg_ParseTuple(args, "LLLLLLpL", &cell, &T, &N, &C, &H, &dirs, &batch_first, &repeats)) return nullptr;
  try {
    const Config c = config(cell, T, N, C, H, dirs, batch_first);
    const size_t G = c.gates();
    auto buffer = [](size_t n) { return std::vector<float>(n, 0.01f); };
    auto x = buffer(T * N * C), dx = x, y = buffer(T * N * dirs * H), dy = y;
    auto h0 = buffer(dirs * N * H), c0 = h0, hT = h0, cT = h0, dh0 = h0, dc0 = h0, dhT = h0, dcT = h0;
    auto w_x = buffer(dirs * C * G * H), dw_x = w_x, w_h = buffer(dirs * H * G * H), dw_h = w_h;
    auto bias = buffer(dirs * c.bias_gates() * H), dbias = bias;
    std::vector<uint8_t> workspace(forward_entry(c, false, true)->pd.workspace_desc().get_size());
    PyObject* inference = PyList_New(0);
    PyObject* training = PyList_New(0);
    Py_BEGIN_ALLOW_THREADS
    for (long long r = 0; r <= repeats; ++r) {  // r = 0 warms up
      auto t0 = std::chrono::steady_clock::now();
      forward(c, false, false, x.data(), h0.data(), c0.data(), w_x.data(), w_h.data(), bias.data(), y.data(),
              hT.data(), cT.data(), nullptr);
      auto t1 = std::chrono::steady_clock::now();
      forward(c, false, true, x.data(), h0.data(), c0.data(), w_x.data(), w_h.data(), bias.data(), y.data(),
              hT.data(), cT.data(), workspace.data());
      backward(c, false, x.data(), h0.data(), c0.data(), w_x.data(), w_h.data(), bias.data(), y.data(), hT.data(),
               cT.data(), workspace.data(), dy.data(), dhT.data(), dcT.data(), dx.data(), dh0.data(), dc0.data(),
               dw_x.data(), dw_h.data(), dbias.data());
      auto t2 = std::chrono::steady_clock::now();
      if (r == 0) continue;
      PyGILState_STATE gil = PyGILState_Ensure();
      PyObject* a = PyFloat_FromDouble(std::chrono::duration<double, std::milli>(t1 - t0).count());
      PyObject* b = PyFloat_FromDouble(std::chrono::duration<double, std::milli>(t2 - t1).count());
      PyList_Append(inference, a);
      PyList_Append(training, b);
      Py_DECREF(a);
      Py_DECREF(b);
      PyGILState_Release(gil);
    }
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(NN)", inference, training);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

PyObject* py_version(PyObject*, PyObject*) {
  const dnnl_version_t* v = dnnl_version();
  return Py_BuildValue("(iii)", v->major, v->minor, v->patch);
}

PyMethodDef methods[] = {
    {"registrations", py_registrations, METH_NOARGS, "FFI targets: name -> PyCapsule."},
    {"workspace_bytes", py_workspace_bytes, METH_VARARGS, "Bytes of forward_training's workspace."},
    {"onednn_version", py_version, METH_NOARGS, "(major, minor, patch) of the oneDNN loaded."},
    {"time_primitive", py_time_primitive, METH_VARARGS, "ms of the primitives alone: (inference, training)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_onednn_ext", "oneDNN RNN primitives as XLA FFI targets.", -1,
                      methods};

}  // namespace

PyMODINIT_FUNC PyInit__onednn_ext() { return PyModule_Create(&module); }
