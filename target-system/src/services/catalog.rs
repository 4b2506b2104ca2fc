//! The product catalog: deterministic from a seed, so every content replica (and every
//! run) serves the same products, and tests can name a product by its id.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Product {
    pub id: u32,
    pub name: String,
    pub category: &'static str,
    pub price_cents: u32,
    pub stock: u32,
    pub rating: f64,
    pub description: String,
}

const ADJECTIVES: &[&str] = &[
    "Sturdy", "Quiet", "Rapid", "Compact", "Classic", "Bright", "Gentle", "Rugged", "Smart",
    "Vintage", "Modern", "Tiny", "Grand", "Silver", "Amber", "Coastal",
];
const NOUNS: &[&str] = &[
    "Kettle",
    "Lamp",
    "Backpack",
    "Notebook",
    "Headphones",
    "Chair",
    "Mug",
    "Jacket",
    "Clock",
    "Speaker",
    "Blanket",
    "Bottle",
    "Umbrella",
    "Keyboard",
    "Planter",
    "Skillet",
];
const CATEGORIES: &[&str] = &["home", "outdoor", "office", "audio", "kitchen", "apparel"];

pub struct Catalog {
    products: Vec<Product>,
}

impl Catalog {
    /// Products 1..=count, the same for the same seed.
    pub fn generate(seed: u64, count: u32) -> Self {
        let products = (1..=count)
            .map(|id| {
                let mut rng = fastrand::Rng::with_seed(
                    seed ^ (u64::from(id)).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let adjective = ADJECTIVES[rng.usize(..ADJECTIVES.len())];
                let noun = NOUNS[rng.usize(..NOUNS.len())];
                let category = CATEGORIES[rng.usize(..CATEGORIES.len())];
                Product {
                    id,
                    name: format!("{adjective} {noun} {id}"),
                    category,
                    price_cents: rng.u32(199..=49_999),
                    stock: rng.u32(0..=500),
                    rating: f64::from(rng.u8(10..=50)) / 10.0,
                    description: format!(
                        "{} {} {} for everyday use, from the {category} range.",
                        if adjective.starts_with(['A', 'E', 'I', 'O', 'U']) {
                            "An"
                        } else {
                            "A"
                        },
                        adjective.to_lowercase(),
                        noun.to_lowercase()
                    ),
                }
            })
            .collect();
        Self { products }
    }

    pub fn len(&self) -> u32 {
        self.products.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    pub fn get(&self, id: u32) -> Option<&Product> {
        id.checked_sub(1)
            .and_then(|i| self.products.get(i as usize))
    }

    /// Page `page` (from 1) of `per_page` products.
    pub fn page(&self, page: u32, per_page: u32) -> &[Product] {
        let start = (page.saturating_sub(1) as usize).saturating_mul(per_page as usize);
        let end = start
            .saturating_add(per_page as usize)
            .min(self.products.len());
        self.products.get(start..end).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_catalog() {
        let a = Catalog::generate(42, 1000);
        let b = Catalog::generate(42, 1000);
        assert_eq!(a.get(500), b.get(500));
        assert_ne!(a.get(500), Catalog::generate(43, 1000).get(500));
        assert_eq!(a.get(1000).unwrap().id, 1000);
        assert!(a.get(0).is_none() && a.get(1001).is_none());
    }

    #[test]
    fn pages_cover_the_catalog_without_overlap() {
        let c = Catalog::generate(1, 45);
        assert_eq!(c.page(1, 20).len(), 20);
        assert_eq!(c.page(3, 20).len(), 5);
        assert_eq!(c.page(3, 20)[0].id, 41);
        assert!(c.page(4, 20).is_empty());
        assert!(c.page(u32::MAX, u32::MAX).is_empty());
    }
}
