//! The synthetic Taobao-like generator: presets (`tiny` for tests, `small` for the quickstart,
//! `taobao` at the real dataset's scale), a strict TOML form for custom sizes, and the
//! generation of raw logs that [`crate::preprocess`] turns into a dataset. Deterministic per
//! seed, independent of thread count.

mod names;
mod users;
mod world;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::preprocess::{PreprocessConfig, RawCatalog, RawUser};

pub use world::World;

/// Sizes and behaviour of a synthetic dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Users generated (before length filtering).
    pub users: usize,
    /// Items in the catalog (before dropping rarely clicked ones).
    pub items: usize,
    pub cates: usize,
    pub brands: usize,
    /// Shops; every shop has its own seller, as in the reference (sellers vocab = shops vocab).
    pub shops: usize,
    /// Mean clicks per user (log-normal lengths).
    pub mean_len: f64,
    /// Log-normal sigma of the lengths.
    pub len_sigma: f64,
    /// Shortest and longest generated sequences.
    pub min_len: usize,
    pub max_len: usize,
    /// Most long-term interest categories per user (1 to this many).
    pub interests: usize,
    /// Mean clicks per session (sessions stay in one category).
    pub session_len: f64,
    /// Probability that a click repeats an item seen earlier in the session.
    pub repeat_prob: f64,
    /// Probability that a click goes to the brand the user currently favours in the category.
    pub brand_loyalty: f64,
    /// Probability that a new interest category emerges over the user's timeline.
    pub drift: f64,
    /// Zipf exponents: category popularity, brand popularity within a category, item popularity
    /// within a brand.
    pub cate_zipf: f64,
    pub brand_zipf: f64,
    pub item_zipf: f64,
    /// Unix time of the earliest possible click, and the window users start in.
    pub start_time: i64,
    pub span_seconds: i64,
    /// Mean gap between sessions and between clicks of a session.
    pub session_gap_seconds: f64,
    pub click_gap_seconds: f64,
}

impl SynthConfig {
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self {
            users: 300,
            items: 1_500,
            cates: 12,
            brands: 40,
            shops: 80,
            mean_len: 60.0,
            len_sigma: 0.5,
            min_len: 20,
            max_len: 300,
            interests: 4,
            session_len: 6.0,
            repeat_prob: 0.15,
            brand_loyalty: 0.6,
            drift: 0.5,
            cate_zipf: 1.0,
            brand_zipf: 1.0,
            item_zipf: 1.0,
            start_time: 1_700_000_000,
            span_seconds: 180 * 86_400,
            session_gap_seconds: 8.0 * 3600.0,
            click_gap_seconds: 90.0,
        };
        match name {
            "tiny" => Some(base),
            "small" => Some(Self {
                users: 6_000,
                items: 40_000,
                cates: 120,
                brands: 1_500,
                shops: 3_000,
                mean_len: 100.0,
                max_len: 1_000,
                ..base
            }),
            // REFERENCE.md section 2: 184,520 users, 994,447 items, 9,330 categories, 149,750
            // brands, 268,446 shops and sellers, 31.3M interactions (about 170 per user).
            // Items are generated with a margin because rarely clicked ones are dropped; with
            // these settings about 994k survive.
            "taobao" => Some(Self {
                users: 184_520,
                items: 1_337_000,
                cates: 9_330,
                brands: 149_750,
                shops: 268_446,
                mean_len: 170.0,
                len_sigma: 0.6,
                min_len: 20,
                max_len: 4_000,
                item_zipf: 0.75,
                ..base
            }),
            _ => None,
        }
    }

    pub const PRESETS: [&'static str; 3] = ["tiny", "small", "taobao"];

    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, reason: String| Err(DataError::Invalid(format!("synth.{key}: {reason}")));
        if self.cates == 0 || self.users == 0 {
            return bad("cates", "users and cates must be positive".into());
        }
        if self.brands < self.cates {
            return bad(
                "brands",
                format!("{} is fewer than cates ({})", self.brands, self.cates),
            );
        }
        if self.shops < self.brands {
            return bad(
                "shops",
                format!("{} is fewer than brands ({})", self.shops, self.brands),
            );
        }
        if self.items < self.shops {
            return bad(
                "items",
                format!("{} is fewer than shops ({})", self.items, self.shops),
            );
        }
        if self.min_len == 0 || self.max_len < self.min_len {
            return bad(
                "max_len",
                format!(
                    "need 0 < min_len ({}) <= max_len ({})",
                    self.min_len, self.max_len
                ),
            );
        }
        if self.mean_len.is_nan()
            || self.mean_len < 1.0
            || self.session_len.is_nan()
            || self.session_len < 1.0
        {
            return bad(
                "mean_len",
                "mean_len and session_len must be at least 1".into(),
            );
        }
        for (key, p) in [
            ("repeat_prob", self.repeat_prob),
            ("brand_loyalty", self.brand_loyalty),
            ("drift", self.drift),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(key, format!("{p} is not a probability"));
            }
        }
        Ok(())
    }
}

/// A synth specification file: `[synth]` sizes (all keys required; start from a preset's values
/// printed by `uqa data synth --print-config`) and optional `[preprocess]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthSpec {
    pub synth: SynthConfig,
    #[serde(default)]
    pub preprocess: PreprocessConfig,
}

impl SynthSpec {
    pub fn preset(name: &str) -> Option<Self> {
        let mut preprocess = PreprocessConfig::default();
        if name == "tiny" {
            preprocess.min_user_len = 10;
        }
        SynthConfig::preset(name).map(|synth| Self { synth, preprocess })
    }

    /// Parse a TOML spec; unknown keys are errors naming the key.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let spec: Self = toml::from_str(&text).map_err(|e| DataError::Config {
            path: path.to_path_buf(),
            key: e
                .span()
                .and_then(|s| text.get(s))
                .unwrap_or("?")
                .trim()
                .to_string(),
            reason: e.message().to_string(),
        })?;
        spec.synth.validate()?;
        spec.preprocess.validate()?;
        Ok(spec)
    }
}

/// Generate the raw catalog and click logs.
pub fn generate(cfg: &SynthConfig, seed: u64) -> Result<(RawCatalog, Vec<RawUser>)> {
    cfg.validate()?;
    let world = World::generate(cfg, seed);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = cfg.users.div_ceil(threads);
    let mut parts: Vec<Vec<RawUser>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let world = &world;
                s.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(cfg.users))
                        .map(|u| users::generate_user(cfg, world, seed, u))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts = handles
            .into_iter()
            .map(|h| h.join().expect("user generation does not panic"))
            .collect();
    });
    Ok((world.catalog, parts.into_iter().flatten().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_structured() {
        let cfg = SynthConfig::preset("tiny").unwrap();
        let (cat_a, users_a) = generate(&cfg, 5).unwrap();
        let (cat_b, users_b) = generate(&cfg, 5).unwrap();
        assert_eq!(cat_a, cat_b);
        assert_eq!(users_a, users_b);
        let (_, users_c) = generate(&cfg, 6).unwrap();
        assert_ne!(users_a, users_c);
        assert_eq!(users_a.len(), cfg.users);
        for u in &users_a {
            assert!((cfg.min_len..=cfg.max_len).contains(&u.events.len()));
            assert!(u.events.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        }
        // Titles are built from the brand and category words.
        let item = &cat_a.items[0];
        assert!(
            item.title
                .starts_with(&cat_a.brand_names[item.brand as usize])
        );
        assert!(item.title.contains(&cat_a.cate_names[item.cate as usize]));
        // The hierarchy is consistent: a brand lives in one category.
        let mut brand_cate = std::collections::HashMap::new();
        for it in &cat_a.items {
            assert_eq!(*brand_cate.entry(it.brand).or_insert(it.cate), it.cate);
        }
    }

    #[test]
    fn users_concentrate_on_few_categories_and_repeat() {
        let cfg = SynthConfig::preset("tiny").unwrap();
        let (cat, users) = generate(&cfg, 1).unwrap();
        let mut top_share = 0.0;
        let mut repeats = 0usize;
        let mut clicks = 0usize;
        for u in &users {
            let mut counts = std::collections::HashMap::new();
            let mut seen = std::collections::HashSet::new();
            for e in &u.events {
                *counts
                    .entry(cat.items[e.item as usize].cate)
                    .or_insert(0usize) += 1;
                repeats += usize::from(!seen.insert(e.item));
            }
            clicks += u.events.len();
            top_share += *counts.values().max().unwrap() as f64 / u.events.len() as f64;
        }
        top_share /= users.len() as f64;
        // 12 categories: uniform browsing would give a top share near 0.15.
        assert!(top_share > 0.4, "top category share {top_share}");
        assert!(
            repeats as f64 / clicks as f64 > 0.1,
            "repeat rate {}",
            repeats as f64 / clicks as f64
        );
    }

    #[test]
    fn unknown_keys_and_bad_sizes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spec.toml");
        let mut text = toml::to_string(&SynthSpec::preset("tiny").unwrap()).unwrap();
        text = text.replace("users = 300", "users = 300\nuserz = 3");
        std::fs::write(&p, &text).unwrap();
        let err = SynthSpec::from_toml_file(&p).unwrap_err().to_string();
        assert!(err.contains("userz") && err.contains("spec.toml"), "{err}");

        let mut spec = SynthSpec::preset("tiny").unwrap();
        spec.synth.shops = 10;
        std::fs::write(&p, toml::to_string(&spec).unwrap()).unwrap();
        let err = SynthSpec::from_toml_file(&p).unwrap_err().to_string();
        assert!(err.contains("synth.shops"), "{err}");
    }
}
