//! Mapping data-set labels to model labels.

use crate::error::{EvalError, Result};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Maps labels as written in a data set to the labels a model uses, e.g.
/// `agree=Favor,disagree=Against` or, for CoNLL, `PERS=PER`.
///
/// Parsed from the string form `a=b,c=d` (whitespace around names is ignored). Labels not in
/// the map pass through unchanged.
///
/// For CoNLL tags the map is tried on the whole tag first (`B-PERS=B-PER`) and then on the
/// entity type alone (`PERS=PER` turns `B-PERS` into `B-PER` and `I-PERS` into `I-PER`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelMap {
    pairs: BTreeMap<String, String>,
}

impl LabelMap {
    /// An empty map: every label passes through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse `a=b,c=d`. An empty or all-whitespace string gives an empty map.
    ///
    /// # Errors
    /// [`EvalError::LabelMap`] when a pair has no `=`, an empty side, or a key is given twice
    /// with different values.
    pub fn parse(input: &str) -> Result<Self> {
        let mut pairs = BTreeMap::new();
        let err = |reason: String| EvalError::LabelMap {
            input: input.to_string(),
            reason,
        };
        for part in input.split(',') {
            if part.trim().is_empty() {
                continue;
            }
            let Some((from, to)) = part.split_once('=') else {
                return Err(err(format!("`{}` has no `=`", part.trim())));
            };
            let (from, to) = (from.trim(), to.trim());
            if from.is_empty() || to.is_empty() {
                return Err(err(format!("`{}` has an empty side of `=`", part.trim())));
            }
            if let Some(prev) = pairs.insert(from.to_string(), to.to_string()) {
                if prev != to {
                    return Err(err(format!(
                        "`{from}` is mapped twice, to `{prev}` and to `{to}`"
                    )));
                }
            }
        }
        Ok(LabelMap { pairs })
    }

    /// Add one pair.
    pub fn insert(&mut self, from: impl Into<String>, to: impl Into<String>) {
        self.pairs.insert(from.into(), to.into());
    }

    /// Whether the map has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs, sorted by data-set label.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(a, b)| (a.as_str(), b.as_str()))
    }

    /// Map a classification label; unmapped labels are returned unchanged.
    pub fn map<'a>(&'a self, label: &'a str) -> &'a str {
        self.pairs.get(label).map_or(label, String::as_str)
    }

    /// Map a CoNLL tag: the whole tag if it is in the map, else its entity type
    /// (`B-PERS` with `PERS=PER` gives `B-PER`); otherwise unchanged.
    pub fn map_tag(&self, tag: &str) -> String {
        if let Some(to) = self.pairs.get(tag) {
            return to.clone();
        }
        if let Some((prefix, kind)) = split_tag(tag) {
            if let Some(to) = self.pairs.get(kind) {
                return format!("{prefix}-{to}");
            }
        }
        tag.to_string()
    }
}

impl FromStr for LabelMap {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        LabelMap::parse(s)
    }
}

impl std::fmt::Display for LabelMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (a, b) in &self.pairs {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{a}={b}")?;
        }
        Ok(())
    }
}

/// Split an IOB2 tag `B-PER` into (`B`, `PER`). `None` for `O` and for anything that is not
/// `B-X`/`I-X` with a non-empty `X`.
pub(crate) fn split_tag(tag: &str) -> Option<(&str, &str)> {
    let (prefix, kind) = tag.split_once('-')?;
    if (prefix == "B" || prefix == "I") && !kind.is_empty() {
        Some((prefix, kind))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let m = LabelMap::parse(" agree = Favor ,disagree=Against,").unwrap();
        assert_eq!(m.map("agree"), "Favor");
        assert_eq!(m.map("disagree"), "Against");
        assert_eq!(m.map("other"), "other");
        assert_eq!(m.to_string(), "agree=Favor,disagree=Against");
        assert!(LabelMap::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_pairs() {
        assert!(LabelMap::parse("agree").is_err());
        assert!(LabelMap::parse("=x").is_err());
        assert!(LabelMap::parse("a=b,a=c").is_err());
        assert!(LabelMap::parse("a=b,a=b").is_ok());
        let msg = LabelMap::parse("agree").unwrap_err().to_string();
        assert!(msg.contains("no `=`"), "{msg}");
    }

    #[test]
    fn maps_tags_by_whole_tag_or_type() {
        let m = LabelMap::parse("PERS=PER,B-MISC=O").unwrap();
        assert_eq!(m.map_tag("B-PERS"), "B-PER");
        assert_eq!(m.map_tag("I-PERS"), "I-PER");
        assert_eq!(m.map_tag("B-MISC"), "O");
        assert_eq!(m.map_tag("I-MISC"), "I-MISC");
        assert_eq!(m.map_tag("O"), "O");
    }
}
