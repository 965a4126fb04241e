//! Text tokenization for the five text features. The real choice is a Qwen2 `tokenizer.json`
//! (the reference's ids share the Qwen2 token table); without one, a built-in word-level
//! vocabulary is built from the dataset's own texts and saved as a `tokenizer.json` too, so every
//! later stage loads its tokenizer the same way, from the dataset folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::error::{DataError, Result};

/// Special tokens of the built-in vocabulary, at the front: ids 0 (`<pad>`) and 1 (`<unk>`) and
/// the ChatML markers later stages need.
pub const BUILTIN_SPECIALS: [&str; 5] = [
    "<pad>",
    "<unk>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
];

/// What tokenized a dataset's texts; recorded in its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerInfo {
    /// `hf` for a Hugging Face tokenizer.json given to us, `builtin` for the word-level fallback.
    pub kind: String,
    /// Number of token ids (with added tokens).
    pub vocab_size: u64,
    /// SHA-256 of the tokenizer.json that produced the ids.
    pub sha256: String,
    /// Where the tokenizer came from (a path, or "builtin").
    pub source: String,
}

pub struct TextTokenizer {
    inner: Tokenizer,
    info: TokenizerInfo,
    json: Vec<u8>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("info", &self.info)
            .finish()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TextTokenizer {
    /// Load a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let inner = Tokenizer::from_bytes(&json).map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let info = TokenizerInfo {
            kind: "hf".into(),
            vocab_size: inner.get_vocab_size(true) as u64,
            sha256: sha256_hex(&json),
            source: path.display().to_string(),
        };
        Ok(Self { inner, info, json })
    }

    /// Wrap a tokenizer built elsewhere (from a GGUF file's metadata); `source` says where.
    pub fn from_tokenizer(inner: Tokenizer, source: &str) -> Result<Self> {
        let json = inner
            .to_string(false)
            .map_err(|e| DataError::Tokenizer {
                path: PathBuf::from(source),
                reason: e.to_string(),
            })?
            .into_bytes();
        let info = TokenizerInfo {
            kind: "hf".into(),
            vocab_size: inner.get_vocab_size(true) as u64,
            sha256: sha256_hex(&json),
            source: source.to_string(),
        };
        Ok(Self { inner, info, json })
    }

    /// A word-level tokenizer over every word piece of `texts` (split the way the
    /// tokenizer's own whitespace pre-tokenizer splits them), after [`BUILTIN_SPECIALS`].
    pub fn builtin<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut words = BTreeSet::new();
        for t in texts {
            words.extend(word_pieces(t).map(str::to_string));
        }
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (id, s) in BUILTIN_SPECIALS.iter().enumerate() {
            vocab.insert(s.to_string(), id.into());
            if id >= 2 {
                added.push(serde_json::json!({
                    "id": id, "content": s, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                }));
            }
        }
        for w in words {
            if !vocab.contains_key(&w) {
                let id = vocab.len();
                vocab.insert(w, id.into());
            }
        }
        let doc = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        let json = serde_json::to_vec(&doc).map_err(|e| DataError::Invalid(e.to_string()))?;
        let inner = Tokenizer::from_bytes(&json).map_err(|e| DataError::Tokenizer {
            path: PathBuf::from("builtin"),
            reason: e.to_string(),
        })?;
        let info = TokenizerInfo {
            kind: "builtin".into(),
            vocab_size: inner.get_vocab_size(true) as u64,
            sha256: sha256_hex(&json),
            source: "builtin".into(),
        };
        Ok(Self { inner, info, json })
    }

    pub fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    pub fn vocab_size(&self) -> u64 {
        self.info.vocab_size
    }

    /// The tokenizer.json bytes, to store beside the dataset.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| DataError::Tokenizer {
                path: PathBuf::from(&self.info.source),
                reason: format!("encoding {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Token ids of many texts at once (in parallel inside `tokenizers`).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<i64>>> {
        let encodings = self
            .inner
            .encode_batch_fast(texts.to_vec(), false)
            .map_err(|e| DataError::Tokenizer {
                path: PathBuf::from(&self.info.source),
                reason: format!("encoding a batch of {} texts: {e}", texts.len()),
            })?;
        Ok(encodings
            .iter()
            .map(|e| e.get_ids().iter().map(|&i| i as i64).collect())
            .collect())
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// The pieces the `Whitespace` pre-tokenizer produces: runs of word characters, and runs of
/// other non-space characters.
fn word_pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut pieces = Vec::new();
    let mut start = None;
    let mut kind = 0u8;
    for (i, c) in text.char_indices() {
        let k = if c.is_whitespace() {
            0
        } else if c.is_alphanumeric() || c == '_' {
            1
        } else {
            2
        };
        if k != kind {
            if let Some(s) = start.take() {
                pieces.push(&text[s..i]);
            }
            if k != 0 {
                start = Some(i);
            }
            kind = k;
        }
    }
    if let Some(s) = start {
        pieces.push(&text[s..]);
    }
    pieces.into_iter()
}

/// The default place of the real Qwen2 tokenizer: `$UQA_TOKENIZER`, else the asset cache
/// (`scripts/fetch-assets.sh` puts it there). `None` when neither exists.
pub fn default_tokenizer_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("UQA_TOKENIZER") {
        return Some(PathBuf::from(p));
    }
    let p = crate::assets::cache_dir().join("qwen2-tokenizer/tokenizer.json");
    p.exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_round_trips_its_corpus_without_unknowns() {
        let texts = ["Kavora running shoes, black", "women's dress 2024"];
        let tok = TextTokenizer::builtin(texts).unwrap();
        for t in texts {
            let ids = tok.encode(t).unwrap();
            assert!(!ids.is_empty());
            assert!(!ids.contains(&1), "unknown token in {t:?}: {ids:?}");
        }
        assert_eq!(tok.encode("unseen").unwrap(), vec![1]);
        assert_eq!(tok.info().kind, "builtin");
        // Reloading the saved json gives the same ids.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, tok.json()).unwrap();
        let again = TextTokenizer::from_file(&p).unwrap();
        assert_eq!(
            again.encode(texts[1]).unwrap(),
            tok.encode(texts[1]).unwrap()
        );
        assert_eq!(again.info().sha256, tok.info().sha256);
    }

    #[test]
    fn builtin_is_deterministic() {
        let a = TextTokenizer::builtin(["b a", "c"]).unwrap();
        let b = TextTokenizer::builtin(["c", "a b"]).unwrap();
        assert_eq!(a.json(), b.json());
    }

    #[test]
    fn bad_tokenizer_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, b"{not json").unwrap();
        let err = TextTokenizer::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
