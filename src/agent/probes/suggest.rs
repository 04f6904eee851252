//! `benchtel-agent suggest`: what is plugged into this bench, as
//! ready-to-paste config. Stable `/dev/serial/by-id` paths are preferred
//! over `/dev/ttyUSB*`, which change with plug order.

use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;

use super::serial::discover;

/// The suggestion text for the machine whose `/sys` and `/dev` are given.
/// Every check name in it is unique, so the snippets paste as they are.
pub fn render(sys: &Path, dev: &Path) -> String {
    let mut out = String::new();
    let mut names = Names::default();
    serial(&mut out, &mut names, sys, dev);
    gpio(&mut out, &mut names, dev);
    out
}

/// Check names handed out so far: a repeat gets `-2`, `-3`, ….
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while !self.0.insert(name.clone()) {
            n += 1;
            name = format!("{base}-{n}");
        }
        name
    }
}

/// One `serial_expect` check per USB serial adapter.
fn serial(out: &mut String, names: &mut Names, sys: &Path, dev: &Path) {
    let adapters = discover::adapters(sys, dev);
    if adapters.is_empty() {
        out.push_str("# no USB serial adapters found\n");
    }
    for a in &adapters {
        let port = a.stable.first().unwrap_or(&a.dev);
        let _ = writeln!(
            out,
            "# {} — {}:{} {} serial {}",
            a.dev.display(),
            a.vid,
            a.pid,
            a.product.as_deref().unwrap_or("(no product name)"),
            a.serial
                .as_deref()
                .unwrap_or("(none: identical adapters cannot be told apart)")
        );
        let tty = a
            .dev
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "[[checks]]\nname = \"{}\"\ntype = \"serial_expect\"\nport = \"{}\"\nbaud = 115200\nsend = \"\"\nexpect = \"\\\\S\"\n",
            names.unique(&format!("{tty}-console")),
            port.display()
        );
    }
}

/// One `gpio_level` check per GPIO chip, named after the chip; also for a
/// chip this user may not open (its snippet is still right for the agent,
/// which runs in group `gpio`).
fn gpio(out: &mut String, names: &mut Names, dev: &Path) {
    let mut chips: Vec<_> = std::fs::read_dir(dev)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("gpiochip"))
                })
                .collect()
        })
        .unwrap_or_default();
    chips.sort();
    if chips.is_empty() {
        out.push_str("# no GPIO chips (/dev/gpiochip*) found\n");
    }
    for chip in chips {
        match gpiocdev::chip::Chip::from_path(&chip).and_then(|c| c.info()) {
            Ok(info) => {
                let _ = writeln!(
                    out,
                    "# {} — {} ({} lines)",
                    chip.display(),
                    info.label,
                    info.num_lines
                );
            }
            Err(e) => {
                let _ = writeln!(out, "# {}: {e}", chip.display());
            }
        }
        let base = chip
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "[[checks]]\nname = \"{}\"\ntype = \"gpio_level\"\nchip = \"{}\"\nline = 0          # offset, or the line's name\nexpect = \"high\"\n",
            names.unique(&format!("{base}-power-good")),
            chip.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn suggests_stable_paths_and_flags_missing_serials() {
        let root = crate::agent::probes::serial::discover::tests::tree();
        let text = super::render(&root.path().join("sys"), &root.path().join("dev"));
        assert!(
            text.contains("serial/by-id/usb-0403_A10K1234-if00"),
            "{text}"
        );
        assert!(text.contains("0403:6001"), "{text}");
        assert!(text.contains("no GPIO chips"), "{text}");
        // Every snippet is valid config.
        let snippets: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: toml::Table = snippets.parse().unwrap();
        assert_eq!(parsed["checks"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn every_check_name_is_unique_with_several_gpio_chips() {
        let root = crate::agent::probes::serial::discover::tests::tree();
        let dev = root.path().join("dev");
        for chip in ["gpiochip0", "gpiochip1", "gpiochip2"] {
            std::fs::write(dev.join(chip), b"").unwrap();
        }
        let text = super::render(&root.path().join("sys"), &dev);
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("name = "))
            .collect();
        assert_eq!(names.len(), 6, "{text}");
        let unique: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{text}");
        assert!(text.contains("name = \"gpiochip1-power-good\""), "{text}");
    }

    #[test]
    fn a_repeated_name_gets_a_number() {
        let mut names = super::Names::default();
        assert_eq!(names.unique("a"), "a");
        assert_eq!(names.unique("a"), "a-2");
        assert_eq!(names.unique("a"), "a-3");
    }
}
