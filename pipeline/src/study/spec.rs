//! A study file (`uqa study run STUDY.toml`) and its expansion into elements and stages.
//!
//! ```toml
//! [study]
//! name = "table2"
//! seeds = [0]                      # every element once per seed (train.seed of its stages)
//!
//! [base]                           # what every element starts from
//! data = { preset = "small", seed = 0, tokenizer = "builtin" }   # or { config = "FILE" }
//! questions = { train_per_task = 300, eval_per_task = 40 }
//! pretrain = "configs/smollm2/pretrain_trmpp.toml"
//! align = "configs/smollm2/align_adapter.toml"
//! eval = { max_new_tokens = 32 }
//! pretrain_set = ["train.epochs=3"]   # optional: overrides for every element
//!
//! [axes.encoders.trmpp]            # an axis value: `--set` overrides per stage
//! [axes.encoders.sasrec]
//! pretrain = ['model.encoder = { kind = "sasrec", layers = 2, width = 64, heads = 2, max_len = 100 }']
//! [axes.prompts.soft]
//! [axes.prompts.text20]
//! align = ['prompt = { kind = "text", last_k = 20 }', 'strategy = { kind = "lora" }']
//!
//! [[points]]                       # optional: these elements instead of the whole product
//! encoders = "trmpp"
//! prompts = "text20"
//! ```
//!
//! An element is one value per axis (and a seed). Its stages are the study's dataset and
//! questions (shared by all), then pre-training, alignment and evaluation. A stage is named by
//! what decides it: the values of the axes that override it or a stage before it, and the seed.
//! Elements that agree on those share the stage, which runs once (one encoder under several
//! prompts is pre-trained once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{PipelineError, Result};

/// The study as run, with absolute paths, inside its folder.
pub const RECORD: &str = "study.toml";

/// The axes a study may vary, in the order element names list them. The report lays the
/// paper's tables out along them.
pub const AXES: [&str; 8] = [
    "encoders",
    "sizes",
    "lengths",
    "side_info",
    "objectives",
    "adapters",
    "strategies",
    "prompts",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    pub study: StudyHeader,
    pub base: Base,
    /// Axis name -> value name -> overrides.
    #[serde(default)]
    pub axes: BTreeMap<String, BTreeMap<String, AxisValue>>,
    /// Explicit elements (axis name -> value name); empty: the product of the axes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<BTreeMap<String, String>>,
    /// sbatch options of the jobs `uqa study run --slurm` submits.
    #[serde(default, skip_serializing_if = "SlurmOptions::is_empty")]
    pub slurm: SlurmOptions,
}

/// `[slurm]`: sbatch options, as on sbatch's command line (`"--nodes=2"`), for every job
/// (`sbatch`) and for each stage's jobs (added after). A training or evaluation element runs
/// data-parallel on every task of its allocation, so `--ntasks`, `--nodes` and
/// `--ntasks-per-node` choose its ranks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmOptions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch: Vec<String>,
    /// The job that makes the dataset and the questions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pretrain: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub align: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eval: Vec<String>,
}

impl SlurmOptions {
    pub fn is_empty(&self) -> bool {
        *self == SlurmOptions::default()
    }

    /// The options of the jobs of one stage (`data`, `pretrain`, `align` or `eval`).
    pub fn for_stage(&self, stage: &str) -> Vec<String> {
        let own = match stage {
            "data" => &self.data,
            "pretrain" => &self.pretrain,
            "align" => &self.align,
            "eval" => &self.eval,
            _ => return self.sbatch.clone(),
        };
        self.sbatch.iter().chain(own).cloned().collect()
    }

    /// Why an option cannot be used, naming it: each is one sbatch option, and the ones the
    /// submitter sets itself (array, dependencies, waiting, its parsable output) are refused.
    pub fn invalid(&self) -> Option<String> {
        let lists = [
            ("sbatch", &self.sbatch),
            ("data", &self.data),
            ("pretrain", &self.pretrain),
            ("align", &self.align),
            ("eval", &self.eval),
        ];
        for (key, list) in lists {
            for opt in list {
                if let Some(why) = refused_sbatch_option(opt) {
                    return Some(format!("slurm.{key}: `{opt}` {why}"));
                }
            }
        }
        None
    }
}

/// Why `uqa study run --slurm` cannot pass `opt` to sbatch, if it cannot.
pub fn refused_sbatch_option(opt: &str) -> Option<&'static str> {
    if !opt.starts_with('-') {
        return Some(
            "is not an sbatch option (write options as on sbatch's command line, e.g. \"--nodes=2\")",
        );
    }
    let name = opt.split('=').next().unwrap_or(opt);
    match name {
        "--array" | "-a" | "--dependency" | "-d" | "--wait" | "-W" | "--parsable" => {
            Some("is set by `uqa study run --slurm` itself")
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyHeader {
    pub name: String,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub data: DataSource,
    #[serde(default)]
    pub questions: Questions,
    /// Base configs of the training stages (relative to the working folder, as in every uqa
    /// config, or absolute).
    pub pretrain: PathBuf,
    pub align: PathBuf,
    /// Overrides of the base configs for every element, before the axes' own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pretrain_set: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub align_set: Vec<String>,
    #[serde(default)]
    pub eval: EvalSettings,
}

/// `uqa data synth`: a preset or a spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
}

fn default_tokenizer() -> String {
    "builtin".into()
}

/// `uqa qa-gen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Questions {
    pub train_per_task: usize,
    pub eval_per_task: usize,
    #[serde(default = "default_lang")]
    pub lang: String,
}

impl Default for Questions {
    fn default() -> Self {
        Questions {
            train_per_task: 300,
            eval_per_task: 40,
            lang: default_lang(),
        }
    }
}

fn default_lang() -> String {
    "zh".into()
}

/// `uqa eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSettings {
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Answer at most this many questions (0: all), for tests.
    #[serde(default)]
    pub limit: usize,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            max_new_tokens: default_max_new_tokens(),
            limit: 0,
        }
    }
}

fn default_max_new_tokens() -> usize {
    32
}

/// One value of an axis: `KEY=VALUE` overrides of the stages' configs (`--set`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisValue {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pretrain: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub align: Vec<String>,
}

/// One element: a value per axis and a seed, with its stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// `(axis, value)` in [`AXES`] order.
    pub values: Vec<(String, String)>,
    pub seed: u64,
    /// The report's name for it, e.g. `trmpp / text20` (`... / seed 1` with several seeds).
    pub name: String,
    pub pretrain: Stage,
    pub align: Stage,
}

/// A training stage: where it runs and the overrides that make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Folder name under `pretrain/` or `align/`, e.g. `sasrec-s0`.
    pub key: String,
    pub overrides: Vec<String>,
}

impl Element {
    /// The pre-training run, the alignment run and its evaluation, inside study folder `dir`.
    pub fn pretrain_dir(&self, dir: &Path) -> PathBuf {
        dir.join("pretrain").join(&self.pretrain.key)
    }

    pub fn align_dir(&self, dir: &Path) -> PathBuf {
        dir.join("align").join(&self.align.key)
    }

    pub fn eval_dir(&self, dir: &Path) -> PathBuf {
        self.align_dir(dir).join("eval")
    }
}

/// A study file read and checked, its paths resolved.
#[derive(Debug, Clone)]
pub struct Study {
    pub file: StudyFile,
    /// The folder its relative paths are relative to (the working folder).
    pub root: PathBuf,
    pub elements: Vec<Element>,
}

impl Study {
    /// Reads `path` and checks everything a run needs before anything runs: known axes and
    /// values, points naming one value of every axis, base configs that exist.
    pub fn load(path: &Path) -> Result<Self> {
        Self::read(path, true)
    }

    /// A study as `uqa study run` recorded it in its folder (`DIR/study.toml`, paths absolute);
    /// its base configs need not exist any more.
    pub fn recorded(dir: &Path) -> Result<Self> {
        Self::read(&dir.join(RECORD), false)
    }

    fn read(path: &Path, check_files: bool) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let file: StudyFile = toml::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
        // Relative paths are relative to the working folder, as in every uqa config.
        let root = std::env::current_dir().map_err(|e| PipelineError::Io {
            path: PathBuf::from("."),
            source: e,
        })?;
        Study::new(file, root, path, check_files)
    }

    fn new(file: StudyFile, root: PathBuf, path: &Path, check_files: bool) -> Result<Self> {
        let bad = |what: String| Err(invalid(path, what));
        if file.study.name.trim().is_empty() {
            return bad("study.name: must not be empty".into());
        }
        if file.study.seeds.is_empty() {
            return bad("study.seeds: name at least one seed".into());
        }
        for axis in file.axes.keys() {
            if !AXES.contains(&axis.as_str()) {
                return bad(format!(
                    "axes.{axis}: unknown axis (known: {})",
                    AXES.join(", ")
                ));
            }
        }
        for (axis, values) in &file.axes {
            if values.is_empty() {
                return bad(format!("axes.{axis}: the axis has no values"));
            }
            for value in values.keys() {
                if value.is_empty()
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.".contains(c))
                {
                    return bad(format!(
                        "axes.{axis}.{value}: value names are letters, digits, `_` and `.`"
                    ));
                }
            }
        }
        if let Some(why) = file.slurm.invalid() {
            return bad(why);
        }
        let d = &file.base.data;
        if d.preset.is_some() == d.config.is_some() {
            return bad("base.data: name exactly one of `preset` and `config`".into());
        }
        let study = Study {
            elements: Vec::new(),
            root,
            file,
        };
        for (key, p) in [
            ("base.pretrain", &study.file.base.pretrain),
            ("base.align", &study.file.base.align),
        ]
        .into_iter()
        .chain(
            study
                .file
                .base
                .data
                .config
                .as_ref()
                .map(|c| ("base.data.config", c)),
        ) {
            let resolved = study.resolve(p);
            if check_files && !resolved.is_file() {
                return bad(format!("{key}: {} does not exist", resolved.display()));
            }
        }
        let points = study.points(path)?;
        let elements = points
            .iter()
            .flat_map(|values| {
                study
                    .file
                    .study
                    .seeds
                    .iter()
                    .map(|&seed| study.element(values, seed))
            })
            .collect();
        Ok(Study { elements, ..study })
    }

    /// The study file with every path absolute, as recorded in the study's folder.
    pub fn to_recorded_toml(&self) -> String {
        let mut file = self.file.clone();
        file.base.pretrain = self.resolve(&file.base.pretrain);
        file.base.align = self.resolve(&file.base.align);
        file.base.data.config = file.base.data.config.as_ref().map(|c| self.resolve(c));
        toml::to_string(&file).unwrap_or_default()
    }

    /// A path of the study file, resolved against its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    /// Each element's `(axis, value)` list, in [`AXES`] order.
    fn points(&self, path: &Path) -> Result<Vec<Vec<(String, String)>>> {
        let axes: Vec<(&String, &BTreeMap<String, AxisValue>)> = AXES
            .iter()
            .filter_map(|a| self.file.axes.get_key_value(*a))
            .collect();
        if self.file.points.is_empty() {
            let mut product: Vec<Vec<(String, String)>> = vec![Vec::new()];
            for (axis, values) in &axes {
                product = product
                    .into_iter()
                    .flat_map(|prefix| {
                        values.keys().map(move |v| {
                            let mut p = prefix.clone();
                            p.push(((*axis).clone(), v.clone()));
                            p
                        })
                    })
                    .collect();
            }
            return Ok(product);
        }
        let mut out = Vec::new();
        for (i, point) in self.file.points.iter().enumerate() {
            for axis in point.keys() {
                if !self.file.axes.contains_key(axis) {
                    return Err(invalid(
                        path,
                        format!("points[{i}].{axis}: no such axis in [axes]"),
                    ));
                }
            }
            let mut values = Vec::new();
            for (axis, known) in &axes {
                let Some(v) = point.get(*axis) else {
                    return Err(invalid(
                        path,
                        format!("points[{i}]: no value for axis `{axis}`"),
                    ));
                };
                if !known.contains_key(v) {
                    return Err(invalid(
                        path,
                        format!(
                            "points[{i}].{axis} = \"{v}\": unknown value (axes.{axis} has {})",
                            known.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                values.push(((*axis).clone(), v.clone()));
            }
            if out.contains(&values) {
                return Err(invalid(path, format!("points[{i}]: listed twice")));
            }
            out.push(values);
        }
        Ok(out)
    }

    fn element(&self, values: &[(String, String)], seed: u64) -> Element {
        let value = |(axis, v): &(String, String)| &self.file.axes[axis][v];
        // The axes whose values override pre-training (in any element) name the pre-training
        // stage; alignment is named by those and the axes that override alignment.
        let overrides_stage = |axis: &str, pick: fn(&AxisValue) -> &Vec<String>| {
            self.file.axes[axis].values().any(|v| !pick(v).is_empty())
        };
        let named_by = |pick: fn(&AxisValue) -> &Vec<String>| -> Vec<&(String, String)> {
            values
                .iter()
                .filter(|(axis, _)| overrides_stage(axis, pick))
                .collect()
        };
        let pretrain_axes = named_by(|v| &v.pretrain);
        let align_axes: Vec<&(String, String)> = values
            .iter()
            .filter(|(axis, _)| {
                overrides_stage(axis, |v| &v.pretrain) || overrides_stage(axis, |v| &v.align)
            })
            .collect();
        let key = |named: &[&(String, String)]| {
            let mut parts: Vec<&str> = named.iter().map(|(_, v)| v.as_str()).collect();
            if parts.is_empty() {
                parts.push("base");
            }
            format!("{}-s{seed}", parts.join("-"))
        };
        let seed_set = format!("train.seed={seed}");
        let mut pretrain = self.file.base.pretrain_set.clone();
        let mut align = self.file.base.align_set.clone();
        for pair in values {
            pretrain.extend(value(pair).pretrain.iter().cloned());
            align.extend(value(pair).align.iter().cloned());
        }
        pretrain.push(seed_set.clone());
        align.push(seed_set);
        let mut name = values
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(" / ");
        if name.is_empty() {
            name = self.file.study.name.clone();
        }
        if self.file.study.seeds.len() > 1 {
            name = format!("{name} / seed {seed}");
        }
        Element {
            values: values.to_vec(),
            seed,
            name,
            pretrain: Stage {
                key: key(&pretrain_axes),
                overrides: pretrain,
            },
            align: Stage {
                key: key(&align_axes),
                overrides: align,
            },
        }
    }
}

fn invalid(path: &Path, reason: String) -> PipelineError {
    PipelineError::Study {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUDY: &str = r#"
[study]
name = "t"

[base]
data = { preset = "tiny" }
pretrain = "pretrain.toml"
align = "align.toml"

[axes.encoders.trmpp]
[axes.encoders.sasrec]
pretrain = ['model.encoder = { kind = "sasrec" }']

[axes.prompts.soft]
[axes.prompts.text20]
align = ['prompt = { kind = "text", last_k = 20 }']
"#;

    fn load(text: &str) -> Result<Study> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pretrain.toml"), "").unwrap();
        std::fs::write(dir.path().join("align.toml"), "").unwrap();
        let p = dir.path().join("study.toml");
        let text = text
            .replace(
                "\"pretrain.toml\"",
                &format!("{:?}", dir.path().join("pretrain.toml")),
            )
            .replace(
                "\"align.toml\"",
                &format!("{:?}", dir.path().join("align.toml")),
            );
        std::fs::write(&p, text).unwrap();
        Study::load(&p)
    }

    #[test]
    fn elements_share_the_stages_their_axes_do_not_override() {
        let s = load(STUDY).unwrap();
        let names: Vec<&str> = s.elements.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sasrec / soft",
                "sasrec / text20",
                "trmpp / soft",
                "trmpp / text20"
            ]
        );
        let pre: Vec<&str> = s.elements.iter().map(|e| e.pretrain.key.as_str()).collect();
        assert_eq!(pre, ["sasrec-s0", "sasrec-s0", "trmpp-s0", "trmpp-s0"]);
        let al: Vec<&str> = s.elements.iter().map(|e| e.align.key.as_str()).collect();
        assert_eq!(
            al,
            [
                "sasrec-soft-s0",
                "sasrec-text20-s0",
                "trmpp-soft-s0",
                "trmpp-text20-s0"
            ]
        );
        assert_eq!(
            s.elements[1].align.overrides,
            ["prompt = { kind = \"text\", last_k = 20 }", "train.seed=0"]
        );
        assert_eq!(
            s.elements[0].pretrain.overrides,
            ["model.encoder = { kind = \"sasrec\" }", "train.seed=0"]
        );
    }

    #[test]
    fn points_and_seeds_choose_the_elements() {
        let text = STUDY.replace("name = \"t\"", "name = \"t\"\nseeds = [0, 1]")
            + "\n[[points]]\nencoders = \"trmpp\"\nprompts = \"text20\"\n";
        let s = load(&text).unwrap();
        let names: Vec<&str> = s.elements.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["trmpp / text20 / seed 0", "trmpp / text20 / seed 1"]
        );
        assert_eq!(s.elements[1].pretrain.key, "trmpp-s1");
    }

    #[test]
    fn unknown_axes_values_and_missing_configs_are_refused_by_name() {
        let err = |text: &str| load(text).unwrap_err().to_string();
        let e = err(&STUDY.replace("axes.prompts.soft", "axes.colours.soft"));
        assert!(e.contains("axes.colours: unknown axis"), "{e}");
        let e =
            err(&(STUDY.to_string() + "\n[[points]]\nencoders = \"gpt\"\nprompts = \"soft\"\n"));
        assert!(
            e.contains("points[0].encoders = \"gpt\": unknown value"),
            "{e}"
        );
        let e = err(&(STUDY.to_string() + "\n[[points]]\nencoders = \"trmpp\"\n"));
        assert!(e.contains("points[0]: no value for axis `prompts`"), "{e}");
        let e = err(&STUDY.replace("align.toml", "missing.toml"));
        assert!(
            e.contains("base.align:") && e.contains("missing.toml"),
            "{e}"
        );
        let e = err(&STUDY.replace("pretrain = ['model", "pretrian = ['model"));
        assert!(e.contains("pretrian"), "{e}");
    }

    #[test]
    fn slurm_options_are_checked_and_ordered_per_stage() {
        let with = |table: &str| STUDY.to_string() + "\n[slurm]\n" + table;
        let s = load(&with(
            "sbatch = [\"--time=1:00:00\"]\npretrain = [\"--nodes=2\"]\n",
        ))
        .unwrap();
        assert_eq!(
            s.file.slurm.for_stage("pretrain"),
            ["--time=1:00:00", "--nodes=2"]
        );
        assert_eq!(s.file.slurm.for_stage("eval"), ["--time=1:00:00"]);
        // Recorded with the study, so the jobs' `uqa study stage` reads the same file back.
        let again: StudyFile = toml::from_str(&s.to_recorded_toml()).unwrap();
        assert_eq!(again.slurm, s.file.slurm);
        let err = |text: &str| load(text).unwrap_err().to_string();
        let e = err(&with("align = [\"--array=0-3\"]\n"));
        assert!(
            e.contains("slurm.align: `--array=0-3` is set by `uqa study run --slurm`"),
            "{e}"
        );
        let e = err(&with("eval = [\"nodes=2\"]\n"));
        assert!(
            e.contains("slurm.eval: `nodes=2` is not an sbatch option"),
            "{e}"
        );
        let e = err(&with("gpus = [\"--gpus=8\"]\n"));
        assert!(e.contains("gpus"), "{e}");
    }
}
