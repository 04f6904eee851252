//! `benchtel-agent suggest`: what is plugged into this bench, as
//! ready-to-paste config. Stable `/dev/serial/by-id` paths are preferred
//! over `/dev/ttyUSB*`, which change with plug order.

use std::fmt::Write;
use std::path::Path;

use super::serial::discover;

/// The suggestion text for the machine whose `/sys` and `/dev` are given.
pub fn render(sys: &Path, dev: &Path) -> String {
    let mut out = String::new();
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
        let name = a
            .dev
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "[[checks]]\nname = \"{}-console\"\ntype = \"serial_expect\"\nport = \"{}\"\nbaud = 115200\nsend = \"\"\nexpect = \"\\\\S\"\n",
            name.to_ascii_lowercase(),
            port.display()
        );
    }
    let chips: Vec<_> = std::fs::read_dir(dev)
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
    if chips.is_empty() {
        out.push_str("# no GPIO chips (/dev/gpiochip*) found\n");
    }
    for chip in chips {
        match gpiocdev::chip::Chip::from_path(&chip).and_then(|c| c.info()) {
            Ok(info) => {
                let _ = writeln!(
                    out,
                    "# {} — {} ({} lines)\n[[checks]]\nname = \"power-good\"\ntype = \"gpio_level\"\nchip = \"{}\"\nline = 0          # offset, or the line's name\nexpect = \"high\"\n",
                    chip.display(),
                    info.label,
                    info.num_lines,
                    chip.display()
                );
            }
            Err(e) => {
                let _ = writeln!(out, "# {}: {e}", chip.display());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
}
