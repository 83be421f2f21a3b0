//! Preparing an ONNX graph before a runtime loads it: folding constant `DequantizeLinear` nodes
//! into fp32 initializers, and fixing the input to the size the pipeline feeds.
//!
//! OpenCV Zoo's int8 "block-quantized" models store weights as int8 blocks with one scale per
//! block (opset 21 `DequantizeLinear` with `block_size`), which tract does not support. The
//! weights are constants, so dequantizing them once at load gives the same fp32 graph the
//! quantizer started from: `y = (x - zero_point) * scale`, per tensor, per axis, or per block.

use std::collections::HashSet;

/// Why a model's graph could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FoldError(String);

impl From<String> for FoldError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for FoldError {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto::{self, Tensor};
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto};

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;

/// Replaces every `DequantizeLinear` whose inputs are all initializers with its fp32 result;
/// returns how many were folded.
pub fn fold_dequantize(graph: &mut GraphProto) -> Result<usize, FoldError> {
    let mut folded = 0;
    let mut kept = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let constant = node.op_type == "DequantizeLinear"
            && node.input.iter().filter(|i| !i.is_empty()).all(|i| find(graph, i).is_some());
        if !constant {
            kept.push(node);
            continue;
        }
        let output =
            dequantize(graph, &node).map_err(|e| format!("DequantizeLinear {:?}: {e}", node.name))?;
        graph.initializer.push(output);
        folded += 1;
    }
    graph.node = kept;
    // Quantized weights nothing reads any more. Older exporters also list weights as graph
    // inputs (and the quantizer left the original names there, unused): an input is kept only
    // when a node reads it and it is no constant.
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    let constants: HashSet<&String> = graph.initializer.iter().map(|t| &t.name).collect();
    graph.input.retain(|i| used.contains(&i.name) && !constants.contains(&i.name));
    Ok(folded)
}

/// Declares the graph's one input as f32 of `shape` and forgets the shapes the exporter recorded
/// for intermediate values and outputs, which hold for its export size only (YuNet is exported
/// at 640 x 640 and runs at the configured detector size; its reshapes use -1).
pub fn fix_input_shape(graph: &mut GraphProto, shape: &[usize]) -> Result<(), FoldError> {
    let [input] = graph.input.as_mut_slice() else {
        return Err(FoldError(format!("the model has {} inputs, expected one", graph.input.len())));
    };
    let dim = shape
        .iter()
        .map(|&d| Dimension { value: Some(dimension::Value::DimValue(d as i64)), ..Default::default() })
        .collect();
    input.r#type = Some(TypeProto {
        value: Some(type_proto::Value::TensorType(Tensor {
            elem_type: FLOAT,
            shape: Some(TensorShapeProto { dim }),
        })),
        ..Default::default()
    });
    graph.value_info.clear();
    for output in &mut graph.output {
        if let Some(type_proto::Value::TensorType(tensor)) =
            output.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            tensor.shape = None;
        }
    }
    Ok(())
}

fn find<'g>(graph: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
    graph.initializer.iter().find(|t| t.name == name)
}

fn attribute(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn integers(tensor: &TensorProto) -> Result<Vec<f32>, FoldError> {
    let raw = !tensor.raw_data.is_empty();
    match tensor.data_type {
        INT8 if raw => Ok(tensor.raw_data.iter().map(|&b| f32::from(b as i8)).collect()),
        UINT8 if raw => Ok(tensor.raw_data.iter().map(|&b| f32::from(b)).collect()),
        INT8 | UINT8 => Ok(tensor.int32_data.iter().map(|&v| v as f32).collect()),
        other => Err(FoldError(format!("quantized type {other} is not supported (int8 and uint8 are)"))),
    }
}

fn floats(tensor: &TensorProto) -> Result<Vec<f32>, FoldError> {
    if tensor.data_type != FLOAT {
        return Err(FoldError(format!("scale type {} is not supported (float is)", tensor.data_type)));
    }
    if tensor.raw_data.is_empty() {
        return Ok(tensor.float_data.clone());
    }
    Ok(tensor.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn dequantize(graph: &GraphProto, node: &NodeProto) -> Result<TensorProto, FoldError> {
    let input = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| find(graph, n));
    let x = input(0).ok_or("no input")?;
    let values = integers(x)?;
    let scale_tensor = input(1).ok_or("no scale")?;
    let scales = floats(scale_tensor)?;
    let zero_points = match input(2) {
        Some(z) => integers(z)?,
        None => vec![0.0; scales.len()],
    };
    if zero_points.len() != scales.len() {
        return Err(FoldError("zero point and scale differ in shape".into()));
    }
    let dims: Vec<usize> =
        x.dims.iter().map(|&d| usize::try_from(d).map_err(|_| "negative dim")).collect::<Result<_, _>>()?;
    if dims.iter().product::<usize>() != values.len() {
        return Err(FoldError("data does not match its dims".into()));
    }
    let rank = dims.len() as i64;
    let axis = attribute(node, "axis").unwrap_or(1);
    let axis = usize::try_from(if axis < 0 { axis + rank } else { axis }).map_err(|_| "bad axis")?;
    let block = attribute(node, "block_size").unwrap_or(0);
    // Which scale each element uses.
    let scale_of: Box<dyn Fn(usize) -> usize> = if scales.len() == 1 {
        Box::new(|_| 0)
    } else {
        if axis >= dims.len() {
            return Err(FoldError("axis out of range".into()));
        }
        let inner: usize = dims[axis + 1..].iter().product();
        if block > 0 {
            let block = block as usize;
            let scale_dims: Vec<usize> = dims
                .iter()
                .enumerate()
                .map(|(i, &d)| if i == axis { d.div_ceil(block) } else { d })
                .collect();
            if scale_dims.iter().product::<usize>() != scales.len() {
                return Err(FoldError(format!(
                    "{} block scales for dims {dims:?} and block {block}",
                    scales.len()
                )));
            }
            let (along, scale_along) = (dims[axis], scale_dims[axis]);
            Box::new(move |i| {
                let (outer, rest) = (i / (along * inner), i % (along * inner));
                let (a, j) = (rest / inner, rest % inner);
                (outer * scale_along + a / block) * inner + j
            })
        } else {
            if scales.len() != dims[axis] {
                return Err(FoldError(format!("{} scales for axis {axis} of dims {dims:?}", scales.len())));
            }
            let along = dims[axis];
            Box::new(move |i| (i / inner) % along)
        }
    };
    let mut raw = Vec::with_capacity(values.len() * 4);
    for (i, q) in values.iter().enumerate() {
        let s = scale_of(i);
        raw.extend_from_slice(&((q - zero_points[s]) * scales[s]).to_le_bytes());
    }
    let name = node.output.first().ok_or("no output")?.clone();
    Ok(TensorProto { name, dims: x.dims.clone(), data_type: FLOAT, raw_data: raw, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::AttributeProto;

    fn tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> TensorProto {
        TensorProto { name: name.into(), dims: dims.to_vec(), data_type, raw_data: raw, ..Default::default() }
    }

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn graph(
        x_dims: &[i64],
        x: &[i8],
        scales: (&[i64], &[f32]),
        zero: &[i8],
        attrs: &[(&str, i64)],
    ) -> GraphProto {
        let attribute = attrs
            .iter()
            .map(|(n, i)| AttributeProto { name: (*n).into(), i: *i, ..Default::default() })
            .collect();
        GraphProto {
            initializer: vec![
                tensor("q", x_dims, INT8, x.iter().map(|&v| v as u8).collect()),
                tensor("s", scales.0, FLOAT, f32s(scales.1)),
                tensor("z", scales.0, INT8, zero.iter().map(|&v| v as u8).collect()),
            ],
            node: vec![
                NodeProto {
                    op_type: "DequantizeLinear".into(),
                    input: vec!["q".into(), "s".into(), "z".into()],
                    output: vec!["w".into()],
                    attribute,
                    ..Default::default()
                },
                NodeProto {
                    op_type: "Relu".into(),
                    input: vec!["w".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn folded(mut g: GraphProto) -> Vec<f32> {
        assert_eq!(fold_dequantize(&mut g), Ok(1));
        assert_eq!(g.node.len(), 1, "only the Relu is left");
        assert_eq!(g.initializer.len(), 1, "the quantized inputs are gone");
        floats(&g.initializer[0]).expect("floats")
    }

    #[test]
    fn blocks_axes_and_tensors_dequantize_like_the_onnx_reference() {
        // Dims [2, 5], blocks of 2 along axis 1: scales [2, 3].
        let x = [1, 2, 3, 4, 5, -1, -2, -3, -4, -5];
        let g = graph(
            &[2, 5],
            &x,
            (&[2, 3], &[1.0, 2.0, 3.0, 0.5, 0.25, 0.125]),
            &[0, 1, 0, 0, 0, 1],
            &[("axis", 1), ("block_size", 2)],
        );
        assert_eq!(folded(g), vec![1.0, 2.0, 4.0, 6.0, 15.0, -0.5, -1.0, -0.75, -1.0, -0.75]);
        // Per axis 0.
        let g = graph(&[2, 2], &[1, 2, 3, 4], (&[2], &[1.0, 10.0]), &[0, 1], &[("axis", 0)]);
        assert_eq!(folded(g), vec![1.0, 2.0, 20.0, 30.0]);
        // Per tensor.
        let g = graph(&[3], &[-2, 0, 2], (&[], &[0.5]), &[0], &[]);
        assert_eq!(folded(g), vec![-1.0, 0.0, 1.0]);
    }

    #[test]
    fn inconsistent_shapes_are_refused() {
        let mut g =
            graph(&[2, 5], &[0; 10], (&[2, 2], &[1.0; 4]), &[0; 4], &[("axis", 1), ("block_size", 2)]);
        assert!(fold_dequantize(&mut g).expect_err("refused").to_string().contains("block scales"));
    }
}
