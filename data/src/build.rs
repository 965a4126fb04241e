//! Building dataset folders end to end: a source (synthetic or MovieLens) through preprocessing
//! into a folder that appears whole or not at all. The folder is assembled under a temporary
//! sibling name and renamed into place at the end; an existing folder is only replaced with
//! `force`, and only after the new one is complete.

use std::path::{Path, PathBuf};

use crate::dataset::{DatasetMeta, Source, write_dataset};
use crate::error::{DataError, Result};
use crate::movielens;
use crate::preprocess::{PreprocessConfig, RawCatalog, RawUser, preprocess};
use crate::synth::{self, SynthSpec};
use crate::tokenizer::{TextTokenizer, default_tokenizer_path};

/// Which tokenizer turns texts into token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerChoice {
    /// The real Qwen2 tokenizer when one is present (`$UQA_TOKENIZER` or the asset cache),
    /// else the built-in vocabulary.
    Auto,
    Builtin,
    File(PathBuf),
}

impl std::str::FromStr for TokenizerChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "builtin" => Self::Builtin,
            path => Self::File(PathBuf::from(path)),
        })
    }
}

fn all_texts(raw: &RawCatalog) -> impl Iterator<Item = &str> {
    raw.items
        .iter()
        .map(|i| i.title.as_str())
        .chain(raw.cate_names.iter().map(String::as_str))
        .chain(raw.brand_names.iter().map(String::as_str))
        .chain(raw.shop_names.iter().map(String::as_str))
        .chain(raw.seller_names.iter().map(String::as_str))
}

/// The dataset's tokenizer. The built-in one is trained on the catalog's texts plus
/// `extra_texts` (the question wording, which only later stages produce).
fn tokenizer_for(
    choice: &TokenizerChoice,
    raw: &RawCatalog,
    extra_texts: &[String],
) -> Result<TextTokenizer> {
    let builtin =
        || TextTokenizer::builtin(all_texts(raw).chain(extra_texts.iter().map(String::as_str)));
    match choice {
        TokenizerChoice::File(p) => TextTokenizer::from_file(p),
        TokenizerChoice::Auto => match default_tokenizer_path() {
            Some(p) => TextTokenizer::from_file(&p),
            None => builtin(),
        },
        TokenizerChoice::Builtin => builtin(),
    }
}

/// Generate a synthetic dataset into `out`.
pub fn build_synthetic(
    out: &Path,
    spec: &SynthSpec,
    preset: &str,
    seed: u64,
    tokenizer: &TokenizerChoice,
    extra_texts: &[String],
    force: bool,
) -> Result<DatasetMeta> {
    check_target(out, force)?;
    let (raw, users) = synth::generate(&spec.synth, seed)?;
    let source = Source::Synthetic {
        preset: preset.to_string(),
        seed,
    };
    build(
        out,
        raw,
        users,
        source,
        &spec.preprocess,
        (tokenizer, extra_texts),
        Vec::new(),
        force,
    )
}

/// The SASRec paper's protocol for MovieLens: users and items with at least 5 ratings,
/// leave-one-out, histories up to 200.
pub fn movielens_preprocess() -> PreprocessConfig {
    PreprocessConfig {
        min_item_interactions: 5,
        min_user_len: 5,
        max_user_len: usize::MAX,
        split: crate::preprocess::Split::LeaveLastOut { count: 1 },
        // Whole histories: training keeps each row's last `[data] max_len` positions anyway,
        // and evaluation must know every item a user rated to exclude it from the sampled
        // negatives, as the SASRec protocol does.
        max_len: usize::MAX,
    }
}

/// Import a MovieLens folder of RecBole atomic files into `out`.
pub fn import_movielens(
    dir: &Path,
    out: &Path,
    config: &PreprocessConfig,
    tokenizer: &TokenizerChoice,
    extra_texts: &[String],
    force: bool,
) -> Result<DatasetMeta> {
    check_target(out, force)?;
    let (raw, users, name) = movielens::import(dir)?;
    let source = Source::Movielens {
        variant: name,
        path: dir.display().to_string(),
    };
    let notes = movielens::FIELD_NOTES
        .iter()
        .map(|s| s.to_string())
        .collect();
    build(
        out,
        raw,
        users,
        source,
        config,
        (tokenizer, extra_texts),
        notes,
        force,
    )
}

#[allow(clippy::too_many_arguments)]
fn build(
    out: &Path,
    raw: RawCatalog,
    users: Vec<RawUser>,
    source: Source,
    config: &PreprocessConfig,
    (tokenizer, extra_texts): (&TokenizerChoice, &[String]),
    notes: Vec<String>,
    force: bool,
) -> Result<DatasetMeta> {
    config.validate()?;
    let tok = tokenizer_for(tokenizer, &raw, extra_texts)?;
    let data = preprocess(users, &raw, config, &tok)?;
    drop(raw);
    if data.users.is_empty() {
        return Err(DataError::Invalid(
            "no user survives preprocessing: loosen min_user_len / max_user_len / min_item_interactions".into(),
        ));
    }
    let staging = staging_dir(out);
    let _cleanup = RemoveOnDrop(staging.clone());
    let meta = write_dataset(
        &staging,
        &data,
        source,
        tok.json(),
        tok.info().clone(),
        *config,
        notes,
    )?;
    publish(&staging, out, force)?;
    Ok(meta)
}

fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or("dataset".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Refuse early (before any work) to overwrite a non-empty folder without `force`.
fn check_target(out: &Path, force: bool) -> Result<()> {
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !force {
        return Err(DataError::Invalid(format!(
            "{}: already exists and is not empty (pass --force to replace it)",
            out.display()
        )));
    }
    if out.exists() && !out.is_dir() {
        return Err(DataError::Invalid(format!(
            "{}: exists and is not a folder",
            out.display()
        )));
    }
    Ok(())
}

/// Move the finished `staging` folder to `out`, replacing an existing one only now.
fn publish(staging: &Path, out: &Path, force: bool) -> Result<()> {
    check_target(out, force)?;
    let old = out.with_file_name(format!(
        ".{}.old.{}",
        out.file_name()
            .map_or("dataset".into(), |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old).map_err(|e| DataError::io(out, e))?;
    }
    if let Err(e) = std::fs::rename(staging, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        return Err(DataError::io(out, e));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
