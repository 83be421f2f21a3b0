#!/usr/bin/env python3
"""Converts dlib's face recogniser, dlib_face_recognition_resnet_model_v1.dat (Davis King, CC0),
into an ONNX model that ONNX Runtime and tract run.

    python3 scripts/dlib-to-onnx.py IN.dat OUT.onnx

Needs numpy and onnx (fetch-models.sh installs the pinned versions into a temporary venv).

The .dat is dlib's binary serialization of `anet_type` from dlib's
tools/python/src/face_recognition.cpp (also examples/dnn_face_recognition_ex.cpp):

    loss_metric<fc_no_bias<128,avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,input_rgb_image_sized<150>>>>>>>>>>>>>

    ares<N>      = relu<add_prev1<affine<con<N,3,3,1,1,relu<affine<con<N,3,3,1,1,tag1<...>>>>>>>>>
    ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<
                       affine<con<N,3,3,1,1,relu<affine<con<N,3,3,2,2,tag1<...>>>>>>>>>>>>
    alevel0 = ares_down<256>;   alevel1 = ares<256,ares<256,ares_down<256>>>
    alevel2 = ares<128,ares<128,ares_down<128>>>
    alevel3 = ares<64,ares<64,ares<64,ares_down<64>>>>;   alevel4 = ares<32,ares<32,ares<32>>>

The whole file is parsed (every byte accounted for) and every layer's kind, shape, stride and
padding is checked against that definition. The ONNX graph:

- input `input`: float32 [1, 3, 150, 150], NCHW, RGB, already normalised by the caller as
  (pixel - mean) / 256 per channel, pixel in 0..255, with dlib's means (read from the file and
  printed: R 122.782, G 117.001, B 104.298). The normalisation is NOT in the graph.
- output `embedding`: float32 [1, 128], the raw descriptor (not L2-normalised; dlib's own
  descriptors are close to unit length but not exactly).
- each affine layer (per-channel gamma, beta) is folded into the convolution before it;
- add_prev of tensors of different shapes follows dlib's tt::add: the result has the larger
  size in each dimension and a missing value counts as zero, so the smaller operand is
  zero-padded at the end (channels of the down-sampling skip; rows and columns of the strided
  convolution in alevel1 and alevel0, 3x3 against 4x4 and 1x1 against 2x2).

Opset 13, IR version 8, fixed producer name and version, no timestamps: the output is
byte-for-byte the same on every run for the same input and onnx version.
"""

import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Reader:
    """dlib/serialize.h decoding."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(f"unexpected end of file at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, signed=True):
        control = self.take(1)[0]
        if signed:
            negative, size = bool(control & 0x80), control & 0x0F
        else:
            negative, size = False, control & 0x8F
        if size == 0 or size > 8:
            raise ValueError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little")
        return -value if negative else value

    def uint(self):
        return self.int(signed=False)

    def float(self):
        # float_details: int64 mantissa, int16 exponent; value = mantissa * 2^exponent.
        if self.data[self.pos] & 0x70:
            raise ValueError(f"old ASCII float encoding at byte {self.pos}: not supported")
        mantissa = self.int()
        exponent = self.int()
        if exponent >= 32000:
            raise ValueError(f"non-finite float at byte {self.pos}")
        return float(np.float32(np.ldexp(float(mantissa), exponent)))

    def bool(self):
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise ValueError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def string(self):
        return self.take(self.uint()).decode("latin-1")

    def expect_string(self, *allowed):
        at = self.pos
        s = self.string()
        if s not in allowed:
            raise ValueError(f"expected one of {allowed} at byte {at}, found {s!r}")
        return s

    def expect_int(self, what, *allowed):
        at = self.pos
        v = self.int()
        if v not in allowed:
            raise ValueError(f"{what}: expected version {allowed} at byte {at}, found {v}")
        return v

    def tensor(self):
        """resizable_tensor: version 2, (n, k, nr, nc), then little-endian float32 data."""
        self.expect_int("resizable_tensor", 2)
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self):
        self.expect_int("alias_tensor", 1)
        return tuple(self.int() for _ in range(4))


# --- the network definition, outermost first -------------------------------------------------


def con(n, k, s):
    return ("con", n, k, s)


def ares(n):
    return [("relu",), ("add_prev", 1), ("affine",), con(n, 3, 1), ("relu",), ("affine",),
            con(n, 3, 1), ("tag", 1)]


def ares_down(n):
    return [("relu",), ("add_prev", 2), ("avg_pool", 2, 2), ("skip", 1), ("tag", 2), ("affine",),
            con(n, 3, 1), ("relu",), ("affine",), con(n, 3, 2), ("tag", 1)]


NETWORK = (
    [("fc", 128), ("avg_pool", 0, 1)]
    + ares_down(256)                                      # alevel0
    + ares(256) + ares(256) + ares_down(256)              # alevel1
    + ares(128) + ares(128) + ares_down(128)              # alevel2
    + ares(64) + ares(64) + ares(64) + ares_down(64)      # alevel3
    + ares(32) + ares(32) + ares(32)                      # alevel4
    + [("max_pool", 3, 2), ("relu",), ("affine",), con(32, 7, 2)]
)


def read_details(r, spec):
    """Reads one layer's details (layers.h deserialize) and checks them against spec."""
    kind = spec[0]
    if kind == "con":
        _, n, k, s = spec
        version = r.expect_string("con_4", "con_5", "con_6")
        params = r.tensor()
        num_filters = r.int()
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        filters = r.alias_tensor()
        biases = r.alias_tensor()
        for _ in range(4):  # learning rate and weight decay multipliers
            r.float()
        use_bias = r.bool() if version in ("con_5", "con_6") else True
        if version == "con_6" and r.bool():
            raise ValueError("con_ with fused relu is not supported")
        want_pad = 0 if s != 1 else k // 2
        if (num_filters, nr, nc, sy, sx, py, px) != (n, k, k, s, s, want_pad, want_pad):
            raise ValueError(f"con_ mismatch: {(num_filters, nr, nc, sy, sx, py, px)} for {spec}")
        if filters[0] != n or filters[2:] != (k, k):
            raise ValueError(f"con_ filters shape {filters} for {spec}")
        nw = int(np.prod(filters))
        flat = params.reshape(-1)
        w = flat[:nw].reshape(filters)
        if use_bias:
            if biases != (1, n, 1, 1):
                raise ValueError(f"con_ biases shape {biases}")
            b = flat[nw:nw + n]
            if flat.size != nw + n:
                raise ValueError("con_ params size")
        else:
            b = np.zeros(n, np.float32)
            if flat.size != nw:
                raise ValueError("con_ params size")
        return {"kind": "con", "w": w.copy(), "b": b.copy(), "stride": s, "pad": want_pad}
    if kind == "affine":
        version = r.expect_string("affine_", "affine_2", "bn_con2")
        if version == "bn_con2":
            raise ValueError("bn_con2 inside the file: not supported by this converter")
        params = r.tensor()
        gamma = r.alias_tensor()
        beta = r.alias_tensor()
        mode = r.int()
        disabled = r.bool() if version == "affine_2" else False
        if mode != 0:  # CONV_MODE
            raise ValueError(f"affine_ mode {mode}, expected CONV_MODE (0)")
        k = gamma[1]
        if gamma != (1, k, 1, 1) or beta != gamma or params.size != 2 * k:
            raise ValueError(f"affine_ shapes {gamma} {beta} {params.shape}")
        flat = params.reshape(-1)
        if disabled:
            return {"kind": "identity"}
        return {"kind": "affine", "gamma": flat[:k].copy(), "beta": flat[k:].copy()}
    if kind == "relu":
        version = r.expect_string("relu_", "relu_2")
        if version == "relu_2" and r.bool():
            return {"kind": "identity"}
        return {"kind": "relu"}
    if kind in ("max_pool", "avg_pool"):
        _, size, stride = spec
        r.expect_string(kind + "_2")
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        want_pad = 0 if stride != 1 else size // 2
        if (nr, nc, sy, sx, py, px) != (size, size, stride, stride, want_pad, want_pad):
            raise ValueError(f"{kind} mismatch: {(nr, nc, sy, sx, py, px)} for {spec}")
        return {"kind": kind, "size": size, "stride": stride, "pad": want_pad}
    if kind == "add_prev":
        r.expect_string("add_prev_")
        return {"kind": "add_prev", "tag": spec[1]}
    if kind == "fc":
        r.expect_string("fc_2", "fc_3")
        num_outputs = r.uint()
        num_inputs = r.uint()
        params = r.tensor()
        weights = r.alias_tensor()
        r.alias_tensor()  # biases (empty for fc_no_bias)
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        if bias_mode != 1:  # FC_NO_BIAS
            raise ValueError(f"fc_ bias mode {bias_mode}, expected FC_NO_BIAS (1)")
        if num_outputs != spec[1] or weights != (num_inputs, num_outputs, 1, 1):
            raise ValueError(f"fc_ shapes {num_outputs} {num_inputs} {weights}")
        if params.size != num_inputs * num_outputs:
            raise ValueError("fc_ params size")
        return {"kind": "fc", "w": params.reshape(-1).reshape(num_inputs, num_outputs).copy()}
    raise AssertionError(kind)


def read_flags(r, params_grad):
    """add_layer's state after the details: three bools and the cached tensors."""
    for _ in range(3):
        r.bool()
    tensors = [r.tensor(), r.tensor()]  # x_grad, cached_output
    if params_grad:
        tensors.append(r.tensor())  # params_grad (version 2) / grad_final (input layer)
    return tensors


def parse(data):
    r = Reader(data)
    r.expect_int("add_loss_layer", 1)
    if r.expect_string("loss_metric_", "loss_metric_2") == "loss_metric_2":
        r.float()  # margin
        r.float()  # distance threshold
    # Wrapper headers, outermost first: add_layer (version 1 or 2), tag and skip (version 1).
    # The stem con's add_layer is the one over the input layer, read below.
    versions = []
    for spec in NETWORK[:-1]:
        if spec[0] in ("tag", "skip"):
            r.expect_int(spec[0], 1)
            versions.append(None)
        else:
            versions.append(r.expect_int("add_layer", 1, 2))
    # The innermost add_layer, over the input layer.
    input_version = r.expect_int("add_layer (input)", 2, 3)
    r.expect_string("input_rgb_image_sized")
    means = [r.float() for _ in range(3)]
    if not np.allclose(means, [122.782, 117.001, 104.298], atol=1e-4):
        raise ValueError(f"input means {means}, expected 122.782, 117.001, 104.298")
    size = (r.uint(), r.uint())
    if size != (150, 150):
        raise ValueError(f"input size {size}")
    # The stem con's details come right after the input layer.
    layers = [None] * len(NETWORK)
    layers[-1] = read_details(r, NETWORK[-1])
    for _ in range(3):
        r.bool()
    r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, grad_final
    if input_version >= 3:
        r.uint()  # sample expansion factor
    # Then each enclosing layer's details and state, innermost first.
    for i in range(len(NETWORK) - 2, -1, -1):
        spec = NETWORK[i]
        if spec[0] in ("tag", "skip"):
            layers[i] = {"kind": spec[0], "tag": spec[1]}
            continue
        layers[i] = read_details(r, spec)
        read_flags(r, params_grad=versions[i] == 2)
    if r.pos != len(data):
        raise ValueError(f"{len(data) - r.pos} bytes left over after byte {r.pos}")
    return means, layers


# --- graph building --------------------------------------------------------------------------


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}_{self.count}"

    def init(self, prefix, array):
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), n))
        return n

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def build(layers):
    g = Graph()
    x, shape = "input", (3, 150, 150)  # (C, H, W)
    tags = {}
    i = len(layers) - 1
    while i >= 0:
        layer = layers[i]
        kind = layer["kind"]
        if kind == "con":
            w, b = layer["w"], layer["b"]
            if i > 0 and layers[i - 1]["kind"] == "affine":  # fold the affine above it
                gamma, beta = layers[i - 1]["gamma"], layers[i - 1]["beta"]
                w = (w.astype(np.float64) * gamma[:, None, None, None]).astype(np.float32)
                b = (b.astype(np.float64) * gamma + beta).astype(np.float32)
                i -= 1
            k, s, p = w.shape[2], layer["stride"], layer["pad"]
            if w.shape[1] != shape[0]:
                raise ValueError(f"con_ expects {w.shape[1]} channels, gets {shape[0]}")
            x = g.node("Conv", [x, g.init("w", w), g.init("b", b)], kernel_shape=[k, k],
                       strides=[s, s], pads=[p, p, p, p])
            shape = (w.shape[0], conv_out(shape[1], k, s, p), conv_out(shape[2], k, s, p))
        elif kind == "affine":
            k = shape[0]
            x = g.node("Mul", [x, g.init("gamma", layer["gamma"].reshape(1, k, 1, 1))])
            x = g.node("Add", [x, g.init("beta", layer["beta"].reshape(1, k, 1, 1))])
        elif kind == "relu":
            x = g.node("Relu", [x])
        elif kind == "identity":
            pass
        elif kind in ("max_pool", "avg_pool") and layer["size"] == 0:
            x = g.node("GlobalAveragePool", [x])
            shape = (shape[0], 1, 1)
        elif kind in ("max_pool", "avg_pool"):
            k, s, p = layer["size"], layer["stride"], layer["pad"]
            if p != 0:
                raise ValueError("padded pooling is not supported")  # dlib's padded avg differs
            op = "MaxPool" if kind == "max_pool" else "AveragePool"
            x = g.node(op, [x], kernel_shape=[k, k], strides=[s, s], pads=[0, 0, 0, 0])
            shape = (shape[0], conv_out(shape[1], k, s, 0), conv_out(shape[2], k, s, 0))
        elif kind == "tag":
            tags[layer["tag"]] = (x, shape)
        elif kind == "skip":
            x, shape = tags[layer["tag"]]
        elif kind == "add_prev":
            y, yshape = tags[layer["tag"]]
            out = tuple(max(a, c) for a, c in zip(shape, yshape))

            def pad(t, tshape):
                if tshape == out:
                    return t
                extra = [0] + [o - d for o, d in zip(out, tshape)]
                pads = np.array([0, 0, 0, 0] + extra, dtype=np.int64)
                return g.node("Pad", [t, g.init("pads", pads)], mode="constant")

            x = g.node("Add", [pad(x, shape), pad(y, yshape)])
            shape = out
        elif kind == "fc":
            x = g.node("Flatten", [x], axis=1)
            if layer["w"].shape[0] != shape[0] * shape[1] * shape[2]:
                raise ValueError("fc_ input size")
            x = g.node("MatMul", [x, g.init("fc", layer["w"])])
        else:
            raise AssertionError(kind)
        i -= 1
    g.nodes.append(helper.make_node("Identity", [x], ["embedding"], name="embedding"))
    graph = helper.make_graph(
        g.nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 150, 150])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 128])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="biomatch dlib-to-onnx", producer_version="1")
    model.ir_version = 8
    model.doc_string = (
        "dlib_face_recognition_resnet_model_v1 (Davis King, CC0), converted by biomatch "
        "scripts/dlib-to-onnx.py. Input: 1x3x150x150 RGB face chip (dlib get_face_chip, "
        "size 150, padding 0.25), (pixel - mean) / 256 with means R 122.782, G 117.001, "
        "B 104.298. Output: 1x128 descriptor, not normalised.")
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: dlib-to-onnx.py IN.dat OUT.onnx")
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    means, layers = parse(data)
    print("dlib-to-onnx: input means R %.6g G %.6g B %.6g" % tuple(means), file=sys.stderr)
    model = build(layers)
    with open(sys.argv[2], "wb") as f:
        f.write(model.SerializeToString(deterministic=True))


if __name__ == "__main__":
    main()
