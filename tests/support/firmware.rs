//! Simulated firmware on a real pseudo-terminal pair made by socat: the
//! probe opens `port()`, the firmware plays its part on the other end.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the firmware behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A Zephyr shell: answers `version`, prints a prompt.
    ZephyrShell,
    /// Prints boot noise but never answers.
    Hang,
    /// Panics when spoken to.
    Panic,
    /// Answers with line noise.
    Garble,
}

pub struct Firmware {
    socat: Child,
    dir: tempfile::TempDir,
    console: std::fs::File,
    behaviour: Behaviour,
}

impl Firmware {
    pub fn start(behaviour: Behaviour) -> Firmware {
        let dir = tempfile::tempdir().unwrap();
        let (socat, console) = Self::plug(&dir, behaviour);
        Firmware {
            socat,
            dir,
            console,
            behaviour,
        }
    }

    /// The adapter comes back at the same path (re-enumerated).
    pub fn replug(&mut self) {
        self.vanish();
        let (socat, console) = Self::plug(&self.dir, self.behaviour);
        self.socat = socat;
        self.console = console;
    }

    fn plug(dir: &tempfile::TempDir, behaviour: Behaviour) -> (Child, std::fs::File) {
        let socat = super::require("socat", "apt-get install socat");
        let (dut, sim) = (dir.path().join("dut"), dir.path().join("sim"));
        let child = Command::new(socat)
            .arg(format!("pty,raw,echo=0,link={}", dut.display()))
            .arg(format!("pty,raw,echo=0,link={}", sim.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(dut.exists() && sim.exists()) {
            assert!(Instant::now() < deadline, "socat made no pty pair");
            std::thread::sleep(Duration::from_millis(10));
        }
        let console = std::fs::File::options().write(true).open(&sim).unwrap();
        play(behaviour, &sim);
        (child, console)
    }

    /// Prints on the console unprompted, as a booting board does.
    pub fn print(&self, text: &str) {
        (&self.console).write_all(text.as_bytes()).unwrap();
    }

    /// The device path a probe opens.
    pub fn port(&self) -> PathBuf {
        self.dir.path().join("dut")
    }

    /// The adapter disappears (USB unplugged).
    pub fn vanish(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

fn play(behaviour: Behaviour, sim: &Path) {
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(sim)
        .unwrap();
    let mut out = file.try_clone().unwrap();
    std::thread::spawn(move || {
        let reader = BufReader::new(file);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { return };
            let cmd = String::from_utf8_lossy(&line).trim().to_string();
            let reply: Vec<u8> = match behaviour {
                Behaviour::ZephyrShell if cmd == "kernel uptime" => {
                    b"Uptime: 123456 ms\r\nuart:~$ ".to_vec()
                }
                Behaviour::ZephyrShell if cmd == "version" || cmd == "kernel version" => {
                    b"Zephyr version 3.5.0\r\nuart:~$ ".to_vec()
                }
                Behaviour::ZephyrShell => {
                    format!("{cmd}: command not found\r\nuart:~$ ").into_bytes()
                }
                Behaviour::Hang => b"[00:00:01.000] <inf> main: still booting\r\n".to_vec(),
                Behaviour::Panic => b"Kernel panic - not syncing: VFS\r\n".to_vec(),
                Behaviour::Garble => vec![0xff, 0x13, 0x88, b'\r', 0xfe, b'\n', 0x01],
            };
            if out.write_all(&reply).is_err() {
                return;
            }
        }
    });
}

impl Drop for Firmware {
    fn drop(&mut self) {
        self.vanish();
    }
}
