//! The synthetic catalog: a category -> brand -> shop -> item hierarchy with Zipf popularity at
//! every level, one seller per shop, and the samplers users draw clicks from.

use crate::preprocess::{RawCatalog, RawItem};
use crate::rng::{Discrete, Rng};

use super::SynthConfig;
use super::names;

/// The catalog plus the popularity structure behavior is drawn from.
pub struct World {
    pub catalog: RawCatalog,
    /// Category popularity (category index = popularity rank).
    pub cate_popularity: Discrete,
    /// Brands of each category.
    pub cate_brands: Vec<Vec<u32>>,
    /// Popularity of the brands of each category (parallel to `cate_brands`).
    pub cate_brand_popularity: Vec<Discrete>,
    /// Items of each brand.
    pub brand_items: Vec<Vec<u32>>,
    /// Popularity of the items of each brand (Zipf, parallel to `brand_items`).
    pub brand_item_popularity: Vec<Discrete>,
    pub brand_cate: Vec<u32>,
}

/// Assign `n` children to `parents` parents: the first `parents` children one each (so no
/// parent is empty), the rest drawn by `weights`.
fn assign(n: usize, parents: usize, weights: &Discrete, rng: &mut Rng) -> Vec<u32> {
    (0..n)
        .map(|i| {
            if i < parents {
                i as u32
            } else {
                weights.sample(rng) as u32
            }
        })
        .collect()
}

impl World {
    pub fn generate(cfg: &SynthConfig, seed: u64) -> Self {
        let mut rng = Rng::derive(seed, 0x5EED_CA7A);
        let cate_popularity = Discrete::zipf(cfg.cates, cfg.cate_zipf);
        // Popular categories hold more brands and items, but less than proportionally: the
        // square root keeps the long tail of categories populated.
        let brand_cate = assign(
            cfg.brands,
            cfg.cates,
            &Discrete::zipf(cfg.cates, cfg.cate_zipf * 0.5),
            &mut rng,
        );
        let brand_weights = Discrete::zipf(cfg.brands, cfg.brand_zipf * 0.5);
        let shop_brand = assign(cfg.shops, cfg.brands, &brand_weights, &mut rng);
        let item_shop = assign(
            cfg.items,
            cfg.shops,
            &Discrete::zipf(cfg.shops, cfg.brand_zipf * 0.5),
            &mut rng,
        );

        let cate_names = names::category_names(cfg.cates, &mut rng);
        let brand_names = names::brand_names(cfg.brands, &mut rng);
        let mut shops_of_brand = vec![0usize; cfg.brands];
        let shop_names: Vec<String> = shop_brand
            .iter()
            .map(|&b| {
                let k = shops_of_brand[b as usize];
                shops_of_brand[b as usize] += 1;
                names::shop_name(&brand_names[b as usize], k)
            })
            .collect();
        let seller_names: Vec<String> = (0..cfg.shops)
            .map(|_| names::seller_name(&mut rng))
            .collect();

        let mut brand_items = vec![Vec::new(); cfg.brands];
        let items: Vec<RawItem> = item_shop
            .iter()
            .enumerate()
            .map(|(i, &shop)| {
                let brand = shop_brand[shop as usize];
                let cate = brand_cate[brand as usize];
                brand_items[brand as usize].push(i as u32);
                RawItem {
                    cate,
                    brand,
                    shop,
                    seller: shop,
                    title: names::title(
                        &brand_names[brand as usize],
                        &cate_names[cate as usize],
                        &mut rng,
                    ),
                }
            })
            .collect();
        // Within a brand, popularity follows a Zipf law over a random order of its items.
        for list in brand_items.iter_mut() {
            rng.shuffle(list);
        }
        let brand_item_popularity = brand_items
            .iter()
            .map(|l| Discrete::zipf(l.len(), cfg.item_zipf))
            .collect();

        let mut cate_brands = vec![Vec::new(); cfg.cates];
        for (b, &c) in brand_cate.iter().enumerate() {
            cate_brands[c as usize].push(b as u32);
        }
        let cate_brand_popularity = cate_brands
            .iter()
            .map(|l| Discrete::zipf(l.len(), cfg.brand_zipf))
            .collect();

        World {
            catalog: RawCatalog {
                items,
                cate_names,
                brand_names,
                shop_names,
                seller_names,
            },
            cate_popularity,
            cate_brands,
            cate_brand_popularity,
            brand_items,
            brand_item_popularity,
            brand_cate,
        }
    }

    /// A brand of category `cate`, by popularity.
    pub fn sample_brand(&self, cate: u32, rng: &mut Rng) -> u32 {
        let c = cate as usize;
        self.cate_brands[c][self.cate_brand_popularity[c].sample(rng)]
    }

    /// An item of `brand`, by popularity.
    pub fn sample_item(&self, brand: u32, rng: &mut Rng) -> u32 {
        let b = brand as usize;
        self.brand_items[b][self.brand_item_popularity[b].sample(rng)]
    }
}
