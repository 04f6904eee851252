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
    /// A Linux board idling at its login prompt: a CR or LF redraws it.
    LoginPrompt,
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

    /// Replays `tests/fixtures/consoles/NAME.console` with its timing (see
    /// the README there), in the background; join the handle to wait.
    pub fn replay(&self, name: &str) -> std::thread::JoinHandle<()> {
        let records = console_fixture(name);
        let mut console = self.console.try_clone().unwrap();
        std::thread::spawn(move || {
            for (wait, bytes) in records {
                std::thread::sleep(wait);
                if console.write_all(&bytes).is_err() {
                    return;
                }
            }
        })
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

/// The records of a console fixture: how long to wait, what to write.
pub fn console_fixture(name: &str) -> Vec<(Duration, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/consoles")
        .join(format!("{name}.console"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .filter(|l| l.starts_with('+'))
        .map(|l| {
            let (ms, payload) = l[1..].split_once(' ').unwrap_or((&l[1..], ""));
            let ms: u64 = ms
                .parse()
                .unwrap_or_else(|_| panic!("{path:?}: bad delay in {l:?}"));
            (Duration::from_millis(ms), unescape(payload))
        })
        .collect()
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
            }
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

fn play(behaviour: Behaviour, sim: &Path) {
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(sim)
        .unwrap();
    let mut out = file.try_clone().unwrap();
    if behaviour == Behaviour::LoginPrompt {
        std::thread::spawn(move || login_prompt(file, out));
        return;
    }
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
                Behaviour::LoginPrompt => unreachable!("answered byte by byte"),
            };
            if out.write_all(&reply).is_err() {
                return;
            }
        }
    });
}

/// Like getty: every CR or LF is answered with a fresh prompt, no newline
/// after it.
fn login_prompt(mut input: std::fs::File, mut out: std::fs::File) {
    use std::io::Read;
    let mut byte = [0u8; 1];
    while input.read_exact(&mut byte).is_ok() {
        if matches!(byte[0], b'\r' | b'\n') && out.write_all(b"\r\nbench login: ").is_err() {
            return;
        }
    }
}

impl Drop for Firmware {
    fn drop(&mut self) {
        self.vanish();
    }
}
