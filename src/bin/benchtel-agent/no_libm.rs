//! The agent does without glibc's libm.
//!
//! Loading libm costs an idle agent about 330 KiB of RSS: the loader runs
//! the CPU-feature resolvers of its few hundred functions (FMA, AVX2
//! variants), scattered over its code, and 256 KiB of that code stays
//! mapped. The agent calls one libm function, `log`, from the
//! OpenTelemetry SDK's exponential histogram (compiled in, unused here).
//! Defining it here, from the pure-Rust `libm` crate, leaves nothing for
//! libm to provide, and the linker (`--as-needed`) drops it.
//! `tests/packaging/run` checks that the packaged agent does not need it.

/// The natural logarithm, for the SDK's `f64::ln`.
#[unsafe(no_mangle)]
pub extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}
