//! Regular expressions read from the configuration ([`Pattern`]).

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Deserializer};

/// A regular expression from the configuration. A clone is the same
/// compiled `Regex`, not a copy: a cloned `Regex` shares the compiled
/// program but gets a pool of match caches of its own (tens of KiB each for
/// a Unicode `\d`), so values that should share the caches as well are
/// cloned through the `Arc` here.
#[derive(Clone)]
pub struct Pattern(Arc<Regex>);

impl Pattern {
    pub fn new(pattern: &str) -> Result<Pattern, regex::Error> {
        Regex::new(pattern).map(Pattern::from)
    }

    /// Whether both are one compiled value (one set of match caches), not
    /// merely the same text.
    pub fn ptr_eq(a: &Pattern, b: &Pattern) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl From<Regex> for Pattern {
    fn from(re: Regex) -> Pattern {
        Pattern(Arc::new(re))
    }
}

impl Deref for Pattern {
    type Target = Regex;

    fn deref(&self) -> &Regex {
        &self.0
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

/// From a string; a pattern that does not compile is an error carrying
/// the regex crate's message (which quotes the pattern and points at the
/// fault), so the config error names file, key and value as for any other
/// bad value.
impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let text = <Cow<'de, str>>::deserialize(d)?;
        Pattern::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Probe {
        expect: Pattern,
        #[serde(default)]
        fail: Option<Pattern>,
    }

    #[test]
    fn reads_a_pattern_and_refuses_one_that_does_not_compile() {
        let probe: Probe = toml::from_str(r#"expect = 'v(?P<major>\d+)'"#).unwrap();
        let caps = probe.expect.captures("v42").unwrap();
        assert_eq!(&caps["major"], "42");
        assert!(probe.fail.is_none());
        assert_eq!(probe.expect.to_string(), r"v(?P<major>\d+)");

        let err = toml::from_str::<Probe>(r#"expect = "(unclosed""#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("(unclosed"), "{text}");
        assert!(text.contains("unclosed group"), "{text}");
        let err = toml::from_str::<Probe>("expect = 3").unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn a_clone_is_the_same_compiled_regex() {
        let a = Pattern::new("login:").unwrap();
        assert!(Pattern::ptr_eq(&a, &a.clone()));
        assert!(!Pattern::ptr_eq(&a, &Pattern::new("login:").unwrap()));
    }
}
