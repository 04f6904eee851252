//! `type = "exec"`: run a program and judge its exit code. Never through a
//! shell unless `shell = true`; on timeout the whole process group is
//! killed and reaped, so no zombie or orphan is left behind.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{Code, Outcome};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Program to run (or, with `shell = true`, a shell command line).
    pub command: String,
    /// Arguments, passed as they are.
    #[serde(default)]
    pub args: Vec<String>,
    /// Run `command` through `/bin/sh -c`.
    #[serde(default)]
    pub shell: bool,
    /// Exit codes that count as success.
    #[serde(default = "zero")]
    pub expect_exit: Vec<i32>,
    /// Output kept for the log, in bytes (the rest is read and discarded).
    #[serde(default = "cap")]
    pub max_output: usize,
}

fn zero() -> Vec<i32> {
    vec![0]
}
fn cap() -> usize {
    4096
}

impl Config {
    pub async fn run(&self, timeout: Duration) -> Outcome {
        let mut cmd = if self.shell {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(&self.command);
            c
        } else {
            let mut c = Command::new(&self.command);
            c.args(&self.args);
            c
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Outcome::fail(Code::Missing, format!("{}: {e}", self.command));
            }
            Err(e) => return Outcome::fail(Code::Error, format!("{}: {e}", self.command)),
        };
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let cap = self.max_output;
        let work = async {
            let (out, err, status) = tokio::join!(
                read_capped(stdout, cap),
                read_capped(stderr, cap),
                child.wait()
            );
            (out, err, status)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok((out, err, Ok(status))) => {
                let code = status.code();
                let text = tail(&out, &err);
                match code {
                    Some(c) if self.expect_exit.contains(&c) => Outcome::ok(format!("exit {c}")),
                    Some(c) => Outcome::fail(Code::Mismatch, format!("exit {c}: {text}")),
                    None => Outcome::fail(Code::Error, format!("killed by a signal: {text}")),
                }
            }
            Ok((_, _, Err(e))) => Outcome::fail(Code::Error, format!("wait failed: {e}")),
            Err(_) => {
                if let Some(pgid) = pgid {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                }
                // Reap it: a timed-out check must not leave a zombie.
                let _ = child.wait().await;
                Outcome::fail(
                    Code::Timeout,
                    format!("still running after {timeout:?}; killed"),
                )
            }
        }
    }
}

async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut pipe).take(cap as u64).read_to_end(&mut kept).await;
    // Keep draining so the program never blocks on a full pipe.
    let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
    kept
}

fn tail(out: &[u8], err: &[u8]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(err)
    );
    let text = text.trim();
    let start = text.len().saturating_sub(512);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(command: &str, args: &[&str]) -> Config {
        Config {
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            shell: false,
            expect_exit: vec![0],
            max_output: 64,
        }
    }

    #[tokio::test]
    async fn exit_codes_and_missing_programs() {
        let t = Duration::from_secs(5);
        assert_eq!(exec("true", &[]).run(t).await.code, Code::Ok);
        let out = exec("sh", &["-c", "echo broken >&2; exit 3"]).run(t).await;
        assert_eq!(out.code, Code::Mismatch);
        assert!(
            out.detail.contains("exit 3") && out.detail.contains("broken"),
            "{out:?}"
        );
        let mut c = exec("sh", &["-c", "exit 3"]);
        c.expect_exit = vec![3];
        assert_eq!(c.run(t).await.code, Code::Ok);
        assert_eq!(
            exec("/nonexistent/prog", &[]).run(t).await.code,
            Code::Missing
        );
    }

    #[tokio::test]
    async fn no_shell_unless_asked() {
        let t = Duration::from_secs(5);
        // Without a shell the `;` is just an argument to echo.
        let out = exec("echo", &["a;", "exit", "7"]).run(t).await;
        assert_eq!(out.code, Code::Ok);
        let mut c = exec("echo hi; exit 7", &[]);
        c.shell = true;
        assert_eq!(c.run(t).await.code, Code::Mismatch);
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_with_its_children_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let mut c = exec(
            "sh",
            &[
                "-c",
                &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
            ],
        );
        c.max_output = 16;
        let out = c.run(Duration::from_millis(500)).await;
        assert_eq!(out.code, Code::Timeout, "{out:?}");
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild went with the group: no orphan left running.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(), "sleep 300 survived the timeout");
    }

    #[tokio::test]
    async fn output_is_capped_but_drained() {
        let mut c = exec(
            "sh",
            &["-c", "head -c 1000000 /dev/zero | tr '\\0' x; exit 1"],
        );
        c.max_output = 10;
        let out = c.run(Duration::from_secs(10)).await;
        assert_eq!(out.code, Code::Mismatch, "{out:?}");
        assert!(out.detail.len() < 40, "{}", out.detail);
    }
}
