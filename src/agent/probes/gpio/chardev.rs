//! The production backend: the GPIO character device, uAPI v2, through
//! `gpiocdev`. Compiled and unit-tested without hardware; the probe logic
//! above it is tested against the simulated chip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpiocdev::line::{EdgeDetection, Value};
use gpiocdev::request::Request;

use super::{Chip, GpioError, Line, LineConfig, LineId};

/// The real chips under `/dev`.
#[derive(Debug, Clone, Default)]
pub struct Chardev;

/// `gpiochip0` → `/dev/gpiochip0`; paths pass through.
pub fn chip_path(chip: &Path) -> PathBuf {
    if chip.is_absolute() {
        chip.to_path_buf()
    } else {
        Path::new("/dev").join(chip)
    }
}

/// Sorts `gpiocdev` errors into result codes. The crate reports errno
/// inside its messages, so this matches on them.
pub fn classify(what: &str, e: &gpiocdev::Error) -> GpioError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("busy") {
        GpioError::Busy(what.to_string())
    } else if lower.contains("no such file")
        || lower.contains("not found")
        || lower.contains("invalid argument")
    {
        GpioError::Missing(format!("{what}: {text}"))
    } else {
        GpioError::Other(format!("{what}: {text}"))
    }
}

struct Handle {
    req: Request,
    offset: u32,
    what: String,
}

impl Chip for Chardev {
    fn open(&self, cfg: &LineConfig, edges: bool) -> Result<Box<dyn Line>, GpioError> {
        let mut builder = Request::builder();
        let (what, offset) = match (&cfg.line, &cfg.chip) {
            (LineId::Offset(o), Some(chip)) => {
                let path = chip_path(chip);
                builder.on_chip(&path).with_line(*o);
                (format!("{}:{o}", path.display()), *o)
            }
            (LineId::Offset(o), None) => {
                return Err(GpioError::Missing(format!(
                    "line {o}: a line offset needs `chip`"
                )));
            }
            (LineId::Name(name), _) => {
                let found = gpiocdev::find_named_line(name)
                    .ok_or_else(|| GpioError::Missing(format!("line {name:?}")))?;
                builder.with_found_line(&found);
                (name.clone(), found.info.offset)
            }
        };
        builder.with_consumer("benchtel").as_input();
        if cfg.active_low {
            builder.as_active_low();
        }
        if edges {
            builder.with_edge_detection(EdgeDetection::BothEdges);
        }
        let req = builder.request().map_err(|e| classify(&what, &e))?;
        Ok(Box::new(Handle { req, offset, what }))
    }
}

impl Line for Handle {
    fn level(&mut self) -> Result<bool, GpioError> {
        let v = self
            .req
            .value(self.offset)
            .map_err(|e| classify(&self.what, &e))?;
        Ok(v == Value::Active)
    }

    fn wait_edge(&mut self, timeout: Duration) -> Result<bool, GpioError> {
        let came = self
            .req
            .wait_edge_event(timeout)
            .map_err(|e| classify(&self.what, &e))?;
        if came {
            self.req
                .read_edge_event()
                .map_err(|e| classify(&self.what, &e))?;
        }
        Ok(came)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chip_names_become_dev_paths() {
        assert_eq!(
            chip_path(Path::new("gpiochip2")),
            PathBuf::from("/dev/gpiochip2")
        );
        assert_eq!(
            chip_path(Path::new("/dev/gpiochip0")),
            PathBuf::from("/dev/gpiochip0")
        );
    }

    #[test]
    fn a_chip_that_is_not_there_is_missing() {
        // No GPIO hardware on this machine: the request itself must fail
        // cleanly, as it would on a bench whose chip is gone.
        let cfg = LineConfig {
            chip: Some("/dev/gpiochip-benchtel-test".into()),
            line: LineId::Offset(3),
            active_low: false,
        };
        let err = Chardev.open(&cfg, false).err().expect("no such chip");
        assert!(matches!(err, GpioError::Missing(_)), "{err:?}");
        let named = LineConfig {
            chip: None,
            line: LineId::Name("BENCHTEL_NO_SUCH_LINE".into()),
            active_low: false,
        };
        assert!(matches!(
            Chardev.open(&named, false).err(),
            Some(GpioError::Missing(_))
        ));
        let offset_only = LineConfig {
            chip: None,
            line: LineId::Offset(1),
            active_low: false,
        };
        assert!(matches!(
            Chardev.open(&offset_only, false).err(),
            Some(GpioError::Missing(_))
        ));
    }
}
