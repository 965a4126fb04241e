//! Synthetic users. Each has a long-term mixture of interest categories that drifts toward a
//! new mixture (often with a newly emerging category) over the user's timeline, a brand
//! trajectory per category (the favoured brand changes in phases: "A -> B -> C"), and browses in
//! sessions focused on one category, with repeat clicks. This is the structure the questions
//! probe: counts and recent items (DF, MF), next item and attribute (IP, AP), long-term and
//! recent interests (LI, SI), and interest trajectories (IT).

use crate::preprocess::{RawEvent, RawUser};
use crate::rng::Rng;

use super::SynthConfig;
use super::world::World;

/// One interest: a category, its weight at the start and end of the timeline, and the brands
/// the user favours there in successive phases.
struct Interest {
    cate: u32,
    start: f64,
    end: f64,
    brands: Vec<u32>,
}

fn dirichlet(rng: &mut Rng, n: usize, alpha: f64) -> Vec<f64> {
    let g: Vec<f64> = (0..n).map(|_| rng.gamma(alpha)).collect();
    let total: f64 = g.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    g.into_iter().map(|x| x / total).collect()
}

fn interests(cfg: &SynthConfig, world: &World, rng: &mut Rng) -> Vec<Interest> {
    let k = rng.range(1, cfg.interests.max(1) as u64) as usize;
    let mut cates: Vec<u32> = Vec::with_capacity(k + 1);
    while cates.len() < k + 1 {
        let c = world.cate_popularity.sample(rng) as u32;
        if !cates.contains(&c) || cates.len() >= world.cate_brands.len() {
            cates.push(c);
        }
    }
    let start = dirichlet(rng, k, 1.0);
    // The end mixture re-draws the weights; with probability `drift` a new category (the extra
    // one drawn above) emerges and takes a large share of the recent clicks.
    let mut end = dirichlet(rng, k + 1, 1.0);
    if rng.chance(cfg.drift) {
        end[k] += 1.5;
    } else {
        end[k] = 0.0;
    }
    let total: f64 = end.iter().sum();
    cates
        .into_iter()
        .enumerate()
        .map(|(i, cate)| {
            let phases = rng.range(1, 3) as usize;
            let mut brands = Vec::with_capacity(phases);
            for _ in 0..phases {
                let b = world.sample_brand(cate, rng);
                if brands.last() != Some(&b) {
                    brands.push(b);
                }
            }
            Interest {
                cate,
                start: start.get(i).copied().unwrap_or(0.0),
                end: end[i] / total,
                brands,
            }
        })
        .collect()
}

fn sequence_length(cfg: &SynthConfig, rng: &mut Rng) -> usize {
    let mu = cfg.mean_len.ln() - cfg.len_sigma * cfg.len_sigma / 2.0;
    let len = (mu + cfg.len_sigma * rng.normal()).exp().round() as usize;
    len.clamp(cfg.min_len, cfg.max_len)
}

/// Generate user `index` (its own random stream: users can be generated in any order or in
/// parallel with identical results).
pub fn generate_user(cfg: &SynthConfig, world: &World, seed: u64, index: usize) -> RawUser {
    let mut rng = Rng::derive(seed, 1 + index as u64);
    let n = sequence_length(cfg, &mut rng);
    let interests = interests(cfg, world, &mut rng);
    let mut events: Vec<RawEvent> = Vec::with_capacity(n);
    let mut t = cfg.start_time + rng.below(cfg.span_seconds.max(1) as u64 / 4) as i64;
    let mut weights = vec![0.0; interests.len()];
    while events.len() < n {
        let progress = events.len() as f64 / n as f64;
        for (w, i) in weights.iter_mut().zip(&interests) {
            *w = (1.0 - progress) * i.start + progress * i.end;
        }
        let interest = &interests[rng.weighted(&weights)];
        let phase =
            ((progress * interest.brands.len() as f64) as usize).min(interest.brands.len() - 1);
        let favoured = interest.brands[phase];
        let session = 1 + rng.exponential(cfg.session_len - 1.0).round() as usize;
        let session_start = events.len();
        t += rng.exponential(cfg.session_gap_seconds).round() as i64 + 1;
        for _ in 0..session.min(n - events.len()) {
            let item = if events.len() > session_start && rng.chance(cfg.repeat_prob) {
                // Re-click something seen in this session.
                events[session_start + rng.below((events.len() - session_start) as u64) as usize]
                    .item
            } else {
                let brand = if rng.chance(cfg.brand_loyalty) {
                    favoured
                } else {
                    world.sample_brand(interest.cate, &mut rng)
                };
                world.sample_item(brand, &mut rng)
            };
            t += 1 + rng.exponential(cfg.click_gap_seconds).round() as i64;
            events.push(RawEvent { item, timestamp: t });
        }
    }
    RawUser {
        source_id: index as i64,
        events,
    }
}
