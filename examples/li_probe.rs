//! Does the soft prompt carry LI's answer? A linear probe from what the adapter reads to the
//! ranked top 3 of each LI question, trained on the training file's LI questions and scored on
//! held-out ones (docs/RESULTS.md, "Where it falls short: LI").
//!
//! Features (what a linear readout, like the LLM's output head after one linear adapter, could
//! use): the encoder's mean state over the history (the reference adapter's input: its
//! `Linear` then mean equals mean then `Linear`), the mean plus the last 4 states (the
//! quickstart's adapter), and, as the probe's ceiling, the exact per-value click counts.
//! The probe scores every value of the question's attribute (`scores = x W + b`) and is fit by
//! the Plackett-Luce likelihood of the gold order; it answers with the 3 best-scored distinct
//! values. Weight decay is chosen on a fifth of the training rows.
//!
//! ```sh
//! cargo run --release --example li_probe -- configs/quickstart/align_trmpp.toml \
//!     runs/li/qa/align_data_train.arrow runs/li/qa/align_data_valid.arrow [--set KEY=VALUE ...]
//! ```

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use uqa_data::batch::collate;
use uqa_data::catalog::ItemCatalog;
use uqa_data::dataset::Dataset;
use uqa_data::reader::SequenceFile;
use uqa_models::aligned::AlignModel;
use uqa_trainer::AlignJob;
use uqabench::baseline::questions::read_questions;
use uqabench::qa::Task;
use uqabench::qa::rules::ranked;
use uqabench::qa::templates::{Attr, Question};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(format!($($t)*).into()) };
}

const RECENT: usize = 4;
const LIST: usize = 3;
const STEPS: usize = 400;

/// The LI questions of one file: features per question and the gold order of value keys.
struct Probed {
    attr: Vec<Attr>,
    mean: Vec<Vec<f32>>,
    mean_recent: Vec<Vec<f32>>,
    mean_input: Vec<Vec<f32>>,
    counts: Vec<Vec<f32>>,
    gold: Vec<[u32; LIST]>,
    /// Questions whose top 3 (order or membership) is decided by the recency tie-break.
    ties: usize,
}

fn classes(catalog: &ItemCatalog, attr: Attr) -> usize {
    match attr {
        Attr::Category => catalog.cates.len(),
        Attr::Brand => catalog.brands.len(),
        Attr::Shop => catalog.shops.len(),
        Attr::Title => catalog.titles.len(),
    }
}

fn probe_file(
    model: &AlignModel,
    catalog: &ItemCatalog,
    path: &Path,
    max_len: usize,
) -> Result<Probed> {
    let qa = read_questions(path, true)?;
    let file = SequenceFile::open(path)?;
    let encoder = &model
        .model
        .user
        .as_ref()
        .ok_or("the job has no user encoder")?
        .encoder;
    let mut out = Probed {
        attr: vec![],
        mean: vec![],
        mean_recent: vec![],
        mean_input: vec![],
        counts: vec![],
        gold: vec![],
        ties: 0,
    };
    let li: Vec<_> = qa
        .rows
        .iter()
        .filter(|r| r.task == Some(Task::LI))
        .collect();
    for chunk in li.chunks(32) {
        let rows: Vec<usize> = chunk.iter().map(|r| r.row).collect();
        let batch = collate(&file, &rows, max_len);
        let states = encoder.encode(&batch, false)?.to_dtype(DType::F32)?;
        let states: Vec<Vec<Vec<f32>>> = states.to_vec3()?;
        let inputs: Vec<Vec<Vec<f32>>> = encoder.embed(&batch)?.to_dtype(DType::F32)?.to_vec3()?;
        for (b, r) in chunk.iter().enumerate() {
            let Some((Question::Top3 { attr }, _)) = Question::parse(&r.question) else {
                bail!(
                    "{} row {}: not an LI question: {}",
                    path.display(),
                    r.row,
                    r.question
                );
            };
            let len = batch.lengths[b] as usize;
            let valid = &states[b][..len];
            let d = valid[0].len();
            let mean = mean_of(valid);
            let mean_input = mean_of(&inputs[b][..len]);
            let mut mean_recent = mean.clone();
            for k in (0..RECENT).rev() {
                match len.checked_sub(k + 1) {
                    Some(p) => mean_recent.extend(&valid[p]),
                    None => mean_recent.extend(std::iter::repeat_n(0.0, d)),
                }
            }
            let context = &r.context[r.context.len().saturating_sub(max_len)..];
            let top = ranked(catalog, context, attr);
            if top.len() < LIST {
                bail!(
                    "{} row {}: fewer than 3 values in the context",
                    path.display(),
                    r.row
                );
            }
            let mut counts = vec![0f32; classes(catalog, attr)];
            for &(key, n) in &top {
                counts[key as usize] = n as f32 / context.len() as f32;
            }
            out.attr.push(attr);
            out.mean.push(mean);
            out.mean_recent.push(mean_recent);
            out.mean_input.push(mean_input);
            out.counts.push(counts);
            out.gold.push([top[0].0, top[1].0, top[2].0]);
            let tied = |a: usize| top.get(a + 1).is_some_and(|next| next.1 == top[a].1);
            out.ties += (tied(0) || tied(1) || tied(2)) as usize;
        }
    }
    Ok(out)
}

/// The element-wise mean of `rows`.
fn mean_of(rows: &[Vec<f32>]) -> Vec<f32> {
    let mut mean = vec![0f32; rows[0].len()];
    for row in rows {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, x)| *m += x / rows.len() as f32);
    }
    mean
}

/// A linear scorer over the values of one attribute.
struct Probe {
    w: Tensor,
    b: Tensor,
    mu: Tensor,
    sd: Tensor,
}

fn tensor(x: &[&Vec<f32>], dev: &Device) -> Result<Tensor> {
    let d = x[0].len();
    let flat: Vec<f32> = x.iter().flat_map(|v| v.iter().copied()).collect();
    Ok(Tensor::from_vec(flat, (x.len(), d), dev)?)
}

/// Plackett-Luce fit of the gold orders, with weight decay `wd`.
fn fit(x: &[&Vec<f32>], gold: &[[u32; LIST]], classes: usize, wd: f64) -> Result<Probe> {
    let dev = Device::Cpu;
    let x = tensor(x, &dev)?;
    let mu = x.mean_keepdim(0)?;
    let sd = (x.broadcast_sub(&mu)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
    let x = x.broadcast_sub(&mu)?.broadcast_div(&sd)?;
    let (n, d) = x.dims2()?;
    let w = Var::zeros((d, classes), DType::F32, &dev)?;
    let b = Var::zeros(classes, DType::F32, &dev)?;
    // Per rank: a mask that removes the values ranked above it, and the gold value.
    let mut masks = Vec::new();
    let mut labels = Vec::new();
    for r in 0..LIST {
        let mut m = vec![0f32; n * classes];
        for (i, g) in gold.iter().enumerate() {
            for &above in &g[..r] {
                m[i * classes + above as usize] = -1e9;
            }
        }
        masks.push(Tensor::from_vec(m, (n, classes), &dev)?);
        labels.push(Tensor::new(
            gold.iter().map(|g| g[r]).collect::<Vec<_>>(),
            &dev,
        )?);
    }
    let mut opt = AdamW::new(
        vec![w.clone(), b.clone()],
        ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    for _ in 0..STEPS {
        let scores = x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        let mut loss = (w.as_tensor().sqr()?.sum_all()? * wd)?;
        for r in 0..LIST {
            let lp = candle_nn::ops::log_softmax(&(&scores + &masks[r])?, D::Minus1)?;
            let picked = lp.gather(&labels[r].unsqueeze(1)?, 1)?;
            loss = (loss - (picked.sum_all()? / n as f64)?)?;
        }
        opt.backward_step(&loss)?;
    }
    Ok(Probe {
        w: w.as_tensor().clone(),
        b: b.as_tensor().clone(),
        mu,
        sd,
    })
}

/// Correct values per list position and whole lists right, of the probe's top 3.
fn score(p: &Probe, x: &[&Vec<f32>], gold: &[[u32; LIST]]) -> Result<([usize; LIST], usize)> {
    let x = tensor(x, &Device::Cpu)?
        .broadcast_sub(&p.mu)?
        .broadcast_div(&p.sd)?;
    let scores: Vec<Vec<f32>> = x.matmul(&p.w)?.broadcast_add(&p.b)?.to_vec2()?;
    let mut at = [0; LIST];
    let mut whole = 0;
    for (s, g) in scores.iter().zip(gold) {
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let right: Vec<bool> = (0..LIST).map(|r| order[r] as u32 == g[r]).collect();
        right
            .iter()
            .enumerate()
            .for_each(|(r, &ok)| at[r] += ok as usize);
        whole += right.iter().all(|&ok| ok) as usize;
    }
    Ok((at, whole))
}

type Features = fn(&Probed) -> &Vec<Vec<f32>>;

/// The features and gold orders of rows `idx` of `p`.
fn rows<'a>(p: &'a Probed, get: Features, idx: &[usize]) -> (Vec<&'a Vec<f32>>, Vec<[u32; LIST]>) {
    let f = get(p);
    (
        idx.iter().map(|&i| &f[i]).collect(),
        idx.iter().map(|&i| p.gold[i]).collect(),
    )
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!(
            "usage: li_probe ALIGN_CONFIG TRAIN_QUESTIONS HELD_OUT_QUESTIONS [--set KEY=VALUE ...]"
        );
    }
    let sets: Vec<String> = args[3..]
        .chunks(2)
        .map(|c| match c {
            [flag, kv] if flag == "--set" => Ok(kv.clone()),
            _ => Err(format!("expected `--set KEY=VALUE`, got {c:?}").into()),
        })
        .collect::<Result<_>>()?;
    let job = AlignJob::load(Path::new(&args[0]), &sets)?;
    let ds = Dataset::open(&job.data.dataset)?;
    let catalog = ds.catalog()?;
    let model = uqa_models::aligned::build(&job.spec(), job.train.seed, &ds, &Device::Cpu)?;
    let (train, test) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let tr = probe_file(&model, &catalog, &train, job.data.max_len)?;
    let te = probe_file(&model, &catalog, &test, job.data.max_len)?;
    println!(
        "LI probe: {} training and {} held-out questions ({}; in {} of them equal counts make \
         the top 3 depend on the recency tie-break), encoder {}{}",
        tr.gold.len(),
        te.gold.len(),
        test.display(),
        te.ties,
        match &job.prompt {
            uqa_models::aligned::PromptConfig::Soft { encoder, .. } =>
                encoder.display().to_string(),
            _ => "-".into(),
        },
        if sets.is_empty() {
            String::new()
        } else {
            format!(" ({})", sets.join(", "))
        }
    );
    let features: [(&str, Features); 4] = [
        ("mean state", |p| &p.mean),
        ("mean + last 4 states", |p| &p.mean_recent),
        ("mean input embedding", |p| &p.mean_input),
        ("exact click counts (ceiling)", |p| &p.counts),
    ];
    println!("| features | 1st right | 2nd right | 3rd right | whole list | weight decay |");
    println!("|---|---|---|---|---|---|");
    for (name, get) in features {
        let (mut at, mut whole) = ([0; LIST], 0);
        let mut chosen = Vec::new();
        for attr in Attr::ENTITIES {
            let pick = |p: &Probed| -> Vec<usize> {
                (0..p.attr.len()).filter(|&i| p.attr[i] == attr).collect()
            };
            let (tri, tei) = (pick(&tr), pick(&te));
            if tri.is_empty() || tei.is_empty() {
                continue;
            }
            let c = classes(&catalog, attr);
            // Weight decay by whole lists, then 1st-position hits, on a fifth of the training rows.
            let cut = tri.len() * 4 / 5;
            let (fx, fy) = rows(&tr, get, &tri[..cut]);
            let (vx, vy) = rows(&tr, get, &tri[cut..]);
            let mut best = (0, 0, 0.0);
            for wd in [1e-4, 1e-3, 1e-2, 1e-1] {
                let (a, w) = score(&fit(&fx, &fy, c, wd)?, &vx, &vy)?;
                if (w, a[0]) > (best.0, best.1) || best.2 == 0.0 {
                    best = (w, a[0], wd);
                }
            }
            let (x, y) = rows(&tr, get, &tri);
            let (tx, ty) = rows(&te, get, &tei);
            let (a, w) = score(&fit(&x, &y, c, best.2)?, &tx, &ty)?;
            (0..LIST).for_each(|r| at[r] += a[r]);
            whole += w;
            chosen.push(format!("{attr:?} {}", best.2));
        }
        let n = te.gold.len();
        println!(
            "| {name} | {}/{n} | {}/{n} | {}/{n} | {whole}/{n} | {} |",
            at[0],
            at[1],
            at[2],
            chosen.join(", ")
        );
    }
    Ok(())
}
