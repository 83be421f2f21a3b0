//! Running an ONNX model on one fixed-size f32 input, with the runtime the configuration picks.
//!
//! - [`Runtime::Tract`]: pure Rust, built in, nothing to install.
//! - [`Runtime::OnnxRuntime`]: ONNX Runtime, loaded at start from a shared library (the one in
//!   the `onnxruntime` wheel, installed by `scripts/fetch-models.sh`). The pipeline runs ~2x
//!   faster in it than in tract on this machine (see docs/benchmarks.md). One ONNX Runtime
//!   session runs one input at a time, so a pool keeps one idle session per concurrent caller
//!   (the embed worker pool bounds how many there are); each session computes on its caller's
//!   thread.
//!
//! Both get the same prepared graph: constant `DequantizeLinear` folded, the input fixed to the
//! pipeline's size (see [`crate::onnx_fold`]).

use crate::FaceError;
use crate::models::{ONNXRUNTIME, read_checked};
use crate::onnx_fold::{fix_input_shape, fold_dequantize};
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::*;

/// The engine that runs the models. No default: whoever builds a pipeline chooses (the embed
/// role's configuration, `embed.runtime`, defaults to ONNX Runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    Tract,
    /// ONNX Runtime from this shared library (`libonnxruntime.so`, 1.22 or newer; 1.31 is
    /// installed), checked against its SHA-256 before it is loaded.
    OnnxRuntime {
        library: PathBuf,
        sha256: Option<String>,
    },
}

impl Runtime {
    /// ONNX Runtime from the library `scripts/fetch-models.sh` installs in `model_dir`, checked
    /// against its pinned SHA-256.
    pub fn onnxruntime_in(model_dir: &Path) -> Self {
        Runtime::OnnxRuntime {
            library: model_dir.join(ONNXRUNTIME.name),
            sha256: Some(ONNXRUNTIME.sha256.into()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Tract => "tract",
            Runtime::OnnxRuntime { .. } => "onnxruntime",
        }
    }
}

pub(crate) struct Network {
    shape: Vec<usize>,
    engine: Engine,
}

enum Engine {
    Tract(Arc<TypedRunnableModel>),
    OnnxRuntime(SessionPool),
}

impl Network {
    /// Prepares the model for an input of `shape` and loads it into `runtime`.
    pub(crate) fn load(
        bytes: &[u8],
        shape: &[usize],
        what: &str,
        runtime: &Runtime,
    ) -> Result<Self, FaceError> {
        let fail = |e: &dyn std::fmt::Debug| FaceError::Model(format!("{what}: {e:?}"));
        let onnx = tract_onnx::onnx().with_ignore_value_info(true).with_ignore_output_shapes(true);
        let mut proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(|e| fail(&e))?;
        let graph = proto.graph.as_mut().ok_or_else(|| fail(&"the file holds no graph"))?;
        fold_dequantize(graph).map_err(|e| fail(&e.to_string()))?;
        fix_input_shape(graph, shape).map_err(|e| fail(&e.to_string()))?;
        let engine = match runtime {
            Runtime::Tract => Engine::Tract(
                onnx.model_for_proto_model(&proto)
                    .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .map_err(|e| fail(&e))?,
            ),
            Runtime::OnnxRuntime { library, sha256 } => {
                let environment = load_onnxruntime(library, sha256.as_deref())?;
                let pool = SessionPool { environment, model: proto.encode_to_vec(), idle: Mutex::default() };
                // One session now: a model ONNX Runtime refuses is a start-up error.
                let session = pool.session().map_err(|e| fail(&e))?;
                pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(session);
                Engine::OnnxRuntime(pool)
            }
        };
        Ok(Self { shape: shape.to_vec(), engine })
    }

    /// Runs the model on one input of the loaded shape; every output, flattened, in the model's order.
    pub(crate) fn run(&self, input: Vec<f32>) -> Result<Vec<Vec<f32>>, FaceError> {
        let model_error = |e: &dyn std::fmt::Display| FaceError::Model(e.to_string());
        match &self.engine {
            Engine::Tract(plan) => {
                let tensor = Tensor::from_shape(&self.shape, &input).map_err(|e| model_error(&e))?;
                let outputs = plan.run(tvec!(tensor.into())).map_err(|e| model_error(&e))?;
                outputs
                    .iter()
                    .map(|o| o.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()).map(<[f32]>::to_vec))
                    .collect::<Result<_, _>>()
                    .map_err(|e| model_error(&e))
            }
            Engine::OnnxRuntime(pool) => {
                let mut session = pool.take().map_err(|e| model_error(&e))?;
                let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
                let result = ort::value::Tensor::from_array((shape, input))
                    .and_then(|tensor| session.run(ort::inputs![tensor]))
                    .and_then(|outputs| {
                        outputs
                            .iter()
                            .map(|(_, value)| value.try_extract_tensor::<f32>().map(|(_, v)| v.to_vec()))
                            .collect::<Result<Vec<_>, _>>()
                    });
                pool.give_back(session);
                result.map_err(|e| model_error(&e))
            }
        }
    }
}

/// ONNX Runtime sessions of one model: one per concurrent run, made when first needed.
struct SessionPool {
    environment: Environment,
    model: Vec<u8>,
    idle: Mutex<Vec<Session>>,
}

impl SessionPool {
    fn session(&self) -> ort::Result<Session> {
        // One thread per run: the embed worker pool decides how many photos run at once, and
        // threads that spin while waiting would take the cores the other workers need.
        Session::builder(&self.environment)?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_intra_threads(1)?
            .with_inter_threads(1)?
            .with_intra_op_spinning(false)?
            // Its graph-optimisation chatter is hundreds of lines per session at INFO.
            .with_log_level(LogLevel::Warning)?
            .commit_from_memory(&self.model)
    }

    fn take(&self) -> ort::Result<Session> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(session) => Ok(session),
            None => self.session(),
        }
    }

    fn give_back(&self, session: Session) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(session);
    }
}

/// Loads the ONNX Runtime library (once per process) after checking it, and gives its
/// environment; asking for another library once one is loaded is an error. The library is read
/// and hashed once: a later model asking for the loaded file with the digest it was checked
/// against (or none) gets the environment straight away.
fn load_onnxruntime(library: &Path, sha256: Option<&str>) -> Result<Environment, FaceError> {
    /// The library loaded, the digest it was checked against, its environment.
    static LOADED: Mutex<Option<(PathBuf, Option<String>, Environment)>> = Mutex::new(None);
    if !library.is_file() {
        return Err(FaceError::Model(format!(
            "the ONNX Runtime library {} is missing (scripts/fetch-models.sh installs it; \
             or set embed.runtime = \"tract\")",
            library.display()
        )));
    }
    // The absolute path: the file checked here is the file loaded (a relative one would be
    // looked for beside the executable first).
    let library = &std::fs::canonicalize(library)
        .map_err(|e| FaceError::Model(format!("ONNX Runtime library {}: {e}", library.display())))?;
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, checked, environment)) = loaded.as_ref() {
        let same_digest = match (sha256, checked) {
            (None, _) => true,
            (Some(wanted), Some(checked)) => wanted.eq_ignore_ascii_case(checked),
            (Some(_), None) => false,
        };
        if path == library && same_digest {
            return Ok(environment.clone());
        }
    }
    read_checked(library, sha256)?;
    match loaded.as_ref() {
        Some((path, _, environment)) if path == library => Ok(environment.clone()),
        Some((path, _, _)) => Err(FaceError::Model(format!(
            "ONNX Runtime is already loaded from {}; one process uses one library",
            path.display()
        ))),
        None => {
            let environment = ort::init_from(library)
                .map_err(|e| FaceError::Model(format!("cannot load ONNX Runtime: {e}")))?
                .with_name("biomatch")
                .build()
                .map_err(|e| FaceError::Model(format!("cannot start ONNX Runtime: {e}")))?;
            *loaded = Some((library.to_path_buf(), sha256.map(str::to_owned), environment.clone()));
            Ok(environment)
        }
    }
}
