//! Runs a check's blocking call (`stat` of a file, a sysfs read, a GPIO
//! chardev wait) on tokio's blocking pool, so a hung NFS or FUSE mount or a
//! wedged driver cannot stop the single-threaded runtime that also carries
//! heartbeats.
//!
//! A thread stuck in the kernel cannot be cancelled. The check's timeout
//! gives up on it, and its [`Gate`] stays shut until the call returns: the
//! runs meanwhile fail at once with `timeout` instead of each stranding
//! another thread on the same mount.

use super::{Code, Outcome};
use crate::service::{OneAtATime, Refused};

/// One check's blocking call in flight, at most.
#[derive(Debug, Default)]
pub struct Gate(OneAtATime);

impl Gate {
    /// Runs `f(cfg)` off the runtime, in the run's OTel context so what it
    /// logs links to the run's span.
    pub async fn run<C: Send + 'static>(&self, cfg: C, f: fn(C) -> Outcome) -> Outcome {
        let run = opentelemetry::Context::current();
        let call = self.0.run(move || {
            let _run = run.attach();
            f(cfg)
        });
        match call.await {
            Ok(outcome) => outcome,
            Err(Refused::Busy) => Outcome::fail(
                Code::Timeout,
                "the previous run is still blocked in the kernel (a hung mount or device?); \
                 not starting another",
            ),
            Err(Refused::Failed(e)) => {
                Outcome::fail(Code::Error, format!("check task failed: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_hung_call_shuts_the_gate_until_it_returns_and_never_blocks_the_runtime() {
        let gate = Gate::default();
        let (release, held) = mpsc::channel::<()>();
        let hung = tokio::time::timeout(
            Duration::from_millis(50),
            gate.run(held, |held| {
                let _ = held.recv();
                Outcome::ok("returned")
            }),
        )
        .await;
        assert!(hung.is_err(), "the hung call must not finish");
        // This runtime has one thread: reaching here proves it was not blocked.
        let second = gate.run((), |()| Outcome::ok("ran")).await;
        assert_eq!(second.code, Code::Timeout, "{}", second.detail);
        assert!(second.detail.contains("still blocked"), "{}", second.detail);
        release.send(()).unwrap();
        let mut reopened = None;
        for _ in 0..200 {
            let out = gate.run((), |()| Outcome::ok("ran")).await;
            if out.code == Code::Ok {
                reopened = Some(out);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(reopened.is_some(), "the gate never reopened");
    }

    #[tokio::test]
    async fn a_panicking_call_reopens_the_gate() {
        let gate = Gate::default();
        let out = gate.run((), |()| panic!("driver bug")).await;
        assert_eq!(out.code, Code::Error);
        assert_eq!(gate.run((), |()| Outcome::ok("ran")).await.code, Code::Ok);
    }
}
