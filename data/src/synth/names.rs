//! Words for the synthetic catalog: category names from product nouns and qualifiers, invented
//! brand and person names from syllables, shop names from brands, titles from category and brand
//! words. Everything is a pure function of the generator's random stream.

use std::collections::HashSet;

use crate::rng::Rng;

const NOUNS: [&str; 122] = [
    "phone",
    "laptop",
    "tablet",
    "headphones",
    "speaker",
    "camera",
    "watch",
    "charger",
    "cable",
    "keyboard",
    "mouse",
    "monitor",
    "router",
    "printer",
    "drone",
    "console",
    "dress",
    "skirt",
    "shirt",
    "blouse",
    "jeans",
    "trousers",
    "shorts",
    "jacket",
    "coat",
    "sweater",
    "hoodie",
    "vest",
    "socks",
    "scarf",
    "gloves",
    "hat",
    "cap",
    "belt",
    "sneakers",
    "boots",
    "sandals",
    "slippers",
    "heels",
    "backpack",
    "handbag",
    "wallet",
    "suitcase",
    "sunglasses",
    "necklace",
    "ring",
    "earrings",
    "bracelet",
    "lipstick",
    "perfume",
    "shampoo",
    "conditioner",
    "lotion",
    "serum",
    "sunscreen",
    "toothpaste",
    "toothbrush",
    "razor",
    "towel",
    "pillow",
    "blanket",
    "mattress",
    "curtain",
    "rug",
    "lamp",
    "chair",
    "desk",
    "sofa",
    "shelf",
    "mirror",
    "clock",
    "vase",
    "mug",
    "teapot",
    "kettle",
    "blender",
    "toaster",
    "oven",
    "cookware",
    "knife",
    "cutting board",
    "lunchbox",
    "bottle",
    "tea",
    "coffee",
    "snacks",
    "chocolate",
    "noodles",
    "rice",
    "honey",
    "nuts",
    "dried fruit",
    "milk powder",
    "diapers",
    "stroller",
    "toy car",
    "doll",
    "puzzle",
    "building blocks",
    "crayons",
    "notebook",
    "pen",
    "backpack cover",
    "yoga mat",
    "dumbbell",
    "bicycle",
    "helmet",
    "tent",
    "fishing rod",
    "basketball",
    "football",
    "racket",
    "swimsuit",
    "goggles",
    "pet food",
    "cat litter",
    "dog leash",
    "aquarium",
    "plant pot",
    "seeds",
    "car mat",
    "phone case",
];

const QUALIFIERS: [&str; 90] = [
    "women's",
    "men's",
    "kids'",
    "baby",
    "unisex",
    "sports",
    "outdoor",
    "travel",
    "office",
    "home",
    "kitchen",
    "bathroom",
    "garden",
    "vintage",
    "classic",
    "modern",
    "minimalist",
    "luxury",
    "budget",
    "professional",
    "portable",
    "wireless",
    "smart",
    "mini",
    "large",
    "compact",
    "foldable",
    "waterproof",
    "organic",
    "handmade",
    "imported",
    "summer",
    "winter",
    "spring",
    "autumn",
    "festival",
    "wedding",
    "party",
    "casual",
    "formal",
    "slim",
    "loose",
    "warm",
    "cool",
    "light",
    "heavy duty",
    "eco",
    "retro",
    "gaming",
    "student",
    "senior",
    "premium",
    "daily",
    "weekend",
    "night",
    "morning",
    "beach",
    "mountain",
    "city",
    "country",
    "silk",
    "cotton",
    "leather",
    "wooden",
    "steel",
    "ceramic",
    "glass",
    "bamboo",
    "wool",
    "linen",
    "denim",
    "velvet",
    "plush",
    "knitted",
    "printed",
    "striped",
    "floral",
    "plain",
    "sparkly",
    "matte",
    "glossy",
    "scented",
    "unscented",
    "spicy",
    "sweet",
    "salty",
    "fresh",
    "frozen",
    "instant",
    "gift",
];

const SYLLABLES: [&str; 64] = [
    "ka", "vo", "ra", "li", "mi", "no", "su", "te", "lo", "zen", "qi", "xu", "bo", "da", "fe",
    "gu", "ha", "ji", "ko", "lu", "ma", "ne", "pi", "ro", "sa", "ti", "va", "wo", "ya", "ze", "an",
    "el", "or", "un", "is", "ar", "en", "ix", "on", "ul", "bel", "cor", "dun", "fin", "gal", "hol",
    "jun", "kel", "lin", "mor", "nal", "pol", "quin", "rin", "sol", "tor", "vel", "wen", "yor",
    "zar", "mei", "tao", "xin", "lan",
];

const ADJECTIVES: [&str; 40] = [
    "breathable",
    "durable",
    "lightweight",
    "soft",
    "elegant",
    "stylish",
    "comfortable",
    "cozy",
    "sturdy",
    "adjustable",
    "quick-dry",
    "anti-slip",
    "fast",
    "quiet",
    "bright",
    "thin",
    "thick",
    "long",
    "short",
    "round",
    "square",
    "new",
    "hot-selling",
    "limited",
    "upgraded",
    "deluxe",
    "basic",
    "extra",
    "ultra",
    "pure",
    "natural",
    "high-end",
    "simple",
    "cute",
    "bold",
    "chic",
    "sleek",
    "rugged",
    "refined",
    "trendy",
];

const COLORS: [&str; 20] = [
    "black", "white", "red", "blue", "green", "pink", "grey", "beige", "navy", "brown", "purple",
    "yellow", "orange", "gold", "silver", "khaki", "ivory", "teal", "coral", "olive",
];

const SHOP_SUFFIXES: [&str; 12] = [
    "Official Store",
    "Flagship Store",
    "Outlet",
    "Select",
    "Boutique",
    "Direct",
    "Mall",
    "Depot",
    "House",
    "Studio",
    "Market",
    "Corner",
];

const COMPANY_SUFFIXES: [&str; 6] = ["Trading", "Co.", "Ltd.", "Goods", "Supply", "Commerce"];

/// `n` distinct category names, most generic first.
pub fn category_names(n: usize, rng: &mut Rng) -> Vec<String> {
    let mut names: Vec<String> = NOUNS.iter().map(|s| s.to_string()).collect();
    let mut combos: Vec<String> = QUALIFIERS
        .iter()
        .flat_map(|q| NOUNS.iter().map(move |noun| format!("{q} {noun}")))
        .collect();
    rng.shuffle(&mut combos);
    names.extend(combos);
    let mut k = 2;
    while names.len() < n {
        // Past 10,920 plain combinations (never reached by the presets), number the series.
        let base = names[names.len() % (NOUNS.len() * QUALIFIERS.len())].clone();
        names.push(format!("{base} series {k}"));
        k += 1;
    }
    names.truncate(n);
    names
}

fn invented_word(rng: &mut Rng, min_syl: u64, max_syl: u64) -> String {
    let n = rng.range(min_syl, max_syl);
    let mut w: String = (0..n)
        .map(|_| SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize])
        .collect();
    if let Some(first) = w.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    w
}

/// `n` distinct invented brand names.
pub fn brand_names(n: usize, rng: &mut Rng) -> Vec<String> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let w = invented_word(rng, 2, 4);
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// A shop name for the `k`-th shop of `brand`.
pub fn shop_name(brand: &str, k: usize) -> String {
    let suffix = SHOP_SUFFIXES[k % SHOP_SUFFIXES.len()];
    match k / SHOP_SUFFIXES.len() {
        0 => format!("{brand} {suffix}"),
        round => format!("{brand} {suffix} {}", round + 1),
    }
}

/// An invented company name for a seller.
pub fn seller_name(rng: &mut Rng) -> String {
    let suffix = COMPANY_SUFFIXES[rng.below(COMPANY_SUFFIXES.len() as u64) as usize];
    format!(
        "{} {} {suffix}",
        invented_word(rng, 1, 2),
        invented_word(rng, 2, 3)
    )
}

/// A product title: brand and category words plus descriptive words and a model code.
pub fn title(brand: &str, category: &str, rng: &mut Rng) -> String {
    let adj = ADJECTIVES[rng.below(ADJECTIVES.len() as u64) as usize];
    let color = COLORS[rng.below(COLORS.len() as u64) as usize];
    let letter = (b'A' + rng.below(26) as u8) as char;
    let number = rng.range(1, 99);
    format!("{brand} {category} {adj} {color} {letter}{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_deterministic() {
        let a = brand_names(5000, &mut Rng::new(1));
        assert_eq!(a, brand_names(5000, &mut Rng::new(1)));
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 5000);
        let c = category_names(9330, &mut Rng::new(2));
        assert_eq!(c.iter().collect::<HashSet<_>>().len(), 9330);
        assert_eq!(c[0], "phone");
    }

    #[test]
    fn title_contains_brand_and_category() {
        let t = title("Kavo", "running shoes", &mut Rng::new(3));
        assert!(t.starts_with("Kavo running shoes "), "{t}");
    }
}
