//! Text tokenization for the five text features. The real choice is a Qwen2 `tokenizer.json`
//! (the reference's ids share the Qwen2 token table); without one, a built-in byte-level BPE
//! tokenizer is trained on the dataset's own texts and saved as a `tokenizer.json` too, so every
//! later stage loads its tokenizer the same way, from the dataset folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::error::{DataError, Result};

/// Special tokens of the built-in vocabulary, at the front: ids 0 (`<pad>`) and 1 (`<unk>`,
/// kept so that ids mean the same as in earlier datasets; byte-level BPE never produces it) and
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
    /// `hf` for a Hugging Face tokenizer.json given to us, `builtin` for the trained byte-level
    /// BPE fallback.
    pub kind: String,
    /// Number of token ids (with added tokens).
    pub vocab_size: u64,
    /// SHA-256 of the tokenizer.json that produced the ids.
    pub sha256: String,
    /// Where the tokenizer came from (a path, or "builtin").
    pub source: String,
}

/// Upper bound on the built-in tokenizer's vocabulary (specials, 256 byte symbols and merges).
pub const BUILTIN_VOCAB: usize = 8192;

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

    /// A byte-level BPE tokenizer trained on `texts` (the catalog's names and titles, plus any
    /// question and answer text the caller adds), after [`BUILTIN_SPECIALS`]. Byte-level means
    /// every string encodes and decodes exactly (digits, separators such as `;` and `->`, any
    /// script), so nothing the pipeline trains on or answers becomes `<unk>`; the merges learnt
    /// on the domain's own text make its frequent entities (brands, shops, category words,
    /// question templates) one or a few tokens. The vocabulary holds at most
    /// [`BUILTIN_VOCAB`] ids: right-sized for the small LLMs trained from scratch on it.
    /// Training is deterministic: the same texts, in any order, give the same tokenizer.json.
    pub fn builtin<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        use tokenizers::models::bpe::{BPE, BpeTrainer};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::{AddedToken, TokenizerImpl};

        let fail = |e: tokenizers::Error| DataError::Tokenizer {
            path: PathBuf::from("builtin"),
            reason: e.to_string(),
        };
        // Sorted, so that the training input (and its tie-breaks) is independent of the
        // caller's order; duplicates kept, since frequency is what BPE learns from.
        let mut corpus: Vec<&str> = texts.into_iter().collect();
        corpus.sort_unstable();
        let specials: Vec<AddedToken> = BUILTIN_SPECIALS
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect();
        let mut trainer = BpeTrainer::builder()
            .vocab_size(BUILTIN_VOCAB)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let byte_level = ByteLevel::default().add_prefix_space(false);
        let mut tok: TokenizerImpl<
            BPE,
            tokenizers::NormalizerWrapper,
            ByteLevel,
            ByteLevel,
            ByteLevel,
        > = TokenizerImpl::new(BPE::default());
        tok.with_pre_tokenizer(Some(byte_level));
        tok.with_decoder(Some(byte_level));
        tok.train(&mut trainer, corpus.into_iter()).map_err(fail)?;
        let json = Tokenizer::from(tok)
            .to_string(false)
            .map_err(fail)?
            .into_bytes();
        // The tokenizer in use is the one read back from its JSON, exactly as every later stage
        // will load it from the dataset folder.
        let inner = Tokenizer::from_bytes(&json).map_err(fail)?;
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

    fn decode(tok: &TextTokenizer, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        tok.inner().decode(&ids, false).unwrap()
    }

    #[test]
    fn builtin_encodes_and_decodes_any_text_exactly() {
        let corpus = [
            "Kavora running shoes, black",
            "Kavora Official Store",
            "women's dress 2024",
            "Kavora Official Store",
        ];
        let tok = TextTokenizer::builtin(corpus).unwrap();
        // Text never seen in training (digits, list and trajectory separators, Chinese, ChatML
        // markers) still round-trips: byte-level BPE has no unknown token.
        let unseen = [
            "Kavora; Lumen; 112 -> 6",
            "用户浏览过的品牌为「Kavora」的商品有多少个？",
            "<|im_start|>assistant\n11<|im_end|>",
            "  leading and trailing spaces  ",
        ];
        for t in corpus.iter().chain(&unseen) {
            let ids = tok.encode(t).unwrap();
            assert!(!ids.contains(&1), "unknown token in {t:?}: {ids:?}");
            assert_eq!(decode(&tok, &ids), *t);
        }
        // The ChatML markers are single special ids at the front of the vocabulary.
        assert_eq!(tok.inner().token_to_id("<|im_start|>"), Some(3));
        assert_eq!(tok.inner().token_to_id("<|im_end|>"), Some(4));
        // A repeated entity of the corpus becomes one token.
        assert_eq!(tok.encode("Kavora").unwrap().len(), 1);
        assert_eq!(tok.info().kind, "builtin");
        assert!(tok.vocab_size() <= BUILTIN_VOCAB as u64);
        // Reloading the saved json gives the same ids.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, tok.json()).unwrap();
        let again = TextTokenizer::from_file(&p).unwrap();
        assert_eq!(
            again.encode(unseen[1]).unwrap(),
            tok.encode(unseen[1]).unwrap()
        );
        assert_eq!(again.info().sha256, tok.info().sha256);
    }

    #[test]
    fn builtin_is_deterministic_and_order_free() {
        let a = TextTokenizer::builtin(["ab ab", "cd cd ab", "ab"]).unwrap();
        let b = TextTokenizer::builtin(["ab", "cd cd ab", "ab ab"]).unwrap();
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
