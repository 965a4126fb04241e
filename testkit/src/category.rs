//! Why a test may skip, and `UQA_REQUIRE`: the comma list of categories whose skips are failures.
//!
//! `all` means everything a CI machine can provide (the fetched assets and the Debian packages of
//! `scripts/ci-deps.sh`), which is every category except `gpu`: CI machines have no GPU, so a
//! run that needs NCCL and the CUDA driver must say `gpu` by name.

use std::collections::BTreeSet;
use std::fmt;

/// The environment variable naming the required categories.
pub const REQUIRE_VAR: &str = "UQA_REQUIRE";

/// What a skipped test was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// MovieLens-100k / 1M atomic files in the asset cache (`scripts/fetch-assets.sh movielens`).
    Movielens,
    /// The real Qwen2 `tokenizer.json` (`scripts/fetch-assets.sh tokenizer`).
    Tokenizer,
    /// The GGUF LLM files (`scripts/fetch-assets.sh llm`).
    Gguf,
    /// OpenMPI's `mpirun` and uqa-comm's `mpi` feature.
    Mpi,
    /// Slurm (`sbatch`, `slurmctld`) and root, which the local test cluster needs.
    Slurm,
    /// The `prometheus` and `promtool` programs.
    Prometheus,
    /// NCCL and the CUDA driver. Today only comm/tests/nccl.rs uses it, and the other way round:
    /// its tests check the error given without them, so they skip on a GPU host.
    Gpu,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Movielens,
        Category::Tokenizer,
        Category::Gguf,
        Category::Mpi,
        Category::Slurm,
        Category::Prometheus,
        Category::Gpu,
    ];

    /// The categories `UQA_REQUIRE=assets` stands for: what `scripts/fetch-assets.sh` fetches.
    pub const ASSETS: [Category; 3] = [Category::Movielens, Category::Tokenizer, Category::Gguf];

    pub fn name(self) -> &'static str {
        match self {
            Category::Movielens => "movielens",
            Category::Tokenizer => "tokenizer",
            Category::Gguf => "gguf",
            Category::Mpi => "mpi",
            Category::Slurm => "slurm",
            Category::Prometheus => "prometheus",
            Category::Gpu => "gpu",
        }
    }

    /// Whether `all` includes it: everything but `gpu` (see the module doc).
    pub fn in_all(self) -> bool {
        self != Category::Gpu
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `UQA_REQUIRE` value that names something unknown: an error, never ignored, so that a typo
/// cannot quietly turn a requirement off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequireError {
    pub value: String,
    pub unknown: String,
}

impl fmt::Display for RequireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
        write!(
            f,
            "{REQUIRE_VAR}={:?}: unknown category {:?} (known: all, assets, {})",
            self.value,
            self.unknown,
            known.join(", ")
        )
    }
}

impl std::error::Error for RequireError {}

/// Parses a `UQA_REQUIRE` value: comma-separated category names, `assets` (movielens, tokenizer,
/// gguf) and `all` (every category but gpu); case and spaces around names do not matter, empty
/// items are ignored.
pub fn parse_require(value: &str) -> Result<BTreeSet<Category>, RequireError> {
    let mut out = BTreeSet::new();
    for item in value.split(',') {
        let item = item.trim().to_ascii_lowercase();
        match item.as_str() {
            "" => {}
            "all" => out.extend(Category::ALL.into_iter().filter(|c| c.in_all())),
            "assets" => out.extend(Category::ASSETS),
            name => match Category::ALL.into_iter().find(|c| c.name() == name) {
                Some(c) => {
                    out.insert(c);
                }
                None => {
                    return Err(RequireError {
                        value: value.to_string(),
                        unknown: name.to_string(),
                    });
                }
            },
        }
    }
    Ok(out)
}

/// The categories required by this process's `UQA_REQUIRE` (none when it is unset).
pub fn required_categories() -> Result<BTreeSet<Category>, RequireError> {
    match std::env::var(REQUIRE_VAR) {
        Ok(v) => parse_require(&v),
        Err(std::env::VarError::NotPresent) => Ok(BTreeSet::new()),
        Err(std::env::VarError::NotUnicode(v)) => Err(RequireError {
            value: v.to_string_lossy().into_owned(),
            unknown: v.to_string_lossy().into_owned(),
        }),
    }
}

/// Whether `UQA_REQUIRE` makes a skip of `category` a failure. Panics on a malformed value: a
/// test helper has no caller to hand the error to, and a typo must not pass for "nothing required".
#[track_caller]
pub fn required(category: Category) -> bool {
    match required_categories() {
        Ok(set) => set.contains(&category),
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Category::*;

    fn set(cs: &[Category]) -> BTreeSet<Category> {
        cs.iter().copied().collect()
    }

    #[test]
    fn names_round_trip() {
        for c in Category::ALL {
            assert_eq!(parse_require(c.name()).unwrap(), set(&[c]));
            assert_eq!(c.to_string(), c.name());
        }
    }

    #[test]
    fn empty_requires_nothing() {
        assert!(parse_require("").unwrap().is_empty());
        assert!(parse_require(" , ,").unwrap().is_empty());
    }

    #[test]
    fn assets_are_the_three_fetched_assets() {
        assert_eq!(
            parse_require("assets").unwrap(),
            set(&[Movielens, Tokenizer, Gguf])
        );
    }

    #[test]
    fn all_is_everything_but_gpu() {
        let all = parse_require("all").unwrap();
        assert_eq!(
            all,
            set(&[Movielens, Tokenizer, Gguf, Mpi, Slurm, Prometheus])
        );
        assert!(!all.contains(&Gpu));
        assert_eq!(parse_require("all,gpu").unwrap(), set(&Category::ALL));
    }

    #[test]
    fn lists_combine_with_spaces_and_any_case() {
        assert_eq!(
            parse_require("assets, MPI ,slurm,prometheus").unwrap(),
            set(&[Movielens, Tokenizer, Gguf, Mpi, Slurm, Prometheus])
        );
        assert_eq!(parse_require("gguf,gguf").unwrap(), set(&[Gguf]));
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let e = parse_require("assets,slrum").unwrap_err();
        assert_eq!(e.unknown, "slrum");
        let msg = e.to_string();
        assert!(
            msg.contains("\"slrum\"") && msg.contains("known: all, assets, movielens"),
            "{msg}"
        );
    }

    /// The suite's own `UQA_REQUIRE` (CI sets `all`) must parse, so that a typo fails here even
    /// when no test happens to skip.
    #[test]
    fn this_runs_uqa_require_parses() {
        if let Err(e) = required_categories() {
            panic!("{e}");
        }
    }
}
