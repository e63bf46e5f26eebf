//! Choosing where the model runs and in which float type, with an error that says which cargo
//! feature to build with when a device was not compiled in.

use crate::error::{ModelError, Result};
use candle_core::{DType, Device};
use std::str::FromStr;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The best compiled-in accelerator that is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl FromStr for DeviceSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "metal" => Ok(DeviceSpec::Metal),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceSpec::Cuda).map_err(|_| {
                    ModelError::Device(format!(
                        "`{s}`: the GPU index after `cuda:` must be a number"
                    ))
                }),
                None => Err(ModelError::Device(format!(
                    "unknown device `{s}`: use auto, cpu, cuda, cuda:N or metal"
                ))),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal => write!(f, "metal"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device, failing with the cargo feature to enable when support is missing.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Ok(Device::new_cuda(0)?)
                } else if candle_core::utils::metal_is_available() {
                    Ok(Device::new_metal(0)?)
                } else {
                    Ok(Device::Cpu)
                }
            }
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(ModelError::Device(
                        "CUDA support is not compiled into this naba: rebuild with \
                         `cargo build --release --features cuda`, or use --device cpu"
                            .into(),
                    ));
                }
                Device::new_cuda(n).map_err(|e| ModelError::Device(format!("cuda:{n}: {e}")))
            }
            DeviceSpec::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(ModelError::Device(
                        "Metal support is not compiled into this naba: rebuild with \
                         `cargo build --release --features metal` on macOS, or use --device cpu"
                            .into(),
                    ));
                }
                Device::new_metal(0).map_err(|e| ModelError::Device(format!("metal: {e}")))
            }
        }
    }
}

/// Parses `--dtype`, and checks it against the device: half precision on the CPU is allowed for
/// bf16 (these CPUs have native bf16 dot products) but not f16, which candle only emulates there.
pub fn parse_dtype(s: &str, device: &Device) -> Result<DType> {
    let dtype = match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => DType::F32,
        "f16" | "float16" | "half" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        other => {
            return Err(ModelError::Device(format!(
                "unknown dtype `{other}`: use f32, f16 or bf16"
            )))
        }
    };
    if dtype == DType::F16 && device.is_cpu() {
        return Err(ModelError::Device(
            "f16 is not supported on the CPU: use --dtype f32 or bf16 there, or a GPU device"
                .into(),
        ));
    }
    Ok(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CUDA:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_names_the_feature() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn dtypes() {
        assert_eq!(parse_dtype("bf16", &Device::Cpu).unwrap(), DType::BF16);
        assert!(parse_dtype("f16", &Device::Cpu).is_err());
        assert!(parse_dtype("int3", &Device::Cpu).is_err());
    }
}
