//! Probes of the firmware under test: one folder per transport, one module
//! per probe kind. Probes run as health checks (`type = "serial_expect"`),
//! so they share the checks' scheduling, hysteresis and readiness.

pub mod gpio;
pub mod serial;
pub mod suggest;
